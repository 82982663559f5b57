"""Does openvino_genai's speculative *sampling* keep the target's distribution? → benchmarks/genai_exactness.json

    python scripts/genai_exactness.py [--samples 3000] [--ks 1 3 5]

A tiny trained target and a different tiny draft (Qwen2 layout, `dynexport.models.tiny`: their next-token
distributions are known exactly and differ), exported for genai by optimum-cli and for dynexport by
`dynexport export speculative`. Each runtime samples 2 new tokens of one prompt with seeds 0..N−1
(T = 1, no top-k / top-p); the first token's and the pair's empirical distributions are tested against
the target's exact ones (transformers, fp32) with a chi-square test (cells expected < 5 times pooled).
Rows: genai target alone (the control: it must pass), genai speculative at num_assistant_tokens k,
dynexport speculative at the same k. A p-value < 1e-3 means the samples do not follow the target.
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


def exact_distributions(target: Path, ids: list[int]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """p(x1 | prompt) [V] and p(x2 | prompt, x1) for every x1 with p > 0 (fp32 transformers)."""
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    with torch.no_grad():
        p1 = torch.softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
        keep = torch.nonzero(p1 > 1e-9).flatten().tolist()
        p2 = {x: torch.softmax(model(torch.tensor([ids + [x]])).logits[0, -1].double(), -1).numpy() for x in keep}
    return p1.numpy(), p2


def pvalues(samples: list[list[int]], p1: np.ndarray, p2: dict[int, np.ndarray]) -> dict:
    from dynexport.bench.stats import pvalue
    n = len(samples)
    first, pairs = {}, {}
    for a, b in samples:
        first[a] = first.get(a, 0) + 1
        pairs[(a, b)] = pairs.get((a, b), 0) + 1
    exp1 = {int(i): float(p1[i]) for i in np.flatnonzero(p1 > 1e-12)}
    exp2 = {(a, int(b)): float(p1[a] * p2[a][b]) for a in p2 for b in np.flatnonzero(p2[a] > 1e-12)}
    return {"first_token_p": pvalue(exp1, first, n), "pair_p": pvalue(exp2, pairs, n), "samples": n}


def genai_samples(pipe, ids: list[int], k: int, n: int) -> list[list[int]]:
    """n two-token samples (token ids, the prompt given as ids: no re-tokenization)."""
    import openvino as ov
    import openvino_genai as og
    prompt, out = ov.Tensor(np.array([ids], np.int64)), []
    for seed in range(n):
        cfg = og.GenerationConfig()
        cfg.max_new_tokens, cfg.ignore_eos, cfg.apply_chat_template = 2, True, False
        cfg.do_sample, cfg.temperature, cfg.top_p, cfg.rng_seed = True, 1.0, 1.0, seed
        if k:
            cfg.num_assistant_tokens = k
        out.append([int(t) for t in pipe.generate(prompt, cfg).tokens[0]])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 3, 5])
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
    p1, p2 = exact_distributions(target, ids)
    rows = {}
    plain = og.LLMPipeline(str(work / "ov-target"), "CPU")
    assert list(plain.get_tokenizer().encode(PROMPT, add_special_tokens=False).input_ids.data[0]) == ids
    t0 = time.time()
    rows["genai/target"] = pvalues(genai_samples(plain, ids, 0, args.samples), p1, p2)
    for k in args.ks:
        spec = og.LLMPipeline(str(work / "ov-target"), "CPU", draft_model=og.draft_model(str(work / "ov-draft"), "CPU"))
        rows[f"genai/speculative k={k}"] = pvalues(genai_samples(spec, ids, k, args.samples), p1, p2)
        got = [ours.generate(PROMPT, max_new_tokens=2, do_sample=True, temperature=1.0, seed=s, draft=k,
                             ignore_eos=True).tokens[0] for s in range(args.samples)]
        rows[f"ours/speculative k={k}"] = pvalues(got, p1, p2)
        print(k, {key: (round(v["first_token_p"], 4), round(v["pair_p"], 4)) for key, v in rows.items()}, flush=True)
    verdict = {key: "consistent with the target" if min(v["first_token_p"], v["pair_p"]) >= 1e-3
               else "NOT the target's distribution" for key, v in rows.items()}
    write_json(args.out, {"env": environment(ROOT), "prompt": PROMPT, "rows": rows, "verdict": verdict,
                          "summary": {"genai_speculative_exact": all(verdict[k].startswith("consistent")
                                                                     for k in verdict if k.startswith("genai/spec")),
                                      "ours_exact": all(verdict[k].startswith("consistent")
                                                        for k in verdict if k.startswith("ours/"))},
                          "seconds": round(time.time() - t0)})
    print(verdict)


if __name__ == "__main__":
    main()
