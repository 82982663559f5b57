"""Timing harness for the causal-LM benchmarks (scripts/bench_speculative.py, scripts/bench_eagle.py).

One process, the same held-out prompts for every configuration, run prompt by prompt with the
configurations interleaved (the order rotated per prompt, so none is always first on a drifting
machine); EOS ignored so every run makes the same number of tokens. Runners: the dynexport runtime
(any pipeline with `generate`) and openvino_genai.LLMPipeline (f32 compute and KV cache, as ours).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .. import paths

OUT_ROOT = Path(__file__).resolve().parents[2] / "exported_models"
GENAI_CFG = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}


def draft_sha(draft: Path) -> str:
    from dynexport.manifest import sha256_file
    return sha256_file(draft / ("draft.safetensors" if (draft / "draft.json").is_file() else "model.safetensors"))


def ensure_speculative(draft: Path, precision: str) -> Path:
    """The dynexport artifact for this precision, re-exported when missing or made from another draft."""
    out = OUT_ROOT / f"smollm2-speculative-{precision}"
    manifest = out / "manifest.json"
    if not manifest.is_file() or json.loads(manifest.read_text())["source"]["draft_sha256"] != draft_sha(draft):
        from dynexport import methods
        recipe = methods.get("speculative").load_recipe(None, {
            "draft": str(draft), "quantization.weight_format": precision, "generation.num_draft_tokens": "adaptive"})
        methods.export("speculative", recipe, out, overwrite=True, formats=("openvino",))
    return out


def ensure_genai(draft: Path, precision: str) -> tuple[Path, Path]:
    """optimum-cli exports of the target and of the same draft (as a plain Llama) for openvino_genai."""
    from dynexport.models.gguf import smollm2_dir
    target_out, draft_out = OUT_ROOT / "genai" / f"target-{precision}", OUT_ROOT / "genai" / f"draft-{precision}"
    stamp = draft_sha(draft)
    for src, out in ((None, target_out), (draft, draft_out)):
        made_from = out / "dynexport-draft-sha256.txt"
        current = src is None or (made_from.is_file() and made_from.read_text() == stamp)
        if (out / "openvino_model.xml").is_file() and current:
            continue
        model_dir = smollm2_dir()
        if src is not None:
            from dynexport.models.lm_sources import draft_source, save_hf_checkpoint
            model_dir = save_hf_checkpoint(draft_source(src, smollm2_dir()).module, smollm2_dir(),
                                           OUT_ROOT / "genai" / "draft-hf")
        subprocess.run([str(Path(sys.executable).parent / "optimum-cli"), "export", "openvino", "--model",
                        str(model_dir), "--task", "text-generation-with-past", "--weight-format", precision,
                        str(out)], check=True, capture_output=True)
        if src is not None:
            made_from.write_text(stamp)
    return target_out, draft_out


def ours(pipe, prompt: str, n: int, sample: bool, seed: int, **kw) -> dict:
    """One dynexport generate call (T = 0.7 when sampling); kw: GenerationConfig overrides (draft=...)."""
    t0 = time.perf_counter()
    r = pipe.generate(prompt, max_new_tokens=n, do_sample=sample, temperature=0.7, seed=seed, ignore_eos=True, **kw)
    wall = time.perf_counter() - t0
    s = r.stats
    return {"wall_s": wall, "tokens": s.new_tokens, "ttft_s": s.ttft_s, "tpot_s": s.tpot_s,
            "drafted": s.drafted, "accepted": s.accepted, "rounds": len(s.draft_lengths),
            "accepted_lengths": list(s.accepted_lengths),
            "target_calls": s.target_calls, "draft_calls": s.draft_calls, "ids": r.tokens[0]}


def genai(pipe, prompt: str, n: int, k, sample: bool, seed: int) -> dict:
    """One openvino_genai generate call with k assistant tokens (0: none)."""
    return genai_run(pipe, prompt, n, sample, seed, **({"num_assistant_tokens": k} if k else {}))


def genai_run(pipe, prompt: str, n: int, sample: bool, seed: int, **fields) -> dict:
    """One openvino_genai generate call (T = 0.7 when sampling); fields: other GenerationConfig fields
    (num_assistant_tokens, assistant_confidence_threshold, …)."""
    import openvino_genai as og
    cfg = og.GenerationConfig()
    cfg.max_new_tokens, cfg.ignore_eos, cfg.apply_chat_template = n, True, False
    if sample:
        cfg.do_sample, cfg.temperature, cfg.rng_seed = True, 0.7, seed
    for key, value in fields.items():
        setattr(cfg, key, value)
    t0 = time.perf_counter()
    r = pipe.generate([prompt], cfg)
    wall = time.perf_counter() - t0
    pm = r.perf_metrics
    return {"wall_s": wall, "tokens": int(pm.get_num_generated_tokens()), "ttft_s": pm.get_ttft().mean / 1e3,
            "tpot_s": pm.get_tpot().mean / 1e3, "text": r.texts[0]}


def verify_cost_curve(pipe, n_max: int = 16, repeats: int = 7) -> list[dict]:
    """Median time of one target call over n = 1..n_max new positions after a 32-token context."""
    from ..runtime.costs import verify_curve
    curve = verify_curve(pipe.target, range(1, n_max + 1), repeats)
    return [{"n": int(n), "ms": ms} for n, ms in curve.items()]


def optimum_cost_curve(model_dir: Path, ns=(1, 2, 3, 4, 5, 6, 8, 12, 16), repeats: int = 10) -> list[dict]:
    """The same call-time curve on optimum-intel's stateful export of the target (openvino_model.xml, run
    with plain OpenVINO and the same CPU config as ours): whether a jump in the curve is the graph's or
    the OpenVINO CPU plugin's. One call appends n tokens after a 32-token prompt (the cache grows)."""
    import numpy as np
    import openvino as ov

    from ..runtime.kv import CPU_EXACT
    request = ov.Core().compile_model(str(model_dir / "openvino_model.xml"), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", **CPU_EXACT}).create_infer_request()
    out = []
    for n in ns:
        request.reset_state()
        length, ts = 0, []
        for i in range(repeats + 4):
            step = 32 if i == 0 else n
            feed = {"input_ids": np.arange(100, 100 + step)[None],
                    "attention_mask": np.ones((1, length + step), np.int64),
                    "position_ids": np.arange(length, length + step)[None], "beam_idx": np.zeros(1, np.int32)}
            t0 = time.perf_counter()
            request.infer(feed)
            ts.append(time.perf_counter() - t0)
            length += step
        out.append({"n": n, "ms": 1e3 * statistics.median(ts[4:])})
    return out


def aggregate(runs: list[dict]) -> dict:
    tokens, wall = sum(r["tokens"] for r in runs), sum(r["wall_s"] for r in runs)
    agg = {"prompts": len(runs), "tokens": tokens, "tok_per_s": tokens / wall,
           "ttft_ms": 1e3 * statistics.median(r["ttft_s"] for r in runs),
           "tpot_ms": 1e3 * statistics.median(r["tpot_s"] for r in runs)}
    if "drafted" in runs[0] and sum(r["drafted"] for r in runs):
        acc, drafted, rounds = (sum(r[key] for r in runs) for key in ("accepted", "drafted", "rounds"))
        agg.update(acceptance_rate=acc / drafted, mean_accepted_length=(acc + rounds) / rounds,
                   mean_k=drafted / rounds, target_calls=sum(r["target_calls"] for r in runs),
                   draft_calls=sum(r["draft_calls"] for r in runs))
    return agg


def interleaved(configs: list[tuple], runners: dict[str, Callable], prompts: list[dict], sample: bool,
                label: str) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Run every (lib, name, arg) config on every prompt, order rotated per prompt, seed 1000 + i.
    Returns (runs per "lib/name", errors of genai configs that refused a mode: a result, not hidden)."""
    per = {f"{lib}/{name}": [] for lib, name, _ in configs}
    failed: dict[str, str] = {}
    for i, p in enumerate(prompts):
        order = configs[i % len(configs):] + configs[: i % len(configs)]
        for lib, name, arg in order:
            key = f"{lib}/{name}"
            if key in failed:
                continue
            try:
                per[key].append(runners[lib](p["prompt"], arg, sample, 1000 + i))
            except RuntimeError as e:
                if lib != "genai":
                    raise
                failed[key] = str(e).strip().splitlines()[0][:300]
        print(f"  {label} prompt {i + 1}/{len(prompts)}", flush=True)
    return {k: v for k, v in per.items() if k not in failed}, failed


def acceptance_by_depth(runs: list[dict], depth: int) -> list[float]:
    """P(a round accepts at least d drafts), d = 1..depth, over all rounds of the runs."""
    lengths = [n for r in runs for n in r.get("accepted_lengths", [])]
    return [sum(n >= d for n in lengths) / len(lengths) for d in range(1, depth + 1)] if lengths else []


def common_args(ap, root: Path, out_name: str, prompts: int) -> None:
    """The options both LM benchmarks take: precisions, tokens, prompt count, the issue-4 draft, output."""
    ap.add_argument("--precisions", nargs="+", default=["fp16", "int8"])
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=prompts,
                    help="held-out prompts (half news openings, half stdlib functions)")
    ap.add_argument("--draft", type=Path, default=paths.committed("speculative") / "smollm2-135m-draft")
    ap.add_argument("--out", type=Path, default=root / "benchmarks" / out_name)


def measure_precisions(args, measure: Callable, summarize: Callable, root: Path) -> dict:
    """measure(precision, args, prompts) for each of args.precisions in turn, on args.prompts held-out
    prompts; after each, args.out is rewritten with the environment, the prompts, the runs so far and
    summarize(runs) (a cut-short run keeps its data)."""
    from ..lm_data import bench_prompts
    from .env import environment, write_json
    prompts = bench_prompts(args.prompts // 2, args.prompts - args.prompts // 2)
    env, runs = environment(root), []
    for precision in args.precisions:
        print(f"measuring {precision} ...", flush=True)
        runs.append(measure(precision, args, prompts))
        payload = {"env": env, "args": {k: str(v) for k, v in vars(args).items()}, "prompts": prompts, "runs": runs,
                   "summary": summarize(runs)}
        write_json(args.out, payload)
    return payload
