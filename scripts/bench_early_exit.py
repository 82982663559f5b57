"""Early-exit benchmark → benchmarks/early_exit.json + benchmarks/early_exit.png.

    python scripts/bench_early_exit.py [--exit-sets 2,4,6,8,10 1,2,3,4,5,6,7,8,9,10,11] [--precisions fp32 int8]
        [--backends openvino onnxruntime] [--timing-samples 500] [--repeats 3] [--int8-exits 1,2,...,11]
        [--head-pooling attention|mean] [--int8-budget-reference fp32|same_precision]

For every exit set × precision (fp32 graphs, INT8 = NNCF PTQ) the artifact is exported (or reused)
with the default recipe and the chosen exit-head pooling; INT8 artifacts calibrate their budget against
fp32 full depth by default (their own validation drop is paid first). The manifest holds every exit
rule calibrated on validation (one entropy threshold, one per exit, BERxiT's learned rule; each
chosen by 5-fold cross-validation). Then per backend, in one process on the same texts:
- accuracy on the whole test split for every rule: every exit's logits from one full-depth pass, the
  rule replayed (the runtime's own rule; a live run on the timing subset is checked against it), with
  the validation drops (in-sample and cross-validated) beside the test drop;
- wall time: full depth and every rule at batch 1 (and the default rule at batch 32), interleaved
  repeats, medians, on the first `--timing-samples` test texts; speed-up = ratio within the run,
  against the same artifact at full depth and against a near-plain artifact (`--plain-exits 11`:
  two segments) at full depth, interleaved too, which pays no per-segment overhead;
- optionally a threshold sweep of the global rule at batch 1 (`--sweep-samples`, 0: off).
INT8 combined (`--int8-exits`): fp32 full depth, INT8 full depth and INT8 + each rule, all interleaved
in one loop; accuracy drops against fp32 full depth with paired bootstrap CIs over the test split.
The summary picks the best batch-1 OpenVINO setting whose *test* drop is ≤ 1.0 pt against full depth
at the same precision (rules were chosen on validation only); `summary.int8` the best INT8 + early
exit setting against fp32 full depth.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from dynexport.bench.env import environment, write_json
from dynexport.bench.stats import paired_bootstrap
from dynexport.calibration import evaluate as replay_eval
from dynexport.calibration import replay
from dynexport.evaluate import artifact_split, rows, timed_pairs, timed_runs
from dynexport.manifest import Candidate, read_manifest
from dynexport.runtime import EntropyPolicy, FullDepth, load

ROOT = Path(__file__).resolve().parents[1]
TARGET_SPEEDUP, TARGET_INT8, MAX_DROP = 3.0, 6.0, 1.0


def ensure_artifact(exits: list[int], precision: str, args) -> Path:
    """The default recipe with these exits and precision (and the bench's head pooling, INT8 budget
    reference), exported under --artifacts unless already there."""
    ref = args.int8_budget_reference if precision == "int8" else "same_precision"
    name = f"bert-exits-{'-'.join(map(str, exits))}-{precision}-{args.head_pooling}" + ("-vs-fp32" if ref == "fp32" else "")
    out = args.artifacts / name
    if (out / "manifest.json").is_file() and read_manifest(out, verify=False).policy.candidates:  # per-exit rules
        return out
    from dynexport import methods
    recipe = methods.get("early-exit").load_recipe(None, {
        "exits.layers": exits, "quantization.quant_mode": "int8" if precision == "int8" else "none",
        "training.head_pooling": args.head_pooling, "calibration.budget_reference": ref})
    methods.export("early-exit", recipe, out, overwrite=True)
    return out


def rule_policies(pipe) -> dict:
    """Every calibrated rule of the artifact as a runtime policy, by kind."""
    return {c.kind: pipe.calibrated(c.kind) for c in pipe.manifest.policy.candidates}


def default_kind(manifest) -> str:
    p = manifest.policy
    return "learned" if p.kind == "learned" else "entropy_per_exit" if p.thresholds else "entropy"


def rule_row(c: Candidate, policy, every, labels, costs, full_acc: float, timed: dict) -> dict:
    acc, expected, frac = replay_eval(policy, every, labels, costs)
    return {"rule": c.kind, "thresholds": c.thresholds, "accuracy": round(acc, 3),
            "accuracy_drop_pt": round(full_acc - acc, 3), "val_accuracy_drop_pt": c.accuracy_drop_pt,
            "cv_accuracy_drop_pt": c.cv_accuracy_drop_pt, "expected_speedup": round(expected, 3),
            "cv_expected_speedup": c.cv_expected_speedup, "exit_fractions": frac, **timed}


def measure(art: Path, backend: str, plain: Path, args) -> dict:
    pipe, ref = load(art, backend), load(plain, backend)
    m = pipe.manifest
    texts, labels = artifact_split(m, "test")
    every = pipe.run(texts, FullDepth(), batch_size=32, collect_all=True).all_logits  # [n, C] per exit
    costs, full_acc = m.policy.calibration.segment_cost_ms, float((every[-1].argmax(-1) == labels).mean() * 100)
    pols, kind = rule_policies(pipe), default_kind(m)
    tt, tl = texts[: args.timing_samples], labels[: args.timing_samples]
    runs = timed_pairs({"full": (pipe, FullDepth()), "plain_full": (ref, FullDepth()),
                        **{k: (pipe, p) for k, p in pols.items()}}, tt, 1, args.repeats)
    table = {row.name: row.to_json() for row in rows(runs, tl, "full")}
    vs_plain = {k: round(statistics.median(runs["plain_full"][0]) / statistics.median(runs[k][0]), 3) for k in runs}
    live_ok = all(np.array_equal(runs[k][1].label_ids, replay(p, [e[: len(tt)] for e in every])[0])
                  for k, p in pols.items())
    rules = [rule_row(c, pols[c.kind], every, labels, costs, full_acc,
                      {"speedup": table[c.kind]["speedup"], "speedup_vs_plain_full": vs_plain[c.kind],
                       "per_sample_ms": 1e3 * table[c.kind]["wall_s"] / len(tt)})
             for c in m.policy.candidates]
    b32 = {r.name: r.to_json() for r in rows(timed_runs(pipe, tt, {"full": FullDepth(), kind: pols[kind]}, 32,
                                                        args.repeats), tl, "full")}
    out = {"artifact": art.name, "exits": m.exits, "precision": m.graphs[0].precision[backend], "backend": backend,
           "test_samples": len(labels), "timing_samples": len(tt), "default_rule": kind,
           "accuracy_full": round(full_acc, 3), "full_ms_per_sample": 1e3 * table["full"]["wall_s"] / len(tt),
           "plain_artifact": plain.name, "plain_full_ms_per_sample": 1e3 * table["plain_full"]["wall_s"] / len(tt),
           "full_vs_plain_full": vs_plain["full"],
           "segment_cost_ms": costs, "rules": rules, "live_matches_replay": live_ok,
           "batch32": {"rule": kind, "speedup": b32[kind]["speedup"],
                       "per_sample_ms": {k: 1e3 * v["wall_s"] / len(tt) for k, v in b32.items()}},
           "timing": table}
    if args.sweep_samples:
        out["sweep"] = sweep(pipe, texts, labels, every, costs, full_acc, args)
    return out


def sweep(pipe, texts, labels, every, costs, full_acc, args) -> list[dict]:
    """The global entropy rule at k thresholds over its calibrated curve, each timed against full depth."""
    cal = pipe.manifest.policy.calibration
    pts = sorted({p.threshold for p in cal.curve if p.expected_speedup > 0})
    out, st = [], texts[: args.sweep_samples]
    for t in sorted({pts[int(i)] for i in np.linspace(0, len(pts) - 1, 6)} if pts else []):
        acc, expected, frac = replay_eval(EntropyPolicy(t), every, labels, costs)
        runs = timed_runs(pipe, st, {"full": FullDepth(), "ee": EntropyPolicy(t)}, 1, args.sweep_repeats)
        out.append({"threshold": t, "accuracy": round(acc, 3), "accuracy_drop_pt": round(full_acc - acc, 3),
                    "measured_speedup": round(statistics.median(runs["full"][0]) / statistics.median(runs["ee"][0]), 3),
                    "expected_speedup": round(expected, 3), "exit_fractions": frac})
    return out


def int8_combined(fp32: Path, int8: Path, plain: Path, args) -> dict:
    """fp32 full, INT8 full and INT8 + every rule interleaved in one loop (batch 1, OpenVINO); accuracy
    drops against fp32 full depth on the whole test split with paired bootstrap CIs."""
    p32, p8 = load(fp32, "openvino"), load(int8, "openvino")
    texts, labels = artifact_split(p8.manifest, "test")
    correct = {"fp32_full": p32.run(texts, FullDepth(), batch_size=32).label_ids == labels}
    every8 = p8.run(texts, FullDepth(), batch_size=32, collect_all=True).all_logits
    correct["int8_full"] = every8[-1].argmax(-1) == labels
    pols = rule_policies(p8)
    for k, pol in pols.items():
        correct[f"int8_{k}"] = replay(pol, every8)[0] == labels
    tt = texts[: args.timing_samples]
    pp = load(plain, "openvino")
    correct["fp32_plain_full"] = pp.run(texts, FullDepth(), batch_size=32).label_ids == labels
    runs = timed_pairs({"fp32_full": (p32, FullDepth()), "fp32_plain_full": (pp, FullDepth()),
                        "int8_full": (p8, FullDepth()),
                        **{f"int8_{k}": (p8, pol) for k, pol in pols.items()}}, tt, 1, args.repeats)
    ref = statistics.median(runs["fp32_full"][0])
    table = {}
    for name, (times, _) in runs.items():
        ci = paired_bootstrap(correct["fp32_full"], correct[name])  # fp32 − this: the drop, in points
        table[name] = {"speedup_vs_fp32_full": round(ref / statistics.median(times), 3),
                       "ms_per_sample": 1e3 * statistics.median(times) / len(tt), "wall_s_all": times,
                       "accuracy": round(float(correct[name].mean() * 100), 3),
                       "accuracy_drop_pt": round(ci["diff_pt"], 3), "accuracy_drop_ci95_pt": ci["ci95_pt"]}
    return {"fp32_artifact": fp32.name, "int8_artifact": int8.name, "exits": p8.manifest.exits,
            "default_rule": default_kind(p8.manifest), "test_samples": len(labels), "timing_samples": len(tt),
            "runs": table}


def summarize(runs: list[dict], int8: list[dict]) -> dict:
    cands = [(r, x) for r in runs if r["backend"] == "openvino" for x in r["rules"]]
    ok = [c for c in cands if c[1]["accuracy_drop_pt"] <= MAX_DROP]
    r, x = max(ok or cands, key=lambda c: c[1]["speedup"])
    s = x["speedup"]
    out = {"speedup": s, "accuracy_drop_pt": x["accuracy_drop_pt"], "exits": r["exits"], "precision": r["precision"],
           "accuracy_full": r["accuracy_full"], "accuracy_early_exit": x["accuracy"], "backend": "openvino", "batch": 1,
           "speedup_vs_plain_full": x["speedup_vs_plain_full"], "plain_artifact": r["plain_artifact"],
           "rule": x["rule"], "threshold": x["thresholds"], "val_accuracy_drop_pt": x["val_accuracy_drop_pt"],
           "cv_accuracy_drop_pt": x["cv_accuracy_drop_pt"], "artifact": r["artifact"],
           "qualifies_accuracy": bool(ok), "meets_target": bool(ok) and s >= TARGET_SPEEDUP,
           "target": {"speedup": TARGET_SPEEDUP, "max_accuracy_drop_pt": MAX_DROP}}
    rows8 = [(c, k, v) for c in int8 for k, v in c["runs"].items() if k.startswith("int8_") and k != "int8_full"]
    if rows8:
        ok8 = [t for t in rows8 if t[2]["accuracy_drop_pt"] <= MAX_DROP]
        c, k, v = max(ok8 or rows8, key=lambda t: t[2]["speedup_vs_fp32_full"])
        out["int8"] = {"speedup_vs_fp32_full": v["speedup_vs_fp32_full"], "accuracy_drop_pt": v["accuracy_drop_pt"],
                       "accuracy_drop_ci95_pt": v["accuracy_drop_ci95_pt"], "exits": c["exits"],
                       "rule": k.removeprefix("int8_"), "int8_full_speedup_vs_fp32_full":
                       c["runs"]["int8_full"]["speedup_vs_fp32_full"],
                       "qualifies_accuracy": bool(ok8),
                       "meets_target": bool(ok8) and v["speedup_vs_fp32_full"] >= TARGET_INT8,
                       "target": {"speedup_vs_fp32_full": TARGET_INT8, "max_accuracy_drop_pt": MAX_DROP}}
    return out


def plot(runs: list[dict], int8: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    marks = {"entropy": "o", "entropy_per_exit": "s", "learned": "^"}
    for r in (r for r in runs if r["backend"] == "openvino"):
        for x in r["rules"]:
            axes[0].plot(x["speedup"], x["accuracy_drop_pt"], marks[x["rule"]], ms=8,
                         label=f"{r['precision']} exits {','.join(map(str, r['exits']))} {x['rule']}")
            axes[0].plot(x["speedup"], x["cv_accuracy_drop_pt"], marks[x["rule"]], ms=5, mfc="none", c="gray")
    axes[0].axhline(MAX_DROP, ls=":", c="gray")
    axes[0].axvline(TARGET_SPEEDUP, ls=":", c="gray")
    axes[0].set(title="OpenVINO batch 1: test drop (filled) vs cross-validated val drop (hollow)",
                xlabel="measured speed-up vs full depth, same precision (x)", ylabel="accuracy drop (pt)")
    axes[0].legend(fontsize=6)
    for c in int8:
        names = list(c["runs"])
        axes[1].barh([f"{n} ({','.join(map(str, c['exits']))})" for n in names],
                     [c["runs"][n]["speedup_vs_fp32_full"] for n in names])
    axes[1].axvline(TARGET_INT8, ls=":", c="gray")
    axes[1].set(title="INT8 + early exit vs fp32 full depth (interleaved, batch 1)", xlabel="speed-up (x)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exit-sets", nargs="+", default=["2,4,6,8,10", "1,2,3,4,5,6,7,8,9,10,11"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    ap.add_argument("--backends", nargs="+", default=["openvino", "onnxruntime"])
    ap.add_argument("--plain-exits", default="11", help="the near-plain reference: two segments, one boundary")
    ap.add_argument("--int8-exits", nargs="*", default=["2,4,6,8,10", "1,2,3,4,5,6,7,8,9,10,11"])
    ap.add_argument("--timing-samples", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep-samples", type=int, default=0)
    ap.add_argument("--sweep-repeats", type=int, default=1)
    ap.add_argument("--head-pooling", choices=["attention", "mean"], default="attention")
    ap.add_argument("--int8-budget-reference", choices=["fp32", "same_precision"], default="fp32",
                    help="what the INT8 artifacts' 1-pt budget is calibrated against on validation")
    ap.add_argument("--artifacts", type=Path, default=ROOT / "exported_models" / "bench")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "early_exit.json")
    args = ap.parse_args()
    runs, int8 = [], []

    def save() -> dict:
        payload = {"env": environment(ROOT), "args": {k: str(v) for k, v in vars(args).items()},
                   "runs": runs, "int8_combined": int8, "summary": summarize(runs, int8) if runs else None}
        write_json(args.out, payload)
        return payload

    for exits in args.exit_sets:
        for precision in args.precisions:
            art = ensure_artifact([int(e) for e in exits.split(",")], precision, args)
            plain = ensure_artifact([int(e) for e in args.plain_exits.split(",")], precision, args)
            for backend in args.backends:
                print(f"measuring {art.name} on {backend} ...", flush=True)
                runs.append(measure(art, backend, plain, args))
                for x in runs[-1]["rules"]:
                    print(f"  {x['rule']:16s} test drop {x['accuracy_drop_pt']:.2f} pt (val cv "
                          f"{x['cv_accuracy_drop_pt']:.2f}), batch 1 {x['speedup']:.2f}x", flush=True)
                save()
    for exits in args.int8_exits:
        e = [int(x) for x in exits.split(",")]
        print(f"INT8 combined, exits {exits} ...", flush=True)
        int8.append(int8_combined(ensure_artifact(e, "fp32", args), ensure_artifact(e, "int8", args),
                                  ensure_artifact([int(x) for x in args.plain_exits.split(",")], "fp32", args), args))
        for k, v in int8[-1]["runs"].items():
            print(f"  {k:22s} {v['speedup_vs_fp32_full']:.2f}x vs fp32 full, drop {v['accuracy_drop_pt']:.2f} pt "
                  f"{v['accuracy_drop_ci95_pt']}", flush=True)
        save()
    payload = save()
    plot(runs, int8, args.out.with_suffix(".png"))
    print("summary:", payload["summary"])


if __name__ == "__main__":
    main()
