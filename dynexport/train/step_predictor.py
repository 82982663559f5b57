"""Train StepSaver's step predictor (`models/step_predictor.py`): labels from measured convergence,
full-batch training, and the margin calibrated on validation prompts.

Each label is the smallest candidate count at which one (prompt, seed) generation has converged
(scripts/make_step_labels.py). The predictor is trained with cross-entropy on all (prompt, seed)
pairs — so for a prompt it learns how the needed count varies with the seed. The runtime picks the
smallest count whose predicted cumulative probability reaches the safety `margin`;
`calibrate_margin` chooses that margin on validation prompts.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.step_predictor import PredictorCfg, StepPredictor
from ..runtime.policies import choose_steps


def label_of(conv: np.ndarray, counts: list[int], full: int) -> int:
    """conv [C] bools (converged at each count) → the smallest count from which all larger counts
    converged (else full): a count that converges by luck between two that do not is no safe label."""
    ok = np.flip(np.cumprod(np.flip(conv)).astype(bool))  # ok[i]: counts[i:] all converged
    return int(counts[int(np.argmax(ok))]) if ok.any() else full


def converged(record: dict, threshold: float, agree: str) -> np.ndarray:
    """[C] bools: SSIM to the full-step image ≥ threshold and (unless agree is "none") the scorer agrees
    on both images' caption or caption family."""
    ok = np.array(record["ssim"]) >= threshold
    return ok if agree == "none" else ok & np.array(record["agree_family" if agree == "family" else "agree"])


def train_predictor(emb: np.ndarray, labels: np.ndarray, classes: int, cfg: PredictorCfg) -> StepPredictor:
    """emb [N, D], labels [N] class indices; full-batch AdamW (the label sets are small)."""
    torch.manual_seed(cfg.seed)
    model = StepPredictor(classes, emb.shape[1], cfg.hidden, cfg.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x, y = torch.from_numpy(emb).float(), torch.from_numpy(labels).long()
    for _ in range(cfg.epochs):
        loss = nn.functional.nll_loss(model(x).clamp_min(1e-8).log(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def calibrate_margin(probs: np.ndarray, ssim_at: np.ndarray, counts: list[int], target_ssim: float) -> dict:
    """Smallest margin whose chosen counts keep the validation images' mean SSIM to their full-step
    images ≥ target_ssim, next to the one global count that does the same (the baseline to beat).
    probs [N, C] predictor output; ssim_at [N, C] measured SSIM of each (prompt, seed) at each count."""
    rows = []
    for m in np.round(np.arange(0.05, 1.0, 0.01), 2):
        idx = np.searchsorted(counts, choose_steps(probs, counts, float(m)))  # [N] class index
        rows.append({"margin": float(m), "mean_ssim": float(ssim_at[np.arange(len(idx)), idx].mean()),
                     "mean_steps": float(np.asarray(counts)[idx].mean())})
    ok = [r for r in rows if r["mean_ssim"] >= target_ssim]
    const = next((c for c, v in zip(counts, ssim_at.mean(0)) if v >= target_ssim), counts[-1])
    return {"target_mean_ssim": target_ssim, "chosen": ok[0] if ok else rows[-1], "curve": rows[::5],
            "constant_same_target": {"steps": int(const), "mean_ssim": float(ssim_at[:, counts.index(const)].mean())}}
