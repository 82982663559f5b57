"""Speculative-decoding benchmark → benchmarks/speculative.json + benchmarks/speculative.png.

    python scripts/bench_speculative.py [--precisions fp16 int8] [--ks 1 2 3 4 6 8] [--max-new-tokens 64]
        [--prompts 24] [--draft dynexport/weights/speculative/smollm2-135m-draft]
    python scripts/bench_speculative.py --pair qwen [--precisions int8 int4] [--modes greedy sample_t0.7]
        [--prompts 24] [--max-new-tokens 128]        → benchmarks/speculative_qwen.json + .png

--pair qwen: Qwen2.5-Coder-1.5B-Instruct as the target, on a fixed subset of HumanEval prompts (raw
completion), rows: our target alone; the 0.5B (int4 weights) as draft at k = 1..6 and adaptive, and with
a 32k-token vocabulary; the EAGLE head chain and tree when one is trained (scripts/train_eagle.py);
openvino_genai's target alone and speculative with the same 0.5B (num_assistant_tokens 3 and 5,
assistant_confidence_threshold 0.4), each in a fresh pipeline (dynexport/bench/pair.py). Columns: TTFT,
TPOT, tok/s end to end and decode-only, α (by depth), τ, c, greedy identical, load RSS per pipeline and
the process's peak; plus the verify-cost curve and the ceiling a perfect free draft allows on it.

SmolLM2 (default):
One process, one machine, the same held-out real prompts (Lee news test documents and held-out
Python stdlib functions, `lm_data.bench_prompts`) for every configuration, run prompt by prompt with
the configurations interleaved (rotated order), 64 new tokens each (EOS ignored so every run makes the
same number of tokens):
- dynexport runtime, OpenVINO: target alone; speculative with k = 1..8 and adaptive; greedy and T = 0.7;
- openvino_genai.LLMPipeline on the same target weights, alone and with `draft_model` = the same
  draft layers and weights (as a plain Llama checkpoint: genai cannot take a truncated vocabulary, so
  its draft computes the full 49,152-token head; noted in the JSON);
- per precision (fp16 / int8 weights; f32 compute and f32 KV cache everywhere).
Wall time is measured around each generate call; TTFT/TPOT come from each runtime's own stats.
Also recorded: the target's cost of verifying n = 1..16 positions in one call, the draft cost ratio c,
acceptance α, and the theoretical speed-up (1−α^{k+1})/((1−α)(kc+1)) beside the measured one.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from dynexport.bench.lm import (
    GENAI_CFG,
    acceptance_by_depth,
    aggregate,
    common_args,
    ensure_genai,
    ensure_speculative,
    genai,
    genai_run,
    interleaved,
    measure_precisions,
    ours,
    verify_cost_curve,
)

ROOT = Path(__file__).resolve().parents[1]


def theoretical(alpha: float, k: int, c: float) -> float:
    return (1 - alpha ** (k + 1)) / ((1 - alpha) * (k * c + 1)) if alpha < 1 else (k + 1) / (k * c + 1)


def measure(precision: str, args, prompts: list[dict]) -> dict:
    import openvino_genai as og

    from dynexport.runtime import load
    art = ensure_speculative(args.draft, precision)
    gt, gd = ensure_genai(args.draft, precision)
    pipe = load(art, "openvino")
    g_target = og.LLMPipeline(str(gt), "CPU", **GENAI_CFG)
    g_spec = og.LLMPipeline(str(gt), "CPU", draft_model=og.draft_model(str(gd), "CPU", **GENAI_CFG), **GENAI_CFG)
    configs = [("ours", "target", 0)] + [("ours", f"k={k}", k) for k in args.ks]
    configs += [("ours", "adaptive", "adaptive")]
    configs += [("genai", "target", 0)] + [("genai", f"speculative k={k}", k) for k in args.genai_ks]
    runners = {"ours": lambda p, k, s, seed: ours(pipe, p, args.max_new_tokens, s, seed, draft=k),
               "genai": lambda p, k, s, seed: genai(g_spec if k else g_target, p, args.max_new_tokens, k, s, seed)}
    for lib, _, k in configs:  # warm-up: first calls allocate
        runners[lib](prompts[0]["prompt"], k, False, 0)
    results = {}
    for mode, sample in (("greedy", False), ("sample_t0.7", True)):
        per, failed = interleaved(configs, runners, prompts, sample, f"{precision} {mode}")
        results[mode] = {key: aggregate(v) for key, v in per.items()}
        results[mode].update({key: {"error": msg} for key, msg in failed.items()})
        if not sample:
            ref = per["ours/target"]
            results[mode]["greedy_identical_to_target"] = {
                key: sum(a["ids"] == b["ids"] for a, b in zip(v, ref)) / len(ref)
                for key, v in per.items() if key.startswith("ours/")}
            results[mode]["genai_target_text_identical"] = sum(
                pipe.tokenizer.decode(a["ids"]) == b["text"] for a, b in zip(ref, per["genai/target"])) / len(ref)
    c = float(pipe.manifest.defaults.draft_cost_ratio)
    run = {"precision": precision, "artifact": art.name, "draft_cost_ratio": c,
            "verify_slope": pipe.manifest.defaults.verify_slope,
            "genai_draft_note": "genai's draft is the same layers and weights with the full-vocabulary head "
                                "(it cannot take a truncated vocabulary)",
            "verify_cost_ms": verify_cost_curve(pipe), "results": results}
    add_theory(run)
    return run


def summarize(runs: list[dict]) -> dict:
    """Best greedy OpenVINO setting of the dynexport runtime vs target-only and vs openvino_genai. Only
    honest settings compete: greedy output identical to the target's on every prompt."""
    best = None
    for run in runs:
        g = run["results"]["greedy"]
        identical = g["greedy_identical_to_target"]
        for key, v in g.items():
            if (key.startswith("ours/") and key != "ours/target" and isinstance(v, dict) and "tok_per_s" in v
                    and identical[key] == 1.0):
                cand = (v["tok_per_s"], run, key)
                best = max(best, cand, key=lambda x: x[0]) if best else cand
    if best is None:
        raise RuntimeError("no speculative setting gave greedy output identical to the target's")
    tok_s, run, key = best
    g = run["results"]["greedy"]
    genai_spec = max((v["tok_per_s"], k) for k, v in g.items()
                     if k.startswith("genai/speculative") and "tok_per_s" in v)
    return {"speedup_vs_target": tok_s / g["ours/target"]["tok_per_s"],
            "speedup_vs_genai_speculative": tok_s / genai_spec[0],
            "speedup_vs_genai_target": tok_s / g["genai/target"]["tok_per_s"],
            "setting": key.split("/", 1)[1], "precision": run["precision"], "mode": "greedy", "backend": "openvino",
            "tok_per_s": tok_s, "target_tok_per_s": g["ours/target"]["tok_per_s"],
            "genai_speculative_best": genai_spec[1], "genai_speculative_tok_per_s": genai_spec[0],
            "acceptance_rate": g[key].get("acceptance_rate"),
            "mean_accepted_length": g[key].get("mean_accepted_length"),
            "draft_cost_ratio": run["draft_cost_ratio"],
            "targets": {"speedup_vs_target": 2.0, "speedup_vs_genai_speculative": 1.2}}


def add_theory(run: dict) -> None:
    """α from k = 1 (there a round's acceptance is exactly one Bernoulli draw) and the measured c: the
    issue's formula (a verify call costs one target call), and the same with the measured cost of
    verifying k + 1 positions in one call (the verify curve) instead of 1."""
    curve = {r["n"]: r["ms"] for r in run["verify_cost_ms"]}
    for g in run["results"].values():
        alpha = g.get("ours/k=1", {}).get("acceptance_rate")
        if alpha is None:
            continue
        base = g["ours/target"]["tok_per_s"]
        for key, v in g.items():
            if key.startswith("ours/k="):
                k = int(key.split("=")[1])
                c = run["draft_cost_ratio"]
                v["measured_speedup"] = v["tok_per_s"] / base
                v["theoretical_speedup"] = theoretical(alpha, k, c)
                if k + 1 in curve:
                    verify = curve[k + 1] / curve[1]
                    v["theoretical_speedup_measured_verify"] = (
                        theoretical(alpha, k, c) * (k * c + 1) / (k * c + verify))
        g["alpha_k1"] = alpha


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for run in runs:
        for ax, mode in zip(axes, ("greedy", "sample_t0.7")):
            g = run["results"][mode]
            ks = sorted(int(k.split("=")[1]) for k in g if k.startswith("ours/k="))
            ax.plot(ks, [g[f"ours/k={k}"]["tok_per_s"] for k in ks], "o-", label=f"dynexport {run['precision']}")
            for key, style in (("ours/target", "-"), ("genai/target", "--")):
                ax.axhline(g[key]["tok_per_s"], ls=style, lw=1, c="gray" if "ours" in key else "k")
            gk = sorted(int(k.split("=")[1]) for k in g if k.startswith("genai/speculative k=") and "tok_per_s" in g[k])
            ax.plot(gk, [g[f"genai/speculative k={k}"]["tok_per_s"] for k in gk], "s:",
                    label=f"genai spec {run['precision']}")
            ax.plot([g["ours/adaptive"]["mean_k"]], [g["ours/adaptive"]["tok_per_s"]], "*", ms=13,
                    label=f"dynexport adaptive {run['precision']}")
            ax.set(title=f"{mode}: tok/s vs draft length k (lines: target alone; solid ours, dashed genai)",
                   xlabel="k (draft tokens per round)", ylabel="tokens / s")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---- the real-size pair (--pair qwen) ----

def pair_configs(args, precision: str) -> tuple[list[tuple], dict, dict]:
    """(configs, runners, info) for one precision: our rows on two artifacts (+ EAGLE when a head is
    trained), genai's in fresh pipelines; info: per-pipeline load RSS and the artifacts' costs."""
    from dynexport.bench import pair
    from dynexport.runtime import load
    eagle = (args.eagle_head / "eagle.json").is_file()  # a trained head: its artifact is exported if a row uses it
    makers = {"ours": lambda: load(pair.speculative_artifact(precision), "openvino"),
              "ours-v": lambda: load(pair.speculative_artifact(precision, pair.VOCAB_CUT), "openvino"),
              "eagle": lambda: load(pair.eagle_artifact(precision, args.eagle_head), "openvino")}
    for name, draft in (("genai", False), ("genai-k3", True), ("genai-k5", True), ("genai-thr", True)):
        makers[name] = lambda draft=draft: pair.genai_pipeline(precision, draft)
    configs = [("ours", "target", ("ours", 0))] + [("ours", f"k={k}", ("ours", k)) for k in args.ks]
    configs += [("ours", "adaptive", ("ours", "adaptive")), ("ours", f"vocab{pair.VOCAB_CUT} k=3", ("ours-v", 3)),
                ("ours", f"vocab{pair.VOCAB_CUT} adaptive", ("ours-v", "adaptive"))]
    if eagle:
        configs += [("ours", "eagle chain k=4", ("eagle", 4)), ("ours", "eagle tree", ("eagle", "tree"))]
    configs += [("genai", "target", ("genai", {})),
                ("genai", "speculative k=3", ("genai-k3", {"num_assistant_tokens": 3})),
                ("genai", "speculative k=5", ("genai-k5", {"num_assistant_tokens": 5})),
                ("genai", "speculative threshold=0.4", ("genai-thr", {"assistant_confidence_threshold": 0.4}))]
    configs = chosen_rows(configs, args.rows)
    pipes, info = {}, {"load_rss_mb": {}, "row_pipe": {f"{lib}/{name}": a[0] for lib, name, a in configs}}
    for name in dict.fromkeys(a[0] for _, _, a in configs):  # load only the pipelines the rows use
        before = pair.rss_mb()
        pipes[name] = makers[name]()
        info["load_rss_mb"][name] = round(pair.rss_mb() - before)
    n = args.max_new_tokens
    runners = {"ours": lambda p, a, s, seed: ours(pipes[a[0]], p, n, s, seed, draft=a[1]),
               "genai": lambda p, a, s, seed: genai_run(pipes[a[0]], p, n, s, seed, **a[1])}
    info["costs"] = {name: {"verify_ms": p.manifest.verify_ms, "defaults": p.manifest.defaults.model_dump()}
                     for name, p in pipes.items() if hasattr(p, "manifest")}
    return configs, runners, info | {"pipes": pipes}


def chosen_rows(configs: list[tuple], rows: list[str] | None) -> list[tuple]:
    """The configurations named in --rows ("lib/name"; all when None). Both targets alone are always
    kept: every ratio is against them."""
    if not rows:
        return configs
    names = [f"{lib}/{name}" for lib, name, _ in configs]
    unknown = sorted(set(rows) - set(names))
    if unknown:
        raise SystemExit(f"--rows: unknown {unknown}; available: {names}")
    return [c for c, k in zip(configs, names) if k in rows or k in ("ours/target", "genai/target")]


def pair_row(runs: list[dict]) -> dict:
    from dynexport.bench import pair
    row = aggregate(runs) | {"decode_tok_per_s": pair.decode_tok_s(runs)}
    if "accepted_lengths" in runs[0]:
        row["acceptance_by_depth"] = acceptance_by_depth(runs, 6)
    return row


def measure_pair(args, precision: str, prompts: list[dict]) -> dict:
    from dynexport.bench import pair
    configs, runners, info = pair_configs(args, precision)
    pipes = info.pop("pipes")
    warm = "def add(a, b):\n    "  # not a benchmark prompt: nothing of it is cached for a measured one
    for lib, _, arg in configs:
        runners[lib](warm, arg, False, 0)
    results = {}
    for mode in args.modes:
        sample = mode != "greedy"
        per, failed = interleaved(configs, runners, prompts, sample, f"{precision} {mode}")
        results[mode] = {key: pair_row(v) for key, v in per.items()}
        results[mode].update({key: {"error": msg} for key, msg in failed.items()})
        speed = lambda r: r["tokens"] / r["wall_s"]
        for key, v in per.items():  # prompt by prompt vs our target alone on the same prompt
            if key.startswith("ours/") and key != "ours/target":
                ratios = [speed(a) / speed(b) for a, b in zip(v, per["ours/target"])]
                results[mode][key] |= {"min_prompt_speedup": min(ratios), "median_prompt_speedup": statistics.median(ratios)}
        if not sample:
            ref = per["ours/target"]
            results[mode]["greedy_identical_to_target"] = {
                key: sum(a["ids"] == b["ids"] for a, b in zip(v, ref)) / len(ref)
                for key, v in per.items() if key.startswith("ours/")}
            tok = pipes["ours"].tokenizer
            results[mode]["genai_greedy_identical_to_its_target"] = {
                key: sum(a["text"] == b["text"] for a, b in zip(v, per["genai/target"])) / len(ref)
                for key, v in per.items() if key.startswith("genai/")}
            results[mode]["genai_target_text_identical_to_ours"] = sum(
                tok.decode(a["ids"]) == b["text"] for a, b in zip(ref, per["genai/target"])) / len(ref)
    curve = info["costs"]["ours"]["verify_ms"]
    return {"precision": precision, "draft_format": pair.DRAFT_FORMAT, "cpu_count": os.cpu_count(),
            "verify_ms": curve, "ceiling_perfect_draft": pair.ceiling(curve), "peak_rss_mb": round(pair.peak_rss_mb()),
            **info, "results": results}


def summarize_pair(runs: list[dict]) -> dict:
    """The issue's keys: best honest (greedy-identical) setting of ours vs our target alone, vs genai's
    best speculative setting and vs genai's target alone (end to end), per the first precision's run."""
    run = runs[0]
    g = run["results"]["greedy"]
    same = g["greedy_identical_to_target"]
    honest = [(v["tok_per_s"], k) for k, v in g.items() if k.startswith("ours/") and k != "ours/target"
              and "tok_per_s" in v and same.get(k) == 1.0]
    tok_s, key = max(honest) if honest else (float("nan"), None)
    genai_spec = max(((v["tok_per_s"], k) for k, v in g.items() if k.startswith("genai/speculative") and "tok_per_s" in v),
                     default=(float("nan"), None))
    ours_t, genai_t = g["ours/target"], g["genai/target"]
    best = g.get(key, {})
    adaptive = [k for k in g if k.startswith("ours/") and "adaptive" in k and "tok_per_s" in g[k]]
    worst = {k: g[k].get("min_prompt_speedup") for k in adaptive}
    costs = run["costs"][run["row_pipe"][key]]["defaults"] if key else {}
    cost_ratio = costs.get("draft_cost_ratio", costs.get("head_cost_ratio"))
    return {"speedup_vs_target": tok_s / ours_t["tok_per_s"], "speedup_vs_genai_speculative": tok_s / genai_spec[0],
            "speedup_vs_genai_target": tok_s / genai_t["tok_per_s"],
            "target_vs_genai_target": ours_t["tok_per_s"] / genai_t["tok_per_s"],
            "target_vs_genai_target_decode": ours_t["decode_tok_per_s"] / genai_t["decode_tok_per_s"],
            "target_vs_genai_target_ttft": genai_t["ttft_ms"] / ours_t["ttft_ms"],
            "acceptance_rate": best.get("acceptance_rate"), "mean_accepted_length": best.get("mean_accepted_length"),
            "draft_cost_ratio": cost_ratio, "setting": key and key.split("/", 1)[1],
            "precision": run["precision"], "mode": "greedy", "greedy_identical": same.get(key),
            "greedy_identical_all": same, "genai_speculative_best": genai_spec[1],
            "adaptive_vs_target": {k: g[k]["tok_per_s"] / ours_t["tok_per_s"] for k in adaptive},
            "adaptive_worst_prompt_vs_target": worst,
            "ceiling_perfect_draft": run["ceiling_perfect_draft"]["speedup"], "cpu_count": run["cpu_count"],
            "targets": {"speedup_vs_target": 1.5, "speedup_vs_genai_speculative": 1.3, "target_vs_genai_target": 0.95,
                        "greedy_identical": 1.0, "adaptive_vs_target": 0.98, "adaptive_worst_prompt_vs_target": 0.90}}


def plot_pair(runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    ax = axes[0]
    for run in runs:
        for mode, g in run["results"].items():
            rows = [(k, v) for k, v in g.items() if isinstance(v, dict) and "tok_per_s" in v]
            names = [f"{k} [{run['precision']} {mode}]" for k, _ in rows]
            ax.barh(names, [v["tok_per_s"] for _, v in rows],
                    color=["tab:blue" if k.startswith("ours") else "tab:gray" for k, _ in rows])
    ax.set(xlabel="tokens / s end to end (blue: dynexport, gray: openvino_genai)", title="Qwen2.5-Coder-1.5B")
    ax.tick_params(axis="y", labelsize=6)
    ax = axes[1]
    for run in runs:
        c = run["verify_ms"]
        n = sorted(int(k) for k in c)
        ax.plot(n, [c[str(i)] / c["1"] for i in n], "o-", label=f"{run['precision']} target, {run['cpu_count']} CPUs")
    ax.plot([1, 64], [1, 64], ":", c="gray", label="cost ∝ positions")
    ax.set(xscale="log", yscale="log", xlabel="positions in one target call",
           ylabel="call time / one-token call", title="verify-cost curve")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main_pair(args) -> None:
    from dynexport.bench.env import environment, write_json
    from dynexport.lm_data import humaneval
    prompts = [{"kind": "humaneval", "task_id": p["task_id"], "prompt": p["prompt"]} for p in humaneval(args.prompts)]
    env, runs = environment(ROOT), []
    for precision in args.precisions:
        print(f"measuring {precision} ...", flush=True)
        runs.append(measure_pair(args, precision, prompts))
        write_json(args.out, {"env": env, "args": {k: str(v) for k, v in vars(args).items()}, "prompts": prompts,
                              "runs": runs, "summary": summarize_pair(runs)})
    plot_pair(runs, args.out.with_suffix(".png"))
    s = summarize_pair(runs)
    print(f"best: {s['setting']} {s['precision']}: {s['speedup_vs_target']:.2f}x vs target alone, "
          f"{s['speedup_vs_genai_speculative']:.2f}x vs genai speculative; target alone "
          f"{s['target_vs_genai_target']:.2f}x genai's")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 2, 3, 4, 6, 8])
    ap.add_argument("--genai-ks", nargs="+", type=int, default=[3, 5])
    ap.add_argument("--pair", choices=["smollm2", "qwen"], default="smollm2",
                    help="qwen: Qwen2.5-Coder-1.5B + 0.5B / EAGLE on HumanEval → benchmarks/speculative_qwen.json")
    ap.add_argument("--modes", nargs="+", default=["greedy", "sample_t0.7"], help="--pair qwen: greedy, sample_t0.7")
    ap.add_argument("--eagle-head", type=Path, default=Path.home() / ".cache" / "dynexport" / "heads" / "qwen2.5-coder-1.5b",
                    help="--pair qwen: the EAGLE head dir (scripts/train_eagle.py); rows skipped if absent")
    ap.add_argument("--rows", nargs="+", default=None,
                    help="--pair qwen: only these rows (e.g. 'ours/eagle tree' 'genai/speculative k=5'; both targets "
                         "alone always run); write them with --out to a file of their own")
    common_args(ap, ROOT, "speculative.json", 24)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--pair", default="smollm2")
    if pre.parse_known_args()[0].pair == "qwen":  # the pair's own defaults (the benchmark)
        ap.set_defaults(precisions=["int8", "int4"], max_new_tokens=128, ks=[1, 2, 3, 4, 5, 6],
                        out=ROOT / "benchmarks" / "speculative_qwen.json")
    args = ap.parse_args()
    if args.pair == "qwen":
        return main_pair(args)
    payload = measure_precisions(args, measure, summarize, ROOT)
    plot(payload["runs"], args.out.with_suffix(".png"))
    s = payload["summary"]
    print(f"best: {s['setting']} {s['precision']}: {s['speedup_vs_target']:.2f}x vs target alone, "
          f"{s['speedup_vs_genai_speculative']:.2f}x vs genai speculative, {s['speedup_vs_genai_target']:.2f}x vs "
          f"genai target alone (acceptance {s['acceptance_rate']:.2f}, c = {s['draft_cost_ratio']:.3f})")


if __name__ == "__main__":
    main()
