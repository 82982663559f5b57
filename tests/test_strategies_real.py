"""Slow tier: inference strategies on the real Qwen2.5-Coder-0.5B (int8 lm artifact, from the cached
conversion the other Qwen tests share) and HumanEval in the sandbox: batched greedy equals the model's
own greedy decoding, a shared-prefix pool answers and passes, REBASE runs on a real problem."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dynexport import methods
from dynexport.lm_data import humaneval
from dynexport.runtime import load
from dynexport.runtime.strategies import SolveConfig, sample_pool, select, solve
from dynexport.runtime.tasks import HumanEvalTask

pytestmark = pytest.mark.slow
CFG = SolveConfig(max_new_tokens=160, reward="task")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("qwen-lm") / "lm-0.5b-int8"
    recipe = methods.get("lm").load_recipe(None, {"model": "qwen2.5-coder-0.5b", "quantization.weight_format": "int8"})
    methods.export("lm", recipe, out, formats=("openvino",))
    return load(out, "openvino")


def test_batched_greedy_equals_greedy_decoding(small):
    p, task = humaneval()[2], HumanEvalTask()
    ref = small.generate(p["prompt"], max_new_tokens=40, ignore_eos=True).tokens[0]
    _, rows, _ = sample_pool(small, task, p, 1, SolveConfig(max_new_tokens=40), np.random.default_rng(0), greedy=True)
    n = len(rows[0].tokens)  # it may stop early at a stop string
    assert n > 5 and rows[0].tokens == ref[:n]


def test_pool_holds_a_passing_program_and_the_votes_follow_their_rules(small):
    """A shared-prefix pool of 8 on HumanEval/0: most samples yield a program, one of them passes the
    hidden tests, majority voting picks from the largest behaviour cluster and best-of-N one with the top
    task reward (the docstring examples). Which program wins depends on the CPU's arithmetic (sampling
    diverges after one different rounding; one CI machine's vote went to a program that passes both
    docstring examples and fails the hidden tests), so the pick itself is not graded."""
    task = HumanEvalTask()
    p = humaneval()[0]
    sol = solve(small, task, p, "majority", 8, seed=0, config=CFG)
    cands = sol.candidates
    assert sum(c.answer is not None for c in cands) >= 6
    assert any(c.answer is not None and task.grade(p, c.answer) for c in cands)
    keys = [task.key(p, c.answer) if c.answer is not None else None for c in cands]
    votes = Counter(k for k, c in zip(keys, cands) if c.answer is not None)
    assert sol.answer is not None and votes[task.key(p, sol.answer)] == max(votes.values())
    best = select("best_of_n", cands, keys, "task")
    assert cands[best].rewards["task"] == max(c.rewards["task"] for c in cands if c.answer is not None)
    s = sol.stats.policy
    assert s.flops < s.independent_flops and s.prefill_tokens > 100


def test_rebase_on_a_real_problem(small):
    task = HumanEvalTask()
    p = humaneval()[2]
    sol = solve(small, task, p, "rebase", 4, seed=0, config=SolveConfig(max_new_tokens=96, reward="self"))
    assert sol.candidates and sol.stats.policy.flops < sol.stats.policy.independent_flops
    assert sol.answer is None or isinstance(sol.answer, str)
