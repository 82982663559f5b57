"""What the stronger exit heads of scripts/explore_token_heads.py would buy: the exit rules refitted with
their logits in place of the committed heads' → benchmarks/exit_heads_rules.json.

    python scripts/explore_head_rules.py ART [--heads benchmarks/exit_heads.npz]

ART is an every-layer early-exit artifact (exits 1..11, fp32). Every exit's logits on validation and
test come from its graphs; for each head variant, the layers the exploration trained get the
variant's logits instead (a `layer` head also adds 6% of a layer's cost: its MACs per token against
the encoder layer's), then every rule is fitted on validation exactly as the export does (λ by 5-fold
cross-validation, ≤ 1.0 pt) and scored on test. Expected speed-ups come from the artifact's measured
segment costs; nothing here is timed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dynexport.calibration import RULES, evaluate, fit_rule
from dynexport.evaluate import artifact_split
from dynexport.runtime import FullDepth, load

ROOT = Path(__file__).resolve().parents[1]
LAYER_HEAD_COST = 0.06  # of one encoder layer: ~0.44 M MACs per token against ~7.1 M for an MPNet layer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--heads", type=Path, default=ROOT / "benchmarks" / "exit_heads.npz")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "exit_heads_rules.json")
    args = ap.parse_args()
    pipe = load(args.artifact)
    costs = pipe.manifest.policy.calibration.segment_cost_ms
    if pipe.exit_layers != list(range(1, len(pipe.exit_layers) + 1)):
        raise SystemExit(f"{args.artifact} must have an exit after every layer")
    split = {s: artifact_split(pipe.manifest, s) for s in ("val", "test")}
    every = {s: pipe.run(t, FullDepth(), batch_size=32, collect_all=True).all_logits for s, (t, _) in split.items()}
    heads = np.load(args.heads)
    layers = sorted({int(k.split("_")[-2]) for k in heads.files})
    out = {}
    for variant in ["committed"] + sorted({k.rsplit("_", 2)[0] for k in heads.files} - {"committed"}):
        logits = {s: list(v) for s, v in every.items()}
        c = list(costs)
        for k in layers:
            for s in logits:
                logits[s][k - 1] = heads[f"{variant}_{k}_{s}"] if variant != "committed" else every[s][k - 1]
            c[k - 1] += LAYER_HEAD_COST * float(np.median(costs[1:])) if variant == "layer" else 0.0
        (_, yv), (_, yt) = split["val"], split["test"]
        full_t = float((logits["test"][-1].argmax(-1) == yt).mean() * 100)
        rows = {}
        for kind in RULES:
            f = fit_rule(kind, logits["val"], yv, c, 1.0)
            acc, speed, frac = evaluate(f.policy(), logits["test"], yt, c)
            rows[kind] = {"val_accuracy_drop_pt": f.accuracy_drop_pt, "cv_accuracy_drop_pt": f.cv_accuracy_drop_pt,
                          "cv_expected_speedup": f.cv_expected_speedup, "test_accuracy_drop_pt": round(full_t - acc, 3),
                          "test_expected_speedup": round(speed, 3), "test_exit_fractions": frac}
            print(f"{variant:10s} {kind:16s} cv {f.cv_accuracy_drop_pt:5.2f} pt {f.cv_expected_speedup:.2f}x | "
                  f"test {full_t - acc:5.2f} pt {speed:.2f}x", flush=True)
        out[variant] = rows
    args.out.write_text(json.dumps({"artifact": args.artifact.name, "layers_replaced": layers,
                                    "segment_cost_ms": costs, "variants": out}, indent=1))


if __name__ == "__main__":
    main()
