"""Print benchmarks/speculative.json (or the real pair's speculative_qwen.json) as the markdown tables used
in the docs (no figure is typed by hand).

    python scripts/report_speculative.py [benchmarks/speculative.json | benchmarks/speculative_qwen.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fmt(v, spec: str = ".2f", none: str = "–") -> str:
    return none if v is None else format(v, spec)


def table(run: dict, mode: str) -> None:
    g = run["results"][mode]
    base, gbase = g["ours/target"]["tok_per_s"], g["genai/target"].get("tok_per_s")
    ident = g.get("greedy_identical_to_target", {})
    print(f"\n{run['precision']} weights, {mode} (α from k = 1: {fmt(g.get('alpha_k1'))}, "
          f"c = {run['draft_cost_ratio']:.3f}):\n")
    print("| runtime / setting | tok/s | vs target alone | TTFT ms | TPOT ms | acceptance | mean accepted length | "
          "theory (1−α^(k+1))/((1−α)(kc+1)) | theory, measured verify cost | greedy == target |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, v in g.items():
        if not isinstance(v, dict) or not key.startswith(("ours/", "genai/")) or key.startswith("greedy"):
            continue
        if "error" in v:
            print(f"| {key} | failed: {v['error'][:90]} | | | | | | | | |")
            continue
        ref = base if key.startswith("ours/") else gbase
        same = ident.get(key)
        print(f"| {key} | {v['tok_per_s']:.1f} | {v['tok_per_s'] / ref:.2f}x | {v['ttft_ms']:.1f} | "
              f"{v['tpot_ms']:.1f} | "
              f"{fmt(v.get('acceptance_rate'))} | {fmt(v.get('mean_accepted_length'))} | "
              f"{fmt(v.get('theoretical_speedup'))} | {fmt(v.get('theoretical_speedup_measured_verify'))} | "
              f"{'–' if same is None else f'{same:.0%}'} |")


def pair_table(run: dict, mode: str) -> None:
    g = run["results"][mode]
    base, gbase = g["ours/target"], g["genai/target"]
    same = {**g.get("greedy_identical_to_target", {}), **g.get("genai_greedy_identical_to_its_target", {})}
    print(f"\n{run['precision']} target, {run['draft_format']} 0.5B draft, {mode}, {run['cpu_count']} CPUs:\n")
    print("| runtime / setting | tok/s | vs its target alone | decode tok/s | TTFT ms | TPOT ms | α | α by depth 1..4 | "
          "τ | worst prompt | greedy == its target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, v in g.items():
        if not isinstance(v, dict) or not key.startswith(("ours/", "genai/")):
            continue
        if "error" in v:
            print(f"| {key} | failed: {v['error'][:90]} |" + " |" * 9)
            continue
        ref = base if key.startswith("ours/") else gbase
        depth = " ".join(f"{a:.2f}" for a in v.get("acceptance_by_depth", [])[:4]) or "–"
        print(f"| {key} | {v['tok_per_s']:.1f} | {v['tok_per_s'] / ref['tok_per_s']:.2f}x | "
              f"{v['decode_tok_per_s']:.1f} | {v['ttft_ms']:.0f} | {v['tpot_ms']:.1f} | {fmt(v.get('acceptance_rate'))} | "
              f"{depth} | {fmt(v.get('mean_accepted_length'))} | {fmt(v.get('min_prompt_speedup'), '.2f')} | "
              f"{'–' if same.get(key) is None else f'{same[key]:.0%}'} |")


def pair_main(bench: dict) -> None:
    env, s = bench["env"], bench["summary"]
    print(f"Measured {env['utc'][:10]} on {env['cpu']} ({env['affinity_cpus']} cores), commit "
          f"{env['git_commit'][:12]}, openvino {env['versions'].get('openvino')}, openvino_genai "
          f"{env['versions'].get('openvino-genai')}; {len(bench['prompts'])} HumanEval prompts × "
          f"{bench['args']['max_new_tokens']} new tokens, configurations interleaved prompt by prompt, genai in "
          f"fresh pipelines; tok/s = all tokens / all wall time, decode tok/s excludes the first token.")
    for run in bench["runs"]:
        c = run["verify_ms"]
        print(f"\nverify cost t(n)/t(1), {run['precision']} target (t(1) = {c['1']:.1f} ms): "
              + ", ".join(f"{n}: {ms / c['1']:.2f}" for n, ms in c.items())
              + f"; a perfect free draft allows {run['ceiling_perfect_draft']['speedup']:.1f}x "
              f"(k = {run['ceiling_perfect_draft']['k']}); draft cost ratio c = "
              f"{run['costs']['ours']['defaults']['draft_cost_ratio']}, {pair_vocab(run)}")
        if "eagle" in run["costs"]:
            e = run["costs"]["eagle"]
            print(f"\nEAGLE artifact's target (its own cpu_config): t(1) = {e['verify_ms']['1']:.1f} ms, t(n)/t(1) "
                  + ", ".join(f"{n}: {ms / e['verify_ms']['1']:.2f}" for n, ms in e["verify_ms"].items())
                  + f"; head cost ratio c = {e['defaults']['head_cost_ratio']}")
        for mode in run["results"]:
            pair_table(run, mode)
    t = s["targets"]
    verdict = lambda key: "met" if (s.get(key) or 0) >= t[key] else "NOT met"
    print(f"\nSummary ({s['precision']}, greedy): best honest setting {s['setting']}: "
          f"**{s['speedup_vs_target']:.2f}x** vs our target alone (≥ {t['speedup_vs_target']}x: "
          f"{verdict('speedup_vs_target')}), **{s['speedup_vs_genai_speculative']:.2f}x** vs genai's best "
          f"speculative ({s['genai_speculative_best']}; ≥ {t['speedup_vs_genai_speculative']}x: "
          f"{verdict('speedup_vs_genai_speculative')}); our target alone **{s['target_vs_genai_target']:.2f}x** "
          f"genai's end to end (decode {s['target_vs_genai_target_decode']:.2f}x, TTFT "
          f"{s['target_vs_genai_target_ttft']:.2f}x; ≥ {t['target_vs_genai_target']}: "
          f"{verdict('target_vs_genai_target')}); adaptive vs target alone "
          + ", ".join(f"{k.split('/', 1)[1]} {v:.2f}x (worst prompt {s['adaptive_worst_prompt_vs_target'][k] or 0:.2f}x)"
                      if s.get("adaptive_worst_prompt_vs_target") else f"{k.split('/', 1)[1]} {v:.2f}x"
                      for k, v in s["adaptive_vs_target"].items())
          + f"; ceiling with a perfect free draft {s['ceiling_perfect_draft']:.1f}x.")


def pair_vocab(run: dict) -> str:
    v = run["costs"].get("ours-v", {}).get("defaults", {}).get("draft_cost_ratio")
    return f"with the 32k-token vocabulary c = {v}" if v is not None else ""


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks" / "speculative.json"
    bench = json.loads(path.read_text())
    if "ceiling_perfect_draft" in bench["runs"][0]:
        return pair_main(bench)
    env, s, args = bench["env"], bench["summary"], bench["args"]
    print(f"Measured {env['utc'][:10]} on {env['cpu']} ({env['affinity_cpus']} cores), commit "
          f"{env['git_commit'][:12]}, openvino {env['versions'].get('openvino')}, openvino_genai "
          f"{env['versions'].get('openvino-genai')}; {len(bench['prompts'])} "
          f"held-out real prompts × {args['max_new_tokens']} new tokens per configuration, configurations "
          f"interleaved prompt by prompt; tok/s = all tokens / all wall time. Speed-ups of genai rows are vs "
          f"genai's own target-only run.")
    for run in bench["runs"]:
        for mode in run["results"]:
            table(run, mode)
    met = {k: "met" if s[k] >= s["targets"][k] else "NOT met" for k in ("speedup_vs_target",
                                                                        "speedup_vs_genai_speculative")}
    print(f"\nSummary (best greedy OpenVINO setting): {s['setting']}, {s['precision']}: "
          f"**{s['speedup_vs_target']:.2f}x** vs target alone (target ≥ {s['targets']['speedup_vs_target']}x: "
          f"{met['speedup_vs_target']}), "
          f"**{s['speedup_vs_genai_speculative']:.2f}x** vs openvino_genai speculative "
          f"({s['genai_speculative_best']}; target ≥ {s['targets']['speedup_vs_genai_speculative']}x: "
          f"{met['speedup_vs_genai_speculative']}), "
          f"{s['speedup_vs_genai_target']:.2f}x vs openvino_genai target alone; acceptance "
          f"{fmt(s['acceptance_rate'])}, mean accepted length {fmt(s['mean_accepted_length'])}, c = "
          f"{s['draft_cost_ratio']:.3f}.")


if __name__ == "__main__":
    main()
