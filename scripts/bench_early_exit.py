"""Early-exit benchmark → benchmarks/early_exit.json + benchmarks/early_exit.png.

    python scripts/bench_early_exit.py [--exit-sets 4,8 2,4,6,8,10] [--precisions fp32 int8]
        [--backends openvino onnxruntime] [--timing-samples 600] [--repeats 3]

For every exit set × precision (fp32 graphs, INT8 = NNCF PTQ) the artifact is exported (or reused)
with the default recipe; then per backend, in one process on the same texts:
- accuracy on the whole test split: every exit's logits from one full-depth pass, the exit rule
  replayed per threshold (the runtime's own rule; tests check it equals a live run), and a live
  early-exit run at the calibrated threshold on the timing subset as a cross-check;
- wall time: full depth vs calibrated early exit at batch 1 and batch 32, interleaved repeats,
  medians, on the first `--timing-samples` test texts; speed-up = ratio within the same run;
- a threshold sweep at batch 1, each point timed against full depth on a smaller subset.
The summary picks the best batch-1 OpenVINO setting whose *test* accuracy drop (threshold chosen on
validation) is ≤ 1.0 pt; if none qualifies it says so.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from dynexport.bench.env import environment, write_json
from dynexport.calibration import evaluate as replay_eval
from dynexport.evaluate import artifact_split, rows, timed_runs
from dynexport.runtime import EntropyPolicy, FullDepth, load

ROOT = Path(__file__).resolve().parents[1]
TARGET_SPEEDUP, MAX_DROP = 2.5, 1.0


def ensure_artifact(exits: list[int], precision: str, out_root: Path) -> Path:
    out = out_root / f"bert-exits-{'-'.join(map(str, exits))}-{precision}"
    if (out / "manifest.json").is_file():
        return out
    from dynexport import methods
    recipe = methods.get("early-exit").load_recipe(None, {
        "exits.layers": exits, "quantization.quant_mode": "int8" if precision == "int8" else "none"})
    methods.export("early-exit", recipe, out)
    return out


def sweep_thresholds(curve: list[dict], chosen: float, k: int = 6) -> list[float]:
    """k thresholds spread over the calibrated curve's distinct operating points, plus the chosen one."""
    pts = sorted({p["threshold"] for p in curve if 0 < p["expected_speedup"]})
    picks = [pts[int(i)] for i in np.linspace(0, len(pts) - 1, k)] if pts else []
    return sorted(set(picks) | {chosen})


def measure(art: Path, backend: str, args) -> dict:
    pipe = load(art, backend)
    m = pipe.manifest
    texts, labels = artifact_split(m, "test")
    every = pipe.run(texts, FullDepth(), batch_size=32, collect_all=True).all_logits  # [n, C] per exit
    costs = m.policy.calibration.segment_cost_ms
    full_acc = float((every[-1].argmax(-1) == labels).mean() * 100)
    thr = m.policy.threshold
    ee_acc, ee_expected, ee_frac = replay_eval(EntropyPolicy(thr), every, labels, costs)
    tt, tl = texts[: args.timing_samples], labels[: args.timing_samples]
    batches = {}
    for bs in (1, 32):
        runs = timed_runs(pipe, tt, {"full": FullDepth(), "early_exit": EntropyPolicy(thr)}, bs, args.repeats)
        r = {row.name: row.to_json() for row in rows(runs, tl, "full")}
        live = runs["early_exit"][1]
        replay_pred = EntropyPolicy(thr)
        batches[str(bs)] = {"full": r["full"], "early_exit": r["early_exit"],
                            "speedup": r["early_exit"]["speedup"],
                            "per_sample_ms": {k: 1e3 * v["wall_s"] / len(tt) for k, v in r.items()},
                            "live_matches_replay": bool(np.array_equal(
                                live.label_ids, _replay_pred(replay_pred, every, len(tt))))}
    sweep = []
    st = texts[: args.sweep_samples]
    for t in sweep_thresholds([p.model_dump() for p in m.policy.calibration.curve], thr):
        acc, expected, frac = replay_eval(EntropyPolicy(t), every, labels, costs)
        runs = timed_runs(pipe, st, {"full": FullDepth(), "ee": EntropyPolicy(t)}, 1, args.sweep_repeats)
        speed = statistics.median(runs["full"][0]) / statistics.median(runs["ee"][0])
        sweep.append({"threshold": t, "accuracy": round(acc, 3), "accuracy_drop_pt": round(full_acc - acc, 3),
                      "measured_speedup": round(speed, 3), "expected_speedup": round(expected, 3),
                      "exit_fractions": frac})
    return {"artifact": art.name, "exits": m.exits, "precision": m.graphs[0].precision[backend], "backend": backend,
            "test_samples": len(labels), "timing_samples": len(tt), "sweep_samples": len(st),
            "threshold": thr, "accuracy_full": round(full_acc, 3), "accuracy_early_exit": round(ee_acc, 3),
            "accuracy_drop_pt": round(full_acc - ee_acc, 3), "expected_speedup": round(ee_expected, 3),
            "exit_fractions": ee_frac, "val_calibration": m.policy.calibration.chosen.model_dump(),
            "segment_cost_ms": costs, "batch": batches, "sweep": sweep}


def _replay_pred(policy, every, n):
    from dynexport.calibration import replay
    return replay(policy, [e[:n] for e in every])[0]


def summarize(runs: list[dict]) -> dict:
    cands = [r for r in runs if r["backend"] == "openvino"]
    ok = [r for r in cands if r["accuracy_drop_pt"] <= MAX_DROP]
    best = max(ok or cands, key=lambda r: r["batch"]["1"]["speedup"])
    s = best["batch"]["1"]["speedup"]
    return {"speedup": s, "accuracy_drop_pt": best["accuracy_drop_pt"], "exits": best["exits"],
            "precision": best["precision"], "accuracy_full": best["accuracy_full"],
            "accuracy_early_exit": best["accuracy_early_exit"], "backend": "openvino", "batch": 1,
            "threshold": best["threshold"], "artifact": best["artifact"],
            "qualifies_accuracy": bool(ok), "meets_target": bool(ok) and s >= TARGET_SPEEDUP,
            "target": {"speedup": TARGET_SPEEDUP, "max_accuracy_drop_pt": MAX_DROP}}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    backends = sorted({r["backend"] for r in runs})
    fig, axes = plt.subplots(1, len(backends), figsize=(6.5 * len(backends), 4.8), squeeze=False)
    for ax, backend in zip(axes[0], backends):
        for r in (r for r in runs if r["backend"] == backend):
            pts = sorted(r["sweep"], key=lambda p: p["threshold"])
            line, = ax.plot([1.0] + [p["measured_speedup"] for p in pts],
                            [r["accuracy_full"]] + [p["accuracy"] for p in pts], "o-", ms=3,
                            label=f"{r['precision']} exits {','.join(map(str, r['exits']))}")
            b1 = r["batch"]["1"]
            ax.plot([b1["speedup"]], [r["accuracy_early_exit"]], "*", ms=14, color=line.get_color())
        ax.axvline(TARGET_SPEEDUP, ls=":", c="gray")
        ax.set(title=f"{backend}, batch 1 (★ = calibrated threshold)", xlabel="measured speed-up vs full depth (x)",
               ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exit-sets", nargs="+", default=["4,8", "2,4,6,8,10", "1,2,3,4,5,6,7,8,9,10,11"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    ap.add_argument("--backends", nargs="+", default=["openvino", "onnxruntime"])
    ap.add_argument("--timing-samples", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep-samples", type=int, default=200)
    ap.add_argument("--sweep-repeats", type=int, default=1)
    ap.add_argument("--artifacts", type=Path, default=ROOT / "exported_models" / "bench")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "early_exit.json")
    args = ap.parse_args()
    runs = []
    for exits in args.exit_sets:
        for precision in args.precisions:
            art = ensure_artifact([int(e) for e in exits.split(",")], precision, args.artifacts)
            for backend in args.backends:
                print(f"measuring {art.name} on {backend} ...", flush=True)
                runs.append(measure(art, backend, args))
                r = runs[-1]
                print(f"  full {r['accuracy_full']:.2f}% → early exit {r['accuracy_early_exit']:.2f}% "
                      f"(drop {r['accuracy_drop_pt']:.2f} pt), batch 1 {r['batch']['1']['speedup']:.2f}x, "
                      f"batch 32 {r['batch']['32']['speedup']:.2f}x", flush=True)
                payload = {"env": environment(ROOT), "args": {k: str(v) for k, v in vars(args).items()},
                           "runs": runs, "summary": summarize(runs)}
                write_json(args.out, payload)
    plot(runs, args.out.with_suffix(".png"))
    print("summary:", payload["summary"])


if __name__ == "__main__":
    main()
