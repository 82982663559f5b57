"""Inference-compute strategies (runtime/strategies.py, rebase.py, beam.py) on tiny lm artifacts with a
toy task: the selection rules, REBASE's budget rule, shared-prefix compute accounting, every strategy
end to end, and bad input (budget, strategy, reward model tokenizer, no answer at all)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from helpers import make_tiny_llama
from hypothesis import given, settings
from hypothesis import strategies as st

from dynexport import methods
from dynexport.errors import InputError
from dynexport.recipe import LMRecipe
from dynexport.runtime import load
from dynexport.runtime.compute import tokens_flops
from dynexport.runtime.rebase import balance
from dynexport.runtime.strategies import STRATEGIES, Candidate, SolveConfig, select, solve

CFG = SolveConfig(max_new_tokens=12, max_step_tokens=4, reward="self")


@dataclass(frozen=True)
class FirstWord:
    """Toy task: the answer is the completion's first word; rewards its length (capped at 1)."""
    name: str = "first-word"
    stop_strings: tuple[str, ...] = ("\n",)
    none: bool = False  # every completion yields no answer

    def prompt(self, problem):
        return problem["prompt"]

    def extract(self, problem, text):
        words = text.split()
        return None if self.none or not words else words[0]

    def key(self, problem, answer):
        return answer

    def reward(self, problem, answer):
        return min(len(answer) / 8, 1.0)

    def grade(self, problem, answer):
        return answer == problem["answer"]


PROBLEM = {"prompt": "the cat sat on", "answer": "the"}


def cands(answers, rewards):
    return [Candidate(str(a), (), a, {"self": r}) for a, r in zip(answers, rewards)]


def test_selection_rules():
    c = cands(["a", "b", "b", "c", None], [0.9, 0.2, 0.3, 0.95, 1.0])
    keys = [x.answer for x in c]
    assert select("majority", c, keys, "self") == 1  # b twice
    assert select("best_of_n", c, keys, "self") == 3  # c: highest reward among answered (None ignored)
    assert select("weighted", c, keys, "self") == 3  # c 0.95 > a 0.9 > b 0.5
    c2 = cands(["a", "b", "b"], [0.9, 0.5, 0.5])
    assert select("weighted", c2, [x.answer for x in c2], "self") == 1  # b 1.0 > a 0.9
    assert select("majority", cands([None, None], [1, 1]), [None, None], "self") is None
    tie = cands(["x", "y"], [0.5, 0.5])
    assert select("majority", tie, ["x", "y"], "self") == 0 and select("best_of_n", tie, ["x", "y"], "self") == 0


@given(st.lists(st.floats(0, 1), min_size=1, max_size=20), st.integers(1, 64), st.sampled_from([0.05, 0.1, 0.2, 5.0]))
@settings(max_examples=200, deadline=None)
def test_balance_spends_about_the_budget(rewards, budget, t):
    n = balance(rewards, budget, t)
    assert len(n) == len(rewards) and min(n) >= 0
    assert abs(sum(n) - budget) <= len(rewards) / 2 + 1e-9  # rounding only
    best = int(np.argmax(rewards))
    assert n[best] == max(n)  # the best node gets the most children


def test_balance_temperature_concentrates():
    r = [0.9, 0.8, 0.5]
    assert balance(r, 16, 0.02)[0] >= 15 and balance(r, 15, 100.0) == [5, 5, 5]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_end_to_end(tiny_plain_lm, strategy):
    pipe = load(tiny_plain_lm["artifact"], "openvino")
    sol = solve(pipe, FirstWord(), PROBLEM, strategy, 4, seed=0, config=CFG)
    assert len(sol.candidates) == (1 if strategy == "greedy" else 4) or strategy in ("rebase", "beam")
    assert 1 <= len(sol.candidates) <= 4 + 3  # REBASE: rounding may spend a little more than its budget
    assert sol.answer is None or sol.answer in [c.answer for c in sol.candidates]
    s = sol.stats
    assert s.policy.generated_tokens > 0 and s.policy.flops > 0 and s.wall_s > 0 and s.reward.flops == 0


def test_pooled_samples_share_the_prefill(tiny_plain_lm):
    pipe = load(tiny_plain_lm["artifact"], "openvino")
    sol = solve(pipe, FirstWord(), PROBLEM, "majority", 8, seed=1, config=CFG)
    p, m = sol.stats.policy, pipe.manifest.model
    assert p.prefill_tokens == len(pipe.tokenizer.encode(PROBLEM["prompt"]).ids) - 1
    assert p.independent_flops - p.flops == pytest.approx(7 * tokens_flops(m, p.prefill_tokens, 0), rel=1e-9)


def test_seeded_and_sampled(tiny_plain_lm):
    pipe = load(tiny_plain_lm["artifact"], "openvino")
    a = solve(pipe, FirstWord(), PROBLEM, "best_of_n", 6, seed=3, config=CFG)
    b = solve(pipe, FirstWord(), PROBLEM, "best_of_n", 6, seed=3, config=CFG)
    assert [c.tokens for c in a.candidates] == [c.tokens for c in b.candidates]
    assert len({c.tokens for c in a.candidates}) > 1


def test_reward_model_scores_and_costs(tiny_plain_lm):
    pipe, rm = load(tiny_plain_lm["small"], "openvino"), load(tiny_plain_lm["artifact"], "openvino")
    cfg = SolveConfig(max_new_tokens=12, max_step_tokens=4, reward="product")
    for strategy in ("weighted", "best_of_n", "rebase"):
        sol = solve(pipe, FirstWord(), PROBLEM, strategy, 4, seed=0, reward_pipe=rm, config=cfg)
        assert sol.stats.reward.flops > 0 and sol.stats.reward.scored_tokens > 0
        for c in sol.candidates:
            if c.answer is not None:
                r = c.rewards
                assert 0 < r["lm"] <= 1 and r["product"] == pytest.approx(r["lm"] * r["task"])


def test_rebase_children_continue_their_parents(tiny_plain_lm):
    pipe = load(tiny_plain_lm["artifact"], "openvino")
    cfg = SolveConfig(max_new_tokens=12, max_step_tokens=3, reward="self", step_delimiter="\n")
    sol = solve(pipe, FirstWord(), PROBLEM, "rebase", 6, seed=2, config=cfg)
    p = sol.stats.policy
    assert p.flops < p.independent_flops  # children reuse their parent's cache
    assert all(len(c.tokens) <= 12 for c in sol.candidates)


def test_no_answer_is_a_result_not_a_crash(tiny_plain_lm):
    pipe = load(tiny_plain_lm["artifact"], "openvino")
    for strategy in ("majority", "weighted", "rebase", "beam"):
        sol = solve(pipe, FirstWord(none=True), PROBLEM, strategy, 3, config=CFG)
        assert sol.no_answer and sol.answer is None and sol.candidates


def test_bad_input(tiny_plain_lm, tmp_path):
    pipe = load(tiny_plain_lm["artifact"], "openvino")
    for budget in (0, -1, 2.5, True, "4"):
        with pytest.raises(InputError, match="budget"):
            solve(pipe, FirstWord(), PROBLEM, "majority", budget, config=CFG)
    with pytest.raises(InputError, match="strategy"):
        solve(pipe, FirstWord(), PROBLEM, "mcts", 2, config=CFG)
    with pytest.raises(InputError, match="reward model"):
        solve(pipe, FirstWord(), PROBLEM, "weighted", 2, config=SolveConfig(reward="lm"))
    with pytest.raises(InputError, match="reward must be"):
        SolveConfig(reward="prm")
    with pytest.raises(InputError, match="exceeds the context"):
        solve(pipe, FirstWord(), {"prompt": "the cat " * 200, "answer": "x"}, "majority", 2, config=CFG)
    other = make_tiny_llama(tmp_path / "other", layers=1, tokenizer_text="completely different words here " * 30)
    art = tmp_path / "other-art"
    methods.export("lm", LMRecipe(model=str(other), quantization={"weight_format": "fp32"}), art,
                   formats=("openvino",))
    with pytest.raises(InputError, match="tokenizer differs"):
        solve(pipe, FirstWord(), PROBLEM, "weighted", 2, reward_pipe=load(art, "openvino"),
              config=SolveConfig(reward="lm"))


def test_a_missing_task_reward_is_neutral():
    c = [Candidate("a", (), "a", {"task": None}), Candidate("b", (), "b", {"task": None}),
         Candidate("b2", (), "b", {"task": None})]
    keys = [x.answer for x in c]
    assert select("weighted", c, keys, "task") == select("majority", c, keys, "task") == 1
    assert select("best_of_n", c, keys, "task") == 0
