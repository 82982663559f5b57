"""Cheap drafts for Qwen2.5-Coder-1.5B, measured → benchmarks/drafts_qwen.json

    python scripts/bench_drafts_qwen.py [--prompts 8] [--max-new-tokens 96]

Every variant of the 0.5B draft (int8 / int4 weights, a truncated vocabulary of 32k / 16k / 8k tokens,
its first 12 of 24 layers) is exported beside the same int8 target (exported_models/qwen/, reused by
scripts/bench_speculative.py --pair qwen), its costs re-measured on this machine (`calibrate`), then
run on the same HumanEval prompts, the target alone, k = 4 and adaptive interleaved prompt by prompt
(one variant loaded at a time: six 1.5B targets do not fit in 24 GB). Per variant: c (draft / target
one-token call), α and α by depth at k = 4, τ, tok/s vs the target alone measured beside it, greedy
identity.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name → draft_shape fields (draft = the 0.5B)
    "int8": {"draft_shape.weight_format": "int8"},
    "int4": {"draft_shape.weight_format": "int4"},
    "int4 vocab 32k": {"draft_shape.weight_format": "int4", "draft_shape.vocab_size": 32768},
    "int4 vocab 16k": {"draft_shape.weight_format": "int4", "draft_shape.vocab_size": 16384},
    "int4 vocab 8k": {"draft_shape.weight_format": "int4", "draft_shape.vocab_size": 8192},
    "int4 vocab 16k layers 0-11": {"draft_shape.weight_format": "int4", "draft_shape.vocab_size": 16384,
                                   "draft_shape.layers": list(range(12))},
}


def artifact(name: str, fields: dict) -> Path:
    from dynexport.bench import pair
    if set(fields) <= {"draft_shape.weight_format", "draft_shape.vocab_size"} and \
            fields["draft_shape.weight_format"] == pair.DRAFT_FORMAT:  # the main benchmark's artifacts
        return pair.speculative_artifact("int8", fields.get("draft_shape.vocab_size", 0))
    slug = name.replace(" ", "-")
    return pair.ensure_artifact(f"drafts-int8-{slug}", {
        "target": pair.TARGET, "draft": pair.DRAFT, "quantization.weight_format": "int8",
        "generation.num_draft_tokens": "adaptive", **fields})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "drafts_qwen.json")
    args = ap.parse_args()
    from dynexport.bench.env import environment, write_json
    from dynexport.bench.lm import acceptance_by_depth, aggregate, interleaved, ours
    from dynexport.lm_data import humaneval
    from dynexport.runtime import load
    from dynexport.runtime.costs import calibrate
    prompts = [{"prompt": p["prompt"], "task_id": p["task_id"]} for p in humaneval(24)[1::3][: args.prompts]]
    rows, targets = {}, {}
    for name, fields in VARIANTS.items():
        art = artifact(name, fields)
        calibrate(art)
        pipe = load(art, "openvino")
        configs = [("ours", "target", 0), ("ours", "k=4", 4), ("ours", "k=adaptive", "adaptive")]
        runners = {"ours": lambda p, k, s, seed, pipe=pipe: ours(pipe, p, args.max_new_tokens, s, seed, draft=k)}
        for _, _, k in configs:
            runners["ours"]("def add(a, b):\n    ", k, False, 0)
        per, _ = interleaved(configs, runners, prompts, False, name)
        targets[name] = base = aggregate(per["ours/target"])
        d = pipe.manifest.defaults
        row = {"draft_cost_ratio": d.draft_cost_ratio, "target_ms": pipe.manifest.verify_ms["1"],
               "draft_layers": len(pipe.manifest.draft.source_layers), "draft_vocab": fields.get("draft_shape.vocab_size")}
        for k in ("k=4", "k=adaptive"):
            runs = per[f"ours/{k}"]
            agg = aggregate(runs)
            row[k] = agg | {"speedup_vs_target": agg["tok_per_s"] / base["tok_per_s"],
                            "acceptance_by_depth": acceptance_by_depth(runs, 4),
                            "greedy_identical": sum(a["ids"] == b["ids"] for a, b in zip(runs, per["ours/target"]))
                            / len(runs)}
        rows[name] = row
        print(f"{name:28s} c {d.draft_cost_ratio:.3f}  k=4: α {row['k=4']['acceptance_rate']:.2f} "
              f"{row['k=4']['speedup_vs_target']:.2f}x  adaptive {row['k=adaptive']['speedup_vs_target']:.2f}x", flush=True)
        del pipe
    best = max(rows, key=lambda n: max(rows[n]["k=4"]["speedup_vs_target"], rows[n]["k=adaptive"]["speedup_vs_target"]))
    write_json(args.out, {"env": environment(ROOT), "args": {k: str(v) for k, v in vars(args).items()},
                          "prompts": prompts, "target_alone": targets, "rows": rows,
                          "summary": {"best_draft": best, "draft_cost_ratio": rows[best]["draft_cost_ratio"],
                                      "speedup_vs_target": max(rows[best]["k=4"]["speedup_vs_target"],
                                                               rows[best]["k=adaptive"]["speedup_vs_target"])}})


if __name__ == "__main__":
    main()
