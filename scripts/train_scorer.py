"""Train the caption-match scorer StepSaver's quality checks use → dynexport/weights/stepsaver/openmoji-scorer/.

    python scripts/train_scorer.py [--epochs 30]

A small CNN maps a 32×32 emoji into the all-MiniLM-L6-v2 embedding space; it classifies an image as
the best-matching caption among all unique OpenMoji captions (dynexport/train/scorer.py). Trained on
every real emoji (as the UNet is); reports top-1 / top-5 on the real images and their skin-tone-free
top-1 (the caption family), so the accuracy of generated images can be read against it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dynexport import paths
from dynexport.emoji_data import ATTRIBUTION, load_emoji
from dynexport.models.sentence import caption_embeddings
from dynexport.models.unet import to_unit
from dynexport.train.scorer import embed_images, save_scorer, train_scorer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=paths.committed("stepsaver") / "openmoji-scorer")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_emoji(32)
    unique = sorted(set(data.captions))
    cls = torch.tensor([unique.index(c) for c in data.captions])
    text = caption_embeddings(unique)  # [U, 384]
    t0 = time.time()
    model = train_scorer(to_unit(data.images), cls, text, epochs=args.epochs)
    sims = embed_images(model, data.images) @ text.numpy().T  # [N, U]
    top5 = np.argsort(-sims, 1)[:, :5]
    fam = np.array([c.split(":")[0] for c in unique])
    info = {"epochs": args.epochs, "images": len(data.captions), "captions": len(unique),
            "top1_real": float((top5[:, 0] == cls.numpy()).mean()),
            "top5_real": float((top5 == cls.numpy()[:, None]).any(1).mean()),
            "family_top1_real": float((fam[top5[:, 0]] == np.array(data.families)).mean()),
            "wall_s": round(time.time() - t0, 1), "attribution": ATTRIBUTION}
    save_scorer(model, args.out, info)
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
