"""EAGLE benchmark → benchmarks/eagle.json + benchmarks/eagle.png.

    python scripts/bench_eagle.py [--precisions fp16 int8] [--prompts 24] [--max-new-tokens 64]
        [--head dynexport/weights/eagle/smollm2-135m-eagle] [--draft dynexport/weights/speculative/smollm2-135m-draft]

The harness of the speculative benchmark (`dynexport.bench.lm`: same held-out prompts, configurations
interleaved prompt by prompt, EOS ignored, greedy and T = 0.7), on one machine in one run:
- EAGLE (dynexport runtime, OpenVINO): target alone; chains k = 1..6; fixed trees (depth, top-k,
  tokens); the dynamic tree sized per round from the measured target cost (the export's default);
- the separate draft model of issue 4 (its speculative artifact, same target weights): adaptive and k = 1, 2;
- openvino_genai.LLMPipeline target alone (optimum-cli export of the same target).
Per configuration: tok/s, TTFT, TPOT, mean accepted length τ (tokens per target call), acceptance by
depth, head calls per round; per precision the target's measured call time for n = 1..64 positions
(and, for comparison, that of optimum-intel's export of the same target) and the head's cost ratio c,
with the speed-up they predict from τ beside the measured one, and the chain speed-up the measured
costs allow at each per-depth acceptance α (`chain_ceiling`: the α a head would need for 2.5x here).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dynexport import paths
from dynexport.bench.lm import (
    GENAI_CFG,
    OUT_ROOT,
    acceptance_by_depth,
    aggregate,
    common_args,
    ensure_genai,
    ensure_speculative,
    genai,
    interleaved,
    measure_precisions,
    optimum_cost_curve,
    ours,
    verify_cost_curve,
)

ROOT = Path(__file__).resolve().parents[1]
CHAINS = (1, 2, 3, 4, 6)
TREES = ((4, 4, 8), (5, 6, 16), (6, 8, 32))  # depth, top-k, tokens


def ensure_eagle(head: Path, precision: str, suffix: str = "") -> Path:
    from dynexport.manifest import sha256_file
    out = OUT_ROOT / f"smollm2-eagle-{precision}{suffix}"
    m = out / "manifest.json"
    if not m.is_file() or json.loads(m.read_text())["source"]["head_sha256"] != sha256_file(head / "eagle.safetensors"):
        from dynexport import methods
        recipe = methods.get("eagle").load_recipe(None, {"head": str(head), "quantization.weight_format": precision})
        methods.export("eagle", recipe, out, overwrite=True, formats=("openvino",))
    return out


def full_vocab_head(head: Path) -> Path:
    """The same trained head with the target's full vocabulary (vocab_ids = all ids): the EAGLE-3
    truncation measured against no truncation on identical weights (the head's layer and fc do not
    depend on the vocabulary; only the output rows of the target's LM head do)."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from dynexport.manifest import sha256_file
    out = OUT_ROOT / "eagle-head-full-vocab"
    src_sha = sha256_file(head / "eagle.safetensors")
    stamp = out / "made-from-sha256.txt"
    if stamp.is_file() and stamp.read_text() == src_sha:
        return out
    import numpy as np

    from dynexport.models.gguf import smollm2_dir
    t = load_file(str(head / "eagle.safetensors"))
    vocab = load_file(str(smollm2_dir() / "model.safetensors"))["model.embed_tokens.weight"].shape[0]
    t["vocab_ids"] = np.arange(vocab, dtype=np.int64)
    out.mkdir(parents=True, exist_ok=True)
    save_file(t, str(out / "eagle.safetensors"))
    shutil.copy2(head / "eagle.json", out / "eagle.json")
    stamp.write_text(src_sha)
    return out


def configs() -> list[tuple]:
    from dynexport.runtime import TreeCfg
    out = [("eagle", "target", {"draft": 0})]
    out += [("eagle", f"chain k={k}", {"draft": k}) for k in CHAINS]
    out += [("eagle", f"tree {d},{t},{n}", {"draft": TreeCfg(depth=d, topk=t, max_tokens=n, dynamic=False)})
            for d, t, n in TREES]
    out += [("eagle", "tree dynamic", {"draft": "tree"})]
    out += [("eagle_full", "full vocab chain k=3", {"draft": 3}),
            ("eagle_full", "full vocab tree dynamic", {"draft": "tree"})]
    out += [("draft", "adaptive", "adaptive"), ("draft", "k=1", 1), ("draft", "k=2", 2), ("genai", "target", 0)]
    return out


def measure(precision: str, args, prompts: list[dict]) -> dict:
    import openvino_genai as og

    from dynexport.runtime import load
    eagle = load(ensure_eagle(args.head, precision), "openvino")
    eagle_full = load(ensure_eagle(full_vocab_head(args.head), precision, "-full-vocab"), "openvino")
    draft = load(ensure_speculative(args.draft, precision), "openvino")
    g_target = og.LLMPipeline(str(ensure_genai(args.draft, precision)[0]), "CPU", **GENAI_CFG)
    n = args.max_new_tokens
    runners = {"eagle": lambda p, kw, s, seed: ours(eagle, p, n, s, seed, **kw),
               "eagle_full": lambda p, kw, s, seed: ours(eagle_full, p, n, s, seed, **kw),
               "draft": lambda p, k, s, seed: ours(draft, p, n, s, seed, draft=k),
               "genai": lambda p, k, s, seed: genai(g_target, p, n, k, s, seed)}
    cfgs = configs()
    for lib, _, arg in cfgs:  # warm-up: first calls allocate
        runners[lib](prompts[0]["prompt"], arg, False, 0)
    results = {}
    for mode, sample in (("greedy", False), ("sample_t0.7", True)):
        per, failed = interleaved(cfgs, runners, prompts, sample, f"{precision} {mode}")
        results[mode] = {key: aggregate(v) | {"acceptance_by_depth": acceptance_by_depth(v, 8)}
                         for key, v in per.items()}
        results[mode].update({key: {"error": msg} for key, msg in failed.items()})
        if not sample:
            ref = per["eagle/target"]
            results[mode]["greedy_identical_to_target"] = {
                key: sum(a["ids"] == b["ids"] for a, b in zip(v, ref)) / len(ref)
                for key, v in per.items() if not key.startswith("genai/")}
    curve = verify_cost_curve(eagle, n_max=64, repeats=5)
    run = {"precision": precision, "head_cost_ratio": float(eagle.manifest.defaults.head_cost_ratio),
           "full_vocab_head_cost_ratio": float(eagle_full.manifest.defaults.head_cost_ratio),
           "export_verify_ms": eagle.manifest.verify_ms, "verify_cost_ms": curve,
           "optimum_export_cost_ms": optimum_cost_curve(ensure_genai(args.draft, precision)[0]), "results": results}
    add_theory(run)
    run["chain_ceiling"] = chain_ceiling(run)
    return run


def add_theory(run: dict) -> None:
    """Speed-up predicted by τ and the measured costs: τ / (verify(n̄+1)/verify(1) + head calls per round · c),
    n̄ the mean tree size; next to the measured ratio to EAGLE's own target-only run."""
    import numpy as np
    ns = np.array([r["n"] for r in run["verify_cost_ms"]], float)
    ms = np.array([r["ms"] for r in run["verify_cost_ms"]], float)
    c = run["head_cost_ratio"]
    for g in run["results"].values():
        base = g["eagle/target"]["tok_per_s"]
        for key, v in g.items():
            if key.startswith("eagle") and "mean_k" in v:
                verify = float(np.interp(v["mean_k"] + 1, ns, ms)) / ms[0]
                calls = v["draft_calls"] / (v["target_calls"] or 1)
                cost = run["full_vocab_head_cost_ratio"] if key.startswith("eagle_full/") else c
                v["theoretical_speedup"] = v["mean_accepted_length"] / (verify + calls * cost)
                v["measured_speedup"] = v["tok_per_s"] / base


def chain_ceiling(run: dict, k_max: int = 8) -> dict:
    """What this machine allows a chain head: with per-depth acceptance α (each drafted token accepted
    with probability α given its prefix was), a chain of k gives τ = (1 − α^(k+1)) / (1 − α) tokens per
    round at cost verify(k+1)/verify(1) + k·c target calls; the best k per α from the measured costs,
    the α needed for 2.5x, and the α this head measures (greedy chain k=1's acceptance)."""
    import numpy as np
    ns = np.array([r["n"] for r in run["verify_cost_ms"]], float)
    ms = np.array([r["ms"] for r in run["verify_cost_ms"]], float)
    c = run["head_cost_ratio"]

    def best(alpha: float) -> tuple[float, int]:
        return max(((1 - alpha ** (k + 1)) / (1 - alpha) / (np.interp(k + 1, ns, ms) / ms[0] + k * c), k)
                   for k in range(1, k_max + 1))
    grid = [round(float(a), 2) for a in np.arange(0.05, 0.96, 0.05)]
    curve = [{"alpha": a, "speedup": round(float(best(a)[0]), 3), "k": best(a)[1]} for a in grid]
    needed = next((r["alpha"] for r in curve if r["speedup"] >= 2.5), None)
    measured = run["results"]["greedy"].get("eagle/chain k=1", {}).get("acceptance_rate")
    return {"curve": curve, "alpha_for_2.5x": needed, "alpha_measured": measured,
            "speedup_at_measured_alpha": round(float(best(measured)[0]), 3) if measured else None}


def summarize(runs: list[dict]) -> dict:
    """Best greedy EAGLE setting (greedy output identical to the target's on every prompt) vs the target
    alone, the best separate-draft setting and openvino_genai's target alone, all from the same run."""
    best = None
    for run in runs:
        g = run["results"]["greedy"]
        for key, v in g.items():
            ok = g["greedy_identical_to_target"].get(key) == 1.0
            if key.startswith("eagle") and key != "eagle/target" and ok and "tok_per_s" in v:
                best = max(best or (0, None, None), (v["tok_per_s"], run, key), key=lambda x: x[0])
    if best is None:
        raise RuntimeError("no EAGLE setting gave greedy output identical to the target's")
    tok_s, run, key = best
    g = run["results"]["greedy"]
    draft_best = max((v["tok_per_s"], k) for k, v in g.items() if k.startswith("draft/") and "tok_per_s" in v)
    return {"speedup_vs_target": tok_s / g["eagle/target"]["tok_per_s"], "tau": g[key]["mean_accepted_length"],
            "speedup_vs_draft_model": tok_s / draft_best[0], "speedup_vs_genai": tok_s / g["genai/target"]["tok_per_s"],
            "setting": key.split("/", 1)[1], "precision": run["precision"], "mode": "greedy", "backend": "openvino",
            "tok_per_s": tok_s, "target_tok_per_s": g["eagle/target"]["tok_per_s"], "draft_model_best": draft_best[1],
            "acceptance_by_depth": g[key]["acceptance_by_depth"], "head_cost_ratio": run["head_cost_ratio"],
            "chain_alpha_measured": run["chain_ceiling"]["alpha_measured"],
            "chain_alpha_for_2.5x": run["chain_ceiling"]["alpha_for_2.5x"],
            "targets": {"speedup_vs_target": 2.5, "tau": 3.0, "speedup_vs_draft_model": 1.0}}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(22, 4.8))
    for run in runs:
        for ax, mode in zip(axes[:2], ("greedy", "sample_t0.7")):
            g = run["results"][mode]
            keys = [k for k in g if isinstance(g[k], dict) and "tok_per_s" in g[k]]
            ax.barh([f"{run['precision']} {k}" for k in keys], [g[k]["tok_per_s"] for k in keys])
            ax.set(title=f"{mode}: tokens / s (64 new tokens, held-out prompts)", xlabel="tokens / s")
        axes[2].plot([r["n"] for r in run["verify_cost_ms"]], [r["ms"] for r in run["verify_cost_ms"]], "o-",
                     label=f"target call, {run['precision']}")
        axes[2].plot([r["n"] for r in run["optimum_export_cost_ms"]], [r["ms"] for r in run["optimum_export_cost_ms"]],
                     "x--", label=f"optimum-intel export of the target, {run['precision']}")
        ceil = run["chain_ceiling"]
        line, = axes[3].plot([r["alpha"] for r in ceil["curve"]], [r["speedup"] for r in ceil["curve"]], "-",
                             label=f"best chain predicted, {run['precision']}")
        if ceil["alpha_measured"]:
            g = run["results"]["greedy"]
            axes[3].plot([ceil["alpha_measured"]], [g["eagle/chain k=1"]["measured_speedup"]], "*", ms=14,
                         color=line.get_color(), label=f"this head, chain k=1 measured, {run['precision']}")
    axes[2].set(title="target call time vs positions verified", xlabel="positions in one call", ylabel="ms")
    axes[3].axhline(2.5, ls=":", c="gray")
    axes[3].set(title="chain speed-up the measured costs allow", xlabel="per-depth acceptance α",
                ylabel="speed-up vs target alone (x)")
    for ax in axes[2:]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head", type=Path, default=paths.committed("eagle") / "smollm2-135m-eagle")
    common_args(ap, ROOT, "eagle.json", 24)  # the speculative benchmark's prompts
    args = ap.parse_args()
    payload = measure_precisions(args, measure, summarize, ROOT)
    plot(payload["runs"], args.out.with_suffix(".png"))
    s = payload["summary"]
    print(f"best: {s['setting']} {s['precision']}: {s['speedup_vs_target']:.2f}x vs target alone (tau {s['tau']:.2f}), "
          f"{s['speedup_vs_draft_model']:.2f}x vs the separate draft ({s['draft_model_best']}), "
          f"{s['speedup_vs_genai']:.2f}x vs genai target alone")


if __name__ == "__main__":
    main()
