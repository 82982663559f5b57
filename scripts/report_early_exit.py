"""Print benchmarks/early_exit.json as the markdown tables used in the README (no figure is typed by hand).

    python scripts/report_early_exit.py [benchmarks/early_exit.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks" / "early_exit.json"
    bench = json.loads(path.read_text())
    env, s = bench["env"], bench["summary"]
    print(f"Measured {env['utc'][:10]} on {env['cpu']} ({env['affinity_cpus']} cores), commit "
          f"{env['git_commit'][:12]}, openvino {env['versions']['openvino']}, onnxruntime "
          f"{env['versions']['onnxruntime']}; test split n = {bench['runs'][0]['test_samples']}, "
          f"wall time on the first {bench['runs'][0]['timing_samples']} test tweets, median of "
          f"{bench['args']['repeats']} interleaved repeats.\n")
    print("| exits | precision | backend | acc full | acc early exit | drop (pt) | speed-up b=1 | "
          "speed-up b=32 | ms/sample full → EE (b=1) | expected (val cost model) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in bench["runs"]:
        b1, b32 = r["batch"]["1"], r["batch"]["32"]
        ms = b1["per_sample_ms"]
        print(f"| {','.join(map(str, r['exits']))} | {r['precision']} | {r['backend']} | {r['accuracy_full']:.2f} | "
              f"{r['accuracy_early_exit']:.2f} | {r['accuracy_drop_pt']:.2f} | **{b1['speedup']:.2f}x** | "
              f"{b32['speedup']:.2f}x | {ms['full']:.1f} → {ms['early_exit']:.1f} | {r['expected_speedup']:.2f}x |")
    print(f"\nSummary (best batch-1 OpenVINO setting with test drop ≤ {s['target']['max_accuracy_drop_pt']} pt): "
          f"exits {s['exits']}, {s['precision']}: **{s['speedup']:.2f}x** at {s['accuracy_drop_pt']:.2f} pt "
          f"({s['accuracy_full']:.2f}% → {s['accuracy_early_exit']:.2f}%); target ≥ {s['target']['speedup']}x "
          f"{'met' if s['meets_target'] else 'NOT met'}.")


if __name__ == "__main__":
    main()
