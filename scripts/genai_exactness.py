"""Does openvino_genai's speculative *sampling* keep the target's distribution? → benchmarks/genai_exactness.json

    python scripts/genai_exactness.py [--samples 3000] [--ks 1 3 5]

A tiny trained target and a different tiny draft (Qwen2 layout, `dynexport.models.tiny`: their next-token
distributions are known exactly and differ), exported for genai by optimum-cli and for dynexport by
`dynexport export speculative`. Each runtime samples --tokens new tokens of one prompt with seeds 0..N−1
(T = 1, top-k 8 by default: 3 tokens have at most 512 sequences, so the exact distribution is
enumerable; --top-k 0 --tokens 2 tests the full vocabulary); the first token comes
from the prefill, tokens 2 and 3 from one speculative round (depths 1 and 2). The empirical
distributions of the first token, the pair and the triple are tested against the target's exact ones
(transformers, fp32) with a chi-square test (cells expected < 5 times pooled). Rows: genai target alone
(the control: it must pass), genai speculative at num_assistant_tokens k (seeds on which genai aborts
with an error are counted and left out), dynexport speculative at
the same k (a round never drafts past the tokens left, so k ≥ 2 runs as k = 2 here). A p-value < 1e-3
means the samples do not follow the target. Also recorded: how often genai's speculative sample equals
its target-alone sample for the same seed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "the cat sat"


def exact_distributions(target: Path, ids: list[int], tokens: int, top_k: int) -> dict[tuple, float]:
    """P(x1, …, x_tokens | prompt) for every sequence with probability > 1e-12 under T = 1, top-k (0 = off)."""
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()

    def warped(seq: list[int]) -> dict[int, float]:
        with torch.no_grad():
            logits = model(torch.tensor([ids + seq])).logits[0, -1].double()
        top = torch.topk(logits, top_k or len(logits))
        return {x: q for x, q in zip(top.indices.tolist(), torch.softmax(top.values, -1).tolist()) if q > 1e-12}

    probs = {(): 1.0}
    for _ in range(tokens):
        probs = {seq + (x,): p * q for seq, p in probs.items() for x, q in warped(list(seq)).items()}
    return probs


def pvalues(samples: list[list[int]], exact: dict[tuple, float]) -> dict:
    """Chi-square p-values of the first token, the pair and the whole sequence."""
    from dynexport.bench.stats import pvalue
    out = {"samples": len(samples)}
    for n, name in ((1, "first_token_p"), (2, "pair_p"), (len(samples[0]), "sequence_p")):
        exp, obs = {}, {}
        for seq, p in exact.items():
            exp[seq[:n]] = exp.get(seq[:n], 0.0) + p
        for s in samples:
            obs[tuple(s[:n])] = obs.get(tuple(s[:n]), 0) + 1
        out[name] = pvalue(exp, obs, len(samples))
    return out


def genai_samples(pipe, ids: list[int], k: int, n: int, tokens: int, top_k: int) -> tuple[list, list[int]]:
    """(samples of `tokens` tokens, the seeds genai refused with an error) over seeds 0..n−1 (the prompt
    given as ids: no re-tokenization)."""
    import openvino as ov
    import openvino_genai as og
    prompt, out, failed = ov.Tensor(np.array([ids], np.int64)), [], []
    for seed in range(n):
        cfg = og.GenerationConfig()
        cfg.max_new_tokens, cfg.ignore_eos, cfg.apply_chat_template = tokens, True, False
        cfg.do_sample, cfg.temperature, cfg.top_p, cfg.rng_seed = True, 1.0, 1.0, seed
        if top_k:
            cfg.top_k = top_k
        if k:
            cfg.num_assistant_tokens = k
        try:
            out.append([int(t) for t in pipe.generate(prompt, cfg).tokens[0]])
        except RuntimeError as e:  # genai's speculative sampling aborts on some seeds: counted, reported
            failed.append(seed)
            error = str(e).strip().splitlines()[0][:300]
    return out, failed, (error if failed else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 3, 5])
    ap.add_argument("--tokens", type=int, default=3, help="new tokens per sample (the first comes from the prefill)")
    ap.add_argument("--top-k", type=int, default=8, help="0 = off (then keep --tokens ≤ 2: the exact table is V²)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "genai_exactness.json")
    args = ap.parse_args()
    import openvino_genai as og

    from dynexport import methods
    from dynexport.bench.env import environment, write_json
    from dynexport.models.tiny import make_tiny_llama
    from dynexport.runtime import load
    work = Path(tempfile.mkdtemp(prefix="genai-exactness-"))
    target = make_tiny_llama(work / "target", family="qwen2")
    draft = make_tiny_llama(work / "draft", layers=1, seed=5, family="qwen2")
    for name in ("target", "draft"):
        subprocess.run([str(Path(sys.executable).parent / "optimum-cli"), "export", "openvino", "--model",
                        str(work / name), "--task", "text-generation-with-past", "--weight-format", "fp32",
                        str(work / f"ov-{name}")], check=True, capture_output=True)
    recipe = methods.get("speculative").load_recipe(None, {"target": str(target), "draft": str(draft),
                                                           "quantization.weight_format": "fp32"})
    methods.export("speculative", recipe, work / "ours", formats=("openvino",))
    ours = load(work / "ours", "openvino")
    ids = ours.tokenizer.encode(PROMPT).ids
    exact = exact_distributions(target, ids, args.tokens, args.top_k)
    rows = {}
    plain = og.LLMPipeline(str(work / "ov-target"), "CPU")
    assert list(plain.get_tokenizer().encode(PROMPT, add_special_tokens=False).input_ids.data[0]) == ids
    t0 = time.time()
    reference, failed, _ = genai_samples(plain, ids, 0, args.samples, args.tokens, args.top_k)
    rows["genai/target"] = pvalues(reference, exact) | {"failed_seeds": len(failed)}
    for k in args.ks:
        spec = og.LLMPipeline(str(work / "ov-target"), "CPU", draft_model=og.draft_model(str(work / "ov-draft"), "CPU"))
        got, failed, error = genai_samples(spec, ids, k, args.samples, args.tokens, args.top_k)
        ran = [s for s in range(args.samples) if s not in set(failed)]
        rows[f"genai/speculative k={k}"] = pvalues(got, exact) | {
            "failed_seeds": len(failed), "error": error,  # the test runs on the seeds that completed
            "same_sample_as_genai_target": sum(a == reference[s] for a, s in zip(got, ran)) / len(got)}
        got = [ours.generate(PROMPT, max_new_tokens=args.tokens, do_sample=True, temperature=1.0, top_k=args.top_k, seed=s,
                             draft=k, ignore_eos=True).tokens[0] for s in range(args.samples)]
        rows[f"ours/speculative k={k}"] = pvalues(got, exact)
        print(k, {key: (round(v["first_token_p"], 4), round(v["pair_p"], 4), round(v["sequence_p"], 4),
                        v.get("failed_seeds")) for key, v in rows.items()}, flush=True)
    verdict = {key: ("consistent with the target" if min(v["first_token_p"], v["pair_p"], v["sequence_p"]) >= 1e-3
                     else "NOT the target's distribution")
               + (f"; aborted on {v['failed_seeds']} of {args.samples} seeds" if v.get("failed_seeds") else "")
               for key, v in rows.items()}
    write_json(args.out, {"env": environment(ROOT), "prompt": PROMPT, "top_k": args.top_k, "tokens": args.tokens,
                          "rows": rows, "verdict": verdict,
                          "summary": {"genai_speculative_exact": {k: verdict[k] for k in verdict
                                                                  if k.startswith("genai/spec")},
                                      "ours_exact": all(verdict[k].startswith("consistent")
                                                        for k in verdict if k.startswith("ours/"))},
                          "seconds": round(time.time() - t0)})
    print(verdict)


if __name__ == "__main__":
    main()
