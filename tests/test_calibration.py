"""Exit-rule calibration in numpy: the fast search scores agree with the runtime's rule, per-exit cuts
never do worse than one shared cut in-sample, cross-validation is honest on synthetic exits."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dynexport.calibration import (
    LAMBDAS,
    RULES,
    RuleFit,
    best_rule,
    cuts_to_thresholds,
    evaluate,
    exit_scores,
    fit_exit_model,
    fit_rule,
    frontier,
    outcome,
)
from dynexport.runtime import EntropyPolicy, LearnedExit


def synthetic(n: int, exits: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Exits that get better with depth: logits = signal · depth on the true class + noise. → ([n, 3]
    per segment, labels [n])."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    onehot = np.eye(3)[labels]
    difficulty = rng.uniform(0, 1, (n, 1))
    return [(onehot * (0.5 + 3 * (i + 1) / exits) * (1.2 - difficulty) + rng.normal(0, 1, (n, 3))).astype(np.float32)
            for i in range(exits)], labels


def _between(scores: np.ndarray, rng) -> float:
    """A cut halfway between two neighbouring distinct scores (or never), so 6-digit rounding keeps it there."""
    u = np.unique(scores)
    if len(u) < 2 or rng.random() < 0.2:
        return np.inf
    j = rng.integers(0, len(u) - 1)
    return float(u[j] + u[j + 1]) / 2 if u[j + 1] - u[j] > 1e-4 else np.inf


@settings(max_examples=60, deadline=None)
@given(n=st.integers(4, 60), exits=st.integers(2, 5), seed=st.integers(0, 10_000), kind=st.sampled_from(RULES))
def test_search_outcome_equals_the_runtime_rule(n, exits, seed, kind):
    logits, labels = synthetic(n, exits, seed)
    costs = list(np.random.default_rng(seed).uniform(0.5, 2, exits))
    weights = fit_exit_model(logits) if kind == "learned" else None
    scores = exit_scores(kind, logits, weights)  # [exits - 1, n]
    rng = np.random.default_rng(seed + 1)
    cuts = np.array([_between(s, rng) for s in scores])
    thresholds = tuple(cuts_to_thresholds(kind, cuts))
    policy = LearnedExit(tuple(map(tuple, weights)), thresholds) if weights else EntropyPolicy(thresholds)
    acc, speed, frac = evaluate(policy, logits, labels, costs)  # the runtime's rule, replayed
    o = outcome(scores, cuts, np.stack([lg.argmax(-1) == labels for lg in logits]), np.cumsum(costs))
    assert (o.accuracy, o.exit_fractions) == (acc, frac) and np.isclose(o.expected_speedup, speed)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), exits=st.integers(3, 6))
def test_per_exit_cuts_are_never_worse_than_one_shared_cut_in_sample(seed, exits):
    logits, labels = synthetic(300, exits, seed)
    costs = [1.0] * exits
    scores = exit_scores("entropy", logits)
    shared = frontier(scores, logits, labels, costs, per_exit=False)
    per_exit = frontier(scores, logits, labels, costs, per_exit=True)
    for lam, a, b in zip(LAMBDAS, shared, per_exit):
        price_a, price_b = (1 / o.expected_speedup + lam * (1 - o.accuracy / 100) for o in (a, b))
        assert price_b <= price_a + 1e-12


def test_rules_fit_within_budget_and_cross_validation_is_not_flattering():
    logits, labels = synthetic(2000, 6, 0)
    test_logits, test_labels = synthetic(2000, 6, 1)
    costs = [1.2, 1, 1, 1, 1, 1]
    fits = [fit_rule(k, logits, labels, costs, 1.0) for k in RULES]
    for f in fits:
        assert f.cv_accuracy_drop_pt <= 1.0 and f.expected_speedup > 1.2
        assert len(f.curve) == len(LAMBDAS) and len(f.thresholds) == 5
        acc, speed, _ = evaluate(f.policy(), test_logits, test_labels, costs)
        full = (test_logits[-1].argmax(-1) == test_labels).mean() * 100
        assert full - acc <= 1.0 + 1.5  # fresh data: within the budget plus ~2 SE of a 2,000-sample drop
        assert abs(speed - f.cv_expected_speedup) / speed < 0.1
    best = best_rule(fits, 1.0)
    assert best.cv_expected_speedup == max(f.cv_expected_speedup for f in fits)
    assert isinstance(RuleFit(**{**best.__dict__}).policy(), (EntropyPolicy, LearnedExit))


def test_learned_exit_model_predicts_agreement_with_the_final_head():
    logits, _ = synthetic(3000, 4, 2)
    weights = fit_exit_model(logits)
    scores = exit_scores("learned", logits, weights)
    agree = logits[0].argmax(-1) == logits[-1].argmax(-1)
    p, base = np.clip(scores[0], 1e-9, 1 - 1e-9), agree.mean()

    def log_loss(q):
        return -np.mean(agree * np.log(q) + (1 - agree) * np.log(1 - q))
    assert log_loss(p) < log_loss(base) - 0.02  # better than knowing only how often exit 1 agrees
    assert abs(p.mean() - base) < 0.01  # and calibrated on average (logistic regression's score equation)
