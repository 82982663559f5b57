"""What decides how many steps an image needs: the prompt, the starting noise, or neither alone?
→ benchmarks/stepsaver_label_variance.json

    python scripts/analyze_step_labels.py [--labels benchmarks/stepsaver_labels.json] [--chunk 128]

Reads the step labels (no image is drawn). For the log label and the SSIM at each count:
- prompt: ridge regression from the prompt's MiniLM embedding, fit on the train split, R² on val;
- noise: the runtime draws row r of a batch from rng([seed, r]), and the label script draws its prompts
  in chunks of --chunk, so prompts at the same position of their chunks share one starting noise.
  The share of variance between those groups (R² of the group means) is compared with its
  permutation null (2,000 shuffles); `share` is the excess over the null, rescaled to [0, 1].
Records carry their noise row where the label script wrote it (`noise_row`); older label files
have it re-derived from the chunking.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dynexport.bench import environment, write_json
from dynexport.metrics import group_share

ROOT = Path(__file__).resolve().parents[1]


def noise_rows(records: list[dict], chunk: int) -> np.ndarray:
    if all("noise_row" in r for r in records):
        return np.array([r["noise_row"] for r in records])
    order = {row: i % chunk for i, row in enumerate(sorted(r["row"] for r in records))}
    return np.array([order[r["row"]] for r in records])


def ridge_val_r2(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray, lam: float) -> float:
    mu, ym = x_tr.mean(0), y_tr.mean()
    a = x_tr - mu  # [N, D]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y_tr - ym))
    pred = (x_va - mu) @ w + ym
    return float(1 - ((y_va - pred) ** 2).sum() / ((y_va - y_va.mean()) ** 2).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=Path, default=ROOT / "benchmarks" / "stepsaver_labels.json")
    ap.add_argument("--chunk", type=int, default=128, help="the label script's --chunk (for files without noise_row)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "stepsaver_label_variance.json")
    args = ap.parse_args()
    from dynexport.train.diffusion import caption_embeddings
    d = json.loads(args.labels.read_text())
    recs = d["records"]
    groups = noise_rows(recs, args.chunk)
    emb = caption_embeddings([r["caption"] for r in recs]).numpy()  # [N, 384]
    tr = np.array([r["split"] == "train" for r in recs])
    targets = {"log_label": np.log([r["label"] for r in recs])}
    targets |= {f"ssim_at_{c}": np.array([r["ssim"][j] for r in recs]) for j, c in enumerate(d["counts"])}
    out = {}
    for name, y in targets.items():
        best = max(ridge_val_r2(emb[tr], y[tr], emb[~tr], y[~tr], lam) for lam in (0.1, 1.0, 10.0, 100.0))
        out[name] = {"prompt_ridge_val_r2": best, "noise": group_share(y, groups)}
        print(f"{name:12s} prompt val R² {best:6.3f}   noise share {out[name]['noise']['share']:.3f} "
              f"(p {out[name]['noise']['p']:.4f})", flush=True)
    write_json(args.out, {"env": environment(ROOT), "labels": str(args.labels.relative_to(ROOT)),
                          "unet_sha256": d["unet_sha256"], "records": len(recs),
                          "noise_groups": int(len(np.unique(groups))), "results": out,
                          "note": "ridge lambda picked on val (best of 0.1, 1, 10, 100): an optimistic prompt R²"})


if __name__ == "__main__":
    main()
