"""Train StepSaver's step predictor on the step labels → dynexport/weights/stepsaver/openmoji-step-predictor/.

    python scripts/train_step_predictor.py [--labels benchmarks/stepsaver_labels.json] [--target-ssim 0.96]

Trains on the train-split prompts (every seed's label is one example), then calibrates the safety
margin on the val split: the smallest margin whose chosen counts keep the mean SSIM to the full-step
image (measured at every count by make_step_labels.py) at least --target-ssim; it also reports the one
global count that does the same, the baseline the predictor has to beat. Test-split prompts are untouched
(bench_stepsaver.py uses them).
Labels can be re-derived at another SSIM threshold from the stored per-count scores (--ssim).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dynexport import paths
from dynexport.manifest import StepPredictorInfo
from dynexport.models.sentence import caption_embeddings
from dynexport.models.step_predictor import PredictorCfg, save_predictor
from dynexport.runtime.policies import choose_steps
from dynexport.train.step_predictor import calibrate_margin, converged, label_of, train_predictor

ROOT = Path(__file__).resolve().parents[1]


def relabel(payload: dict, threshold: float, agree: str) -> np.ndarray:
    counts, full = payload["counts"], payload["full_steps"]
    return np.array([label_of(converged(r, threshold, agree), counts, full) for r in payload["records"]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=Path, default=ROOT / "benchmarks" / "stepsaver_labels.json")
    ap.add_argument("--ssim", type=float, default=None, help="re-derive labels at this SSIM threshold")
    ap.add_argument("--agree", choices=["none", "family", "caption"], default=None,
                    help="re-derive labels with this agreement")
    ap.add_argument("--target-ssim", type=float, default=0.96,
                    help="the margin keeps the val images' mean SSIM to their full-step images at least this")
    ap.add_argument("--epochs", type=int, default=PredictorCfg.epochs)
    ap.add_argument("--out", type=Path, default=paths.committed("stepsaver") / "openmoji-step-predictor")
    args = ap.parse_args()
    torch.set_num_threads(2)
    payload = json.loads(args.labels.read_text())
    recs = payload["records"]
    ssim_t = payload["ssim_threshold"] if args.ssim is None else args.ssim
    agree = args.agree or payload.get("agree", "caption")  # labels made before --agree required the caption
    labels = relabel(payload, ssim_t, agree)
    classes = [*payload["counts"], payload["full_steps"]]
    y = np.array([classes.index(v) for v in labels])
    emb = caption_embeddings([r["caption"] for r in recs]).numpy()
    split = np.array([r["split"] for r in recs])
    cfg = PredictorCfg(epochs=args.epochs)
    tr, va = split == "train", split == "val"
    model = train_predictor(emb[tr], y[tr], len(classes), cfg)
    with torch.no_grad():
        probs = model(torch.from_numpy(emb[va])).numpy()
    ssim_at = np.array([[*r["ssim"], 1.0] for r in recs])[va]  # [Nv, C]: the full count is its own reference
    cal = calibrate_margin(probs, ssim_at, classes, args.target_ssim)
    cal["label_covered"] = float((choose_steps(probs, classes, cal["chosen"]["margin"]) >= labels[va]).mean())
    info = StepPredictorInfo(counts=classes, margin=cal["chosen"]["margin"], calibration={
        "split": "val", "examples": int(va.sum()), **cal},
        training={"examples": int(tr.sum()), "labels": args.labels.name, "ssim_threshold": ssim_t,
                  "agree": agree, "scheduler": payload["scheduler"],
                  "guidance": payload["guidance"], "full_steps": payload["full_steps"],
                  "unet_sha256": payload.get("unet_sha256"), "mean_label_train": float(labels[tr].mean())})
    save_predictor(model, cfg, info, args.out)
    print(json.dumps({"margin": info.margin, "chosen": cal["chosen"],
                      "constant_same_target": cal["constant_same_target"],
                      "label_covered": cal["label_covered"],
                      "mean_label_val": float(labels[va].mean())}, indent=1))


if __name__ == "__main__":
    main()
