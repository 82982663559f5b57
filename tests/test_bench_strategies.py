"""The strategies benchmark's analysis (dynexport/bench/strategies.py) on synthetic pools: subsampled
budgets, their FLOPs, the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from dynexport.bench.stats import paired_bootstrap
from dynexport.bench.strategies import expected_at_budget
from dynexport.manifest import LMGraph
from dynexport.runtime.compute import tokens_flops

GRAPH = LMGraph(name="model", files={}, inputs=[], outputs=[], kv_cache={}, num_layers=2, source_layers=[0, 1],
                kv_heads=1, head_dim=4, precision={}, model_sha256="x", params=1000, attention_dim=8)


def pool(keys, passed, rewards, tokens=10):
    return {"prompt_tokens": 5, "candidates": [
        {"key": [k] if k is not None else None, "answered": k is not None, "passed": p, "tokens": tokens, "scored": tokens,
         "rewards": {"self": r, "lm": r, "task": None, "product": r}} for k, p, r in zip(keys, passed, rewards)]}


def test_full_budget_is_the_pool_itself():
    p = pool(["a", "a", "b", "c"], [True, True, False, False], [0.1, 0.1, 0.9, 0.2])
    assert expected_at_budget(p, "majority", 4, "self", GRAPH, None, 8, 0)["pass"] == 1.0
    assert expected_at_budget(p, "best_of_n", 4, "lm", GRAPH, None, 8, 0)["pass"] == 0.0  # b has the top reward
    assert expected_at_budget(p, "weighted", 4, "lm", GRAPH, None, 8, 0)["pass"] == 0.0  # b 0.9 > a 0.2


def test_budget_one_is_the_sample_pass_rate():
    p = pool(list("abcdefgh"), [True] * 2 + [False] * 6, [0.5] * 8)
    got = expected_at_budget(p, "majority", 1, "self", GRAPH, None, 4000, 1)["pass"]
    assert got == pytest.approx(0.25, abs=0.03)


def test_flops_one_prefill_plus_each_sample():
    p = pool(["a"] * 4, [True] * 4, [0.5] * 4, tokens=7)
    r = expected_at_budget(p, "weighted", 2, "lm", GRAPH, GRAPH, 4, 0)
    pol = tokens_flops(GRAPH, 4, 0) + 2 * tokens_flops(GRAPH, 7, 4)
    assert r["policy_flops"] == pytest.approx(pol) and r["total_flops"] == pytest.approx(2 * pol)
    assert expected_at_budget(p, "majority", 2, "lm", GRAPH, GRAPH, 4, 0)["total_flops"] == pytest.approx(pol)


def test_no_answer_counts_as_a_fail():
    p = pool([None, None], [False, False], [0.5, 0.5])
    r = expected_at_budget(p, "majority", 2, "self", GRAPH, None, 4, 0)
    assert r["pass"] == 0.0 and r["no_answer"] == 1.0
    with pytest.raises(ValueError):
        expected_at_budget(p, "majority", 3, "self", GRAPH, None, 4, 0)


def test_paired_bootstrap_separates_only_real_differences():
    rng = np.random.default_rng(0)
    a = rng.random(200) < 0.6
    assert paired_bootstrap(a, a)["separated"] is False and paired_bootstrap(a, a)["diff_pt"] == 0
    worse = a & (rng.random(200) < 0.5)
    r = paired_bootstrap(a, worse)
    assert r["separated"] and r["ci95_pt"][0] > 0 and r["diff_pt"] > 20


def test_votes_pay_for_the_test_inputs_they_run():
    p = pool(["a"] * 4, [True] * 4, [0.5] * 4) | {"key_flops": 123.0}
    vote = expected_at_budget(p, "majority", 2, "self", GRAPH, None, 4, 0)["policy_flops"]
    best = expected_at_budget(p, "best_of_n", 2, "self", GRAPH, None, 4, 0)["policy_flops"]
    assert vote - best == pytest.approx(123.0)
