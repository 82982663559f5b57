"""Test inputs a model writes itself (CodeT, Chen et al. 2022): the extra calls that sharpen HumanEval's
behaviour signatures, so that voting can tell apart programs the docstring's few examples cannot.

The model completes `<prompt>    pass\\n\\n\\n# check the correctness of f\\nassert f(`; each sample's call
is cut at the first closing parenthesis where `f(...)` parses as a call expression (parsed, never
run here; the calls run only inside the sandbox, on the candidates). Samples share one prefill and
decode as one batch. The model's claimed outputs are ignored: only the inputs are used.
"""

from __future__ import annotations

import ast

import numpy as np

from .batch import prefill, sample_rows
from .compute import ModelCompute, shared_prefix
from .generation import encode_prompt
from .sampling import SamplingCfg


def probe_prompt(problem: dict) -> str:
    f = problem["entry_point"]
    return f"{problem['prompt']}    pass\n\n\n# check the correctness of {f}\nassert {f}("


def parse_call(entry: str, text: str, max_chars: int = 300) -> str | None:
    """`entry(` + the shortest prefix of text ending at ')' that parses as a call of `entry`, in a
    canonical spelling (ast.unparse: spacing and quotes normalised, so duplicates collapse), or None."""
    for i, ch in enumerate(text[:max_chars]):
        if ch != ")":
            continue
        call = f"{entry}({text[: i + 1]}"
        try:
            node = ast.parse(call, mode="eval").body
        except (SyntaxError, ValueError):
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry:
            return ast.unparse(node)
    return None


def model_inputs(pipe, problem: dict, n: int, temperature: float, rng: np.random.Generator,
                 max_new_tokens: int = 64) -> tuple[list[str], ModelCompute]:
    """Up to n distinct calls of the problem's entry point written by the model, and what they cost."""
    ids = encode_prompt(pipe.tokenizer, probe_prompt(problem))
    lm, graph = pipe.batch(), pipe.manifest.model
    calls0 = lm.calls
    prefill(lm, ids[:-1])
    lm.fork([0] * n)
    decode = lambda toks: pipe.tokenizer.decode(toks, skip_special_tokens=True)
    rows = sample_rows(lm, [ids[-1]] * n, SamplingCfg(True, temperature), rng, max_new_tokens,
                       lambda row: "\n" in decode(row.tokens))
    calls = [parse_call(problem["entry_point"], decode(r.tokens).split("\n")[0]) for r in rows]
    compute = shared_prefix(graph, len(ids) - 1, [len(r.tokens) for r in rows], lm.calls - calls0)
    return list(dict.fromkeys(c for c in calls if c)), compute
