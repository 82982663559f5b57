"""Compare exit-head training variants on a stage-1 checkpoint's frozen encoder (validation split).

    python scripts/explore_exit_heads.py --checkpoint dynexport/weights/early_exit/all-mpnet-base-v2-deebert-<key>
        [--train-examples 4000]

Pooled features of every layer are computed once; then heads are trained per variant (label CE,
self-distillation towards the final head as in FastBERT, more epochs, wider heads) and each is
scored by the expected speed-up (layer-count costs) at ≤ 1.0 / ≤ 0.5 pt validation accuracy drop
for exits 4,8, every 2 layers and every layer. This is how the recipe's head settings were chosen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from dynexport.calibration import choose, sweep
from dynexport.models.encoder import ExitHead, MultiExit
from dynexport.train.bert_exits import collect_logits, frozen_encoder

VARIANTS = [(0.0, 8, 256), (0.5, 8, 256), (1.0, 8, 256), (0.5, 20, 256), (0.5, 8, 768)]  # distill, epochs, width


def train_head(x, y, teacher, distill: float, epochs: int, width: int) -> ExitHead:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    head = ExitHead(x.shape[1], int(y.max()) + 1, width)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    head.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(64):
            out = head.classify(x[idx])
            loss = torch.nn.functional.cross_entropy(out, y[idx])
            if distill:
                kl = torch.nn.functional.kl_div(out.log_softmax(-1), teacher[idx], log_target=True,
                                                reduction="batchmean")
                loss = (1 - distill) * loss + distill * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--train-examples", type=int, default=4000)
    args = ap.parse_args()
    fz = frozen_encoder(args.checkpoint)
    splits, family, base, heads, enc, num_layers = fz.splits, fz.family, fz.base, fz.heads, fz.enc, fz.num_layers
    model = MultiExit(base, family, heads)
    train = splits.train[: args.train_examples]
    ftr, fva = collect_logits(model, train, enc, pooled=True), collect_logits(model, splits.val, enc, pooled=True)
    ytr, yva = torch.tensor([e.label for e in train]), np.array([e.label for e in splits.val])
    final = heads[num_layers]
    teacher, final_val = final.classify(ftr[num_layers]).log_softmax(-1), final.classify(fva[num_layers]).numpy()
    for distill, epochs, width in VARIANTS:
        with torch.enable_grad():
            hs = {k: train_head(ftr[k], ytr, teacher, distill, epochs, width) for k in range(1, num_layers)}
        val = {**{k: h.classify(fva[k]).numpy() for k, h in hs.items()}, num_layers: final_val}
        acc = {k: round(float((v.argmax(-1) == yva).mean() * 100), 1) for k, v in val.items()}
        print(f"distill={distill} epochs={epochs} width={width}: val accuracy per layer {acc}")
        for exits in ([4, 8], list(range(2, num_layers, 2)), list(range(1, num_layers))):
            b = [0, *exits, num_layers]
            _, pts = sweep([val[k] for k in b[1:]], yva, [y - x for x, y in zip(b[:-1], b[1:])])
            print(f"    exits {exits}: ≤1.0 pt {choose(pts, 1.0).expected_speedup:.2f}x, "
                  f"≤0.5 pt {choose(pts, 0.5).expected_speedup:.2f}x")


if __name__ == "__main__":
    main()
