"""Make StepSaver's step labels: for each prompt and seed, the fewest steps whose image has converged.

    python scripts/make_step_labels.py [--seeds 1] [--splits train,val] [--prompts 0]

For every OpenMoji caption of the chosen splits (or --prompts of each, spread evenly; the split is
recorded) and seed, the exported UNet (fp32, through the runtime, batched) draws the image with the
full schedule and with each candidate count. Scheduler, full step count and guidance default to
the StepSaver recipe's (dynexport/recipes/stepsaver.toml), so the labels fit the artifact the predictor
will ship in.
An image at n steps has *converged* when its SSIM to the full-step image is ≥ --ssim and the
caption-match scorer agrees on both (--agree caption: the same caption; family: the same caption family,
skin tones merged; none: SSIM only). The default is none because on the committed UNet the scorer's
verdict is noise: over the 1,389 labelled (prompt, seed) pairs it names the prompt's caption for 0.4%
of the full-step images, and the same caption for a prompt's 40- and 50-step images only 84% of the
time although their mean SSIM is 0.993 — requiring agreement would label scorer flips, not
convergence. Agreement stays recorded. The label is the smallest candidate from
which every larger candidate has converged too (convergence is not always monotone in n; a count
that converges by luck between two that do not is not a safe label). Per-count SSIM and agreement
are stored, so other thresholds can be tried without regenerating. Resumable: finished chunks are
kept in --work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from dynexport import paths
from dynexport.emoji_data import load_emoji
from dynexport.metrics import ssim
from dynexport.train.step_predictor import converged, label_of

ROOT = Path(__file__).resolve().parents[1]
COUNTS = [3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40]


def ensure_artifact(unet: Path, scheduler: str, full: int, guidance: float) -> Path:
    from dynexport import methods
    from dynexport.manifest import sha256_file
    out = ROOT / "exported_models" / f"stepsaver-labels-{scheduler}"
    m = out / "manifest.json"
    have = json.loads(m.read_text()) if m.is_file() else None
    if have is None or have["source"]["unet_sha256"] != sha256_file(unet / "unet.safetensors") \
            or have["guidance_scale"] != guidance or have["full_steps"] != full:
        recipe = methods.get("stepsaver").load_recipe(None, {
            "models.unet": str(unet), "models.predictor": "", "quantization.weight_format": "fp32",
            "quantization.quant_mode": "none", "sampling.scheduler": scheduler, "sampling.full_steps": full,
            "sampling.guidance_scale": guidance})
        methods.export("stepsaver", recipe, out, overwrite=True)
    return out


def spread(rows: np.ndarray, n: int) -> list[int]:
    """At most n of `rows`, evenly spaced (the split is ordered by emoji group: a prefix would be one group)."""
    return ([int(i) for i in rows] if not n or n >= len(rows)
            else [int(rows[j]) for j in np.linspace(0, len(rows) - 1, n).astype(int)])


def chunk_scores(pipe, scorer, text: np.ndarray, family: np.ndarray, prompts: list[str], seed: int, full: int) -> dict:
    """SSIM to the full-step image and scorer agreement (caption, and caption family) for every
    candidate count, one chunk of prompts. family [U]: family id of each caption."""
    from dynexport.train.scorer import classify
    ref = pipe.generate(prompts, seed=seed, steps=full).images
    ref_cls = classify(scorer, ref, text)
    ss, agree, agree_fam = [], [], []
    for n in COUNTS:
        img = pipe.generate(prompts, seed=seed, steps=n).images
        cls = classify(scorer, img, text)
        ss.append(ssim(img, ref)), agree.append(cls == ref_cls), agree_fam.append(family[cls] == family[ref_cls])
    return {"ssim": np.stack(ss, 1).tolist(), "agree": np.stack(agree, 1).tolist(),
            "agree_family": np.stack(agree_fam, 1).tolist(), "ref_class": ref_cls.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unet", type=Path, default=paths.committed("stepsaver") / "openmoji-unet32")
    ap.add_argument("--scorer", type=Path, default=paths.committed("stepsaver") / "openmoji-scorer")
    from dynexport.recipe import StepSaverRecipe, load_recipe
    sampling = load_recipe(None, None, StepSaverRecipe).sampling
    ap.add_argument("--scheduler", default=sampling.scheduler)
    ap.add_argument("--full-steps", type=int, default=sampling.full_steps)
    ap.add_argument("--guidance", type=float, default=sampling.guidance_scale)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=0,
                    help="at most this many captions per split, spread evenly (0 = all)")
    ap.add_argument("--splits", default="train,val", help="which splits' captions to label (test is the bench's)")
    ap.add_argument("--agree", choices=["none", "family", "caption"], default="none")
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--ssim", type=float, default=0.95)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "stepsaver_labels.json")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    from dynexport.models.sentence import caption_embeddings
    from dynexport.runtime import load
    from dynexport.train.scorer import load_scorer
    data = load_emoji(32)
    split = {int(i): s for s in ("train", "val", "test") for i in data.split(s)}
    wanted = set(args.splits.split(","))
    rows = sorted(i for s in wanted for i in spread(data.split(s), args.prompts))
    unique = sorted(set(data.captions))
    text = caption_embeddings(unique).numpy()
    family = np.unique([c.split(":")[0] for c in unique], return_inverse=True)[1]  # [U] family id
    pipe = load(ensure_artifact(args.unet, args.scheduler, args.full_steps, args.guidance))
    scorer = load_scorer(args.scorer)
    unet_sha = pipe.manifest.source["unet_sha256"][:12]
    work = args.work or ROOT / "exported_models" / f"stepsaver-labels-work-{unet_sha}-{args.scheduler}-g{args.guidance}"
    work.mkdir(parents=True, exist_ok=True)
    t0, records = time.time(), []
    for seed in range(args.seeds):
        for c in range(0, len(rows), args.chunk):
            idx = rows[c:c + args.chunk]
            key = hashlib.sha256(json.dumps([args.full_steps, COUNTS, idx]).encode()).hexdigest()[:16]
            part = work / f"seed{seed}-{key}.json"  # a chunk is reused only for the same rows and counts
            if not part.is_file():
                res = chunk_scores(pipe, scorer, text, family, [data.captions[i] for i in idx], 1000 + seed,
                                   args.full_steps)
                part.write_text(json.dumps(res))
            res = json.loads(part.read_text())
            for j, i in enumerate(idx):
                records.append({"row": i, "caption": data.captions[i], "split": split[i], "seed": 1000 + seed,
                                "noise_row": j,  # the runtime draws batch row j from rng([seed, j])
                                "ssim": [round(v, 5) for v in res["ssim"][j]], "agree": res["agree"][j],
                                "agree_family": res["agree_family"][j],
                                "ref_class_ok": unique[res["ref_class"][j]] == data.captions[i]})
            print(f"seed {seed} prompts {c + len(idx)}/{len(rows)} ({time.time() - t0:.0f} s)", flush=True)
    for r in records:
        r["label"] = label_of(converged(r, args.ssim, args.agree), COUNTS, args.full_steps)
    labels = np.array([r["label"] for r in records])
    summary = {"records": len(records), "mean_label": float(labels.mean()),
               "label_histogram": {str(n): int((labels == n).sum()) for n in [*COUNTS, args.full_steps]},
               "full_step_scorer_accuracy": float(np.mean([r["ref_class_ok"] for r in records]))}
    payload = {"counts": COUNTS, "full_steps": args.full_steps, "scheduler": args.scheduler, "guidance": args.guidance,
               "unet_sha256": pipe.manifest.source["unet_sha256"],
               "ssim_threshold": args.ssim, "agree": args.agree, "rule": "smallest count from which every larger "
               "count has SSIM >= threshold to the full-step image"
               + ("" if args.agree == "none" else f" and the same scorer {args.agree}"),
               "summary": summary, "records": records}
    args.out.write_text(json.dumps(payload) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
