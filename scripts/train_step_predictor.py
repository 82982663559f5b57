"""Train StepSaver's step predictor on the step labels → models/openmoji-step-predictor/.

    python scripts/train_step_predictor.py [--labels benchmarks/stepsaver_labels.json] [--cover 0.9]

Trains on the train-split prompts (every seed's label is one example), then calibrates the safety
margin on the val split: the smallest margin whose chosen counts are at least the label for
--cover of the (prompt, seed) pairs. Test-split prompts are untouched (bench_stepsaver.py uses them).
Labels can be re-derived at another SSIM threshold from the stored per-count scores (--ssim).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dynexport.manifest import StepPredictorInfo
from dynexport.train.diffusion import caption_embeddings
from dynexport.train.step_predictor import PredictorCfg, calibrate_margin, save_predictor, train_predictor

ROOT = Path(__file__).resolve().parents[1]


def relabel(payload: dict, threshold: float) -> np.ndarray:
    from make_step_labels import label_of  # scripts/ is on sys.path when run as a script
    counts, full = payload["counts"], payload["full_steps"]
    return np.array([label_of((np.array(r["ssim"]) >= threshold) & np.array(r["agree"]), counts, full)
                     for r in payload["records"]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=Path, default=ROOT / "benchmarks" / "stepsaver_labels.json")
    ap.add_argument("--ssim", type=float, default=None, help="re-derive labels at this SSIM threshold")
    ap.add_argument("--cover", type=float, default=0.9, help="val fraction whose label the chosen count must reach")
    ap.add_argument("--epochs", type=int, default=PredictorCfg.epochs)
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "openmoji-step-predictor")
    args = ap.parse_args()
    torch.set_num_threads(2)
    payload = json.loads(args.labels.read_text())
    recs = payload["records"]
    labels = relabel(payload, args.ssim) if args.ssim is not None else np.array([r["label"] for r in recs])
    classes = [*payload["counts"], payload["full_steps"]]
    y = np.array([classes.index(v) for v in labels])
    emb = caption_embeddings([r["caption"] for r in recs]).numpy()
    split = np.array([r["split"] for r in recs])
    cfg = PredictorCfg(epochs=args.epochs)
    tr, va = split == "train", split == "val"
    model = train_predictor(emb[tr], y[tr], len(classes), cfg)
    with torch.no_grad():
        probs = model(torch.from_numpy(emb[va])).numpy()
    cal = calibrate_margin(probs, labels[va], classes, args.cover)
    info = StepPredictorInfo(counts=classes, margin=cal["chosen"]["margin"], calibration={
        "split": "val", "examples": int(va.sum()), **cal},
        training={"examples": int(tr.sum()), "labels": args.labels.name, "ssim_threshold":
                  args.ssim if args.ssim is not None else payload["ssim_threshold"], "scheduler": payload["scheduler"],
                  "guidance": payload["guidance"], "full_steps": payload["full_steps"],
                  "unet_sha256": payload.get("unet_sha256"), "mean_label_train": float(labels[tr].mean())})
    save_predictor(model, cfg, info, args.out)
    print(json.dumps({"margin": info.margin, "chosen": cal["chosen"], "mean_label_val": float(labels[va].mean())},
                     indent=1))


if __name__ == "__main__":
    main()
