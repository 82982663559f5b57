"""Training on CPU (exit heads, drafts, EAGLE heads, the UNet, scorer, step predictor), resumable."""
