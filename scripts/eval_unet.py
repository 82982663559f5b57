"""Compare trained StepSaver UNets on held-out prompts: does the caption-match scorer recognise their images,
and how fast do they converge? → benchmarks/unet_eval.json

    python scripts/eval_unet.py dynexport/weights/stepsaver/openmoji-unet32 /path/to/other-unet [--prompts 406]
        [--counts 10,20] [--split train --out benchmarks/unet_eval_train.json]

Per UNet: torch + diffusers DPM-Solver++ 2M (the recipe's scheduler, guidance 1) at the full 50 steps on every
test-split caption, one seed per prompt; the scorer's caption accuracy, family accuracy and the prompt caption's
rank percentile among all captions (0.5 = chance); the mean SSIM of the images at fewer steps to the 50-step
image; and the UNet's torch CPU time per call at batch 1. Used to pick which trained UNet StepSaver ships.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dynexport import paths
from dynexport.bench.env import environment, write_json
from dynexport.emoji_data import load_emoji
from dynexport.metrics import ssim
from dynexport.models.sentence import caption_embeddings
from dynexport.models.unet import load_unet
from dynexport.train.diffusion import sample_dpm
from dynexport.train.scorer import caption_scores, load_scorer

ROOT = Path(__file__).resolve().parents[1]


def ms_per_call(unet, ucfg, reps: int = 30) -> float:
    x, c, t = torch.randn(1, 3, ucfg.size, ucfg.size), torch.randn(1, 1, ucfg.context_dim), torch.tensor([500])
    with torch.no_grad():
        for _ in range(5):
            unet(x, t, c)
        t0 = time.perf_counter()
        for _ in range(reps):
            unet(x, t, c)
    return 1e3 * (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("unets", type=Path, nargs="+")
    ap.add_argument("--prompts", type=int, default=0, help="0 = every caption of the split (train: a seeded sample)")
    ap.add_argument("--split", choices=["train", "val", "test"], default="test",
                    help="train: in-distribution captions (each has the one image the UNet was trained on)")
    ap.add_argument("--counts", default="10,15,20", help="fewer-step counts to compare with the 50-step image ('' none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scorer", type=Path, default=paths.committed("stepsaver") / "openmoji-scorer")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "unet_eval.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = load_emoji(32)
    test = data.split(args.split)
    if args.prompts and args.split == "train":
        test = np.sort(np.random.default_rng(args.seed).choice(test, args.prompts, replace=False))
    test = test[: args.prompts or None]
    prompts = [data.captions[i] for i in test]
    unique = sorted(set(data.captions))
    text = caption_embeddings(unique).numpy()  # [U, D]
    ctx = caption_embeddings(prompts)  # [N, D]
    own_idx = np.array([unique.index(c) for c in prompts])
    fam_of = np.array([c.split(":")[0] for c in unique])
    families = np.array([data.families[i] for i in test])
    scorer = load_scorer(args.scorer)
    results = {"real images": caption_scores(scorer, data.images[test], text, own_idx, fam_of, families)}
    print("real images of these captions:", json.dumps(results["real images"]), flush=True)
    for src in args.unets:
        unet, ucfg = load_unet(src)
        t0 = time.time()
        full = sample_dpm(unet, ucfg, ctx, 50, args.seed)
        r = {"training": json.loads((src / "unet.json").read_text())["training"],
             "params": sum(p.numel() for p in unet.parameters()), "torch_cpu_ms_per_call": ms_per_call(unet, ucfg),
             **caption_scores(scorer, full, text, own_idx, fam_of, families)}
        for n in (int(c) for c in args.counts.split(",") if c):
            r[f"ssim_{n}_vs_50"] = float(ssim(sample_dpm(unet, ucfg, ctx, n, args.seed), full).mean())
        r["eval_wall_s"] = round(time.time() - t0, 1)
        results[str(src)] = r
        print(json.dumps({k: v for k, v in r.items() if k != "training"}), flush=True)
    write_json(args.out, {"env": environment(ROOT), "split": args.split, "prompts": len(prompts), "seed": args.seed,
                          "results": results})


if __name__ == "__main__":
    main()
