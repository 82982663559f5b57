"""Train (or reuse) the early-exit checkpoint of a recipe and print its validation picture.

    python scripts/train_bert_exits.py [--recipe dynexport/recipes/early_exit.toml] [--scheme joint|deebert]
        [--max-train-examples N] [--model ID_OR_DIR] [--checkpoint-dir DIR] [--head-pooling mean|attention]

Checkpoints are looked up and written in the recipe's training.checkpoint_dir; by default that is the
committed dir (dynexport/weights/early_exit) when it holds this recipe's checkpoint, else the cache
($DYNEXPORT_CACHE/checkpoints, default ~/.cache/dynexport/checkpoints). `--checkpoint-dir
dynexport/weights/early_exit` trains straight into the committed weights.

Prints per-layer validation accuracy and, for a few exit sets, the entropy-threshold trade-off with
costs proportional to layer counts (the export re-calibrates with measured segment costs).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from safetensors.numpy import load_file

from dynexport import assets, data
from dynexport.calibration import choose, sweep
from dynexport.models.encoder import heads_file
from dynexport.recipe import load_recipe
from dynexport.train.bert_exits import ensure_trained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=None)
    ap.add_argument("--scheme", choices=["joint", "deebert"])
    ap.add_argument("--max-train-examples", type=int)
    ap.add_argument("--head-pooling", choices=["mean", "attention"],
                    help="exit heads' pooling; a deebert checkpoint trained with another adds these heads (stage 2)")
    ap.add_argument("--model")
    ap.add_argument("--checkpoint-dir", help="where checkpoints are looked up and written [default: the recipe's "
                    "training.checkpoint_dir; empty: the committed dir if it has this one, else the cache]")
    args = ap.parse_args()
    recipe = load_recipe(args.recipe, {"training.scheme": args.scheme, "model.id": args.model,
                                       "training.max_train_examples": args.max_train_examples,
                                       "training.checkpoint_dir": args.checkpoint_dir,
                                       "training.head_pooling": args.head_pooling})
    d = recipe.dataset
    splits = data.load_splits(assets.resolve_dataset(d.id), d.text_column, d.label_column, d.labels,
                              d.val_size, d.test_size, d.seed)
    ckpt = ensure_trained(recipe, assets.resolve_model(recipe.model.id), splits)
    info = json.loads((ckpt / "train_info.json").read_text())
    name = heads_file(recipe.training.head_pooling, info)
    row = info["heads"][recipe.training.head_pooling] if name != "heads.safetensors" else info
    print(f"checkpoint {ckpt} ({name})\n{info['scheme']}: {info['train_examples']} examples, {row['train_seconds']} s")
    print("val accuracy per layer:", row["val_accuracy_per_layer"])
    logits = {int(k): v for k, v in load_file(ckpt / name.replace("heads", "val_logits")).items()}
    y = np.array([e.label for e in splits.val])
    num_layers = info["num_layers"]
    for exits in ([num_layers // 3, 2 * num_layers // 3], list(range(2, num_layers, 2)),
                  list(range(1, num_layers))):
        bounds = [0, *exits, num_layers]
        costs = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        full, points = sweep([logits[k] for k in bounds[1:]], y, costs)
        for budget in (0.5, 1.0, 2.0):
            p = choose(points, budget)
            print(f"exits {exits}: full {full:.2f}%, drop≤{budget}: thr {p.threshold:.4f} acc {p.accuracy:.2f} "
                  f"speed-up {p.expected_speedup:.2f}x exits {p.exit_fractions}")


if __name__ == "__main__":
    main()
