"""Print benchmarks/speculative.json as the markdown tables used in the README (no figure is typed by hand).

    python scripts/report_speculative.py [benchmarks/speculative.json]
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


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks" / "speculative.json"
    bench = json.loads(path.read_text())
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
