"""Exit-rule calibration for early exit, in numpy: replay the exit rule on every exit's logits.

Given each exit's logits for a labelled split (one full-depth pass collects them all) and each
segment's measured cost: `sweep` gives accuracy and expected speed-up per global entropy threshold
and `choose` the largest speed-up within an accuracy budget; `fit_rule` calibrates one of RULES
(one entropy threshold, one per exit, or BERxiT's learned rule) over a frontier of error prices,
choosing by 5-fold cross-validation, and `best_rule` picks the default among them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .runtime.early_exit import rule_policy
from .runtime.policies import EntropyPolicy, Policy, entropy, exit_features, new_carry, track


@dataclass(frozen=True)
class SweepPoint:
    threshold: float
    accuracy: float  # percent
    accuracy_drop_pt: float  # full depth minus this, in points
    expected_speedup: float  # full-depth cost / expected cost, from measured segment costs
    exit_fractions: list[float]  # share of samples leaving at each segment

    def to_json(self) -> dict:
        return asdict(self)


def replay(policy: Policy, seg_logits: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(predictions [n], exit segment index [n]) of the runtime's rule on stacked per-exit logits."""
    n = len(seg_logits[0])
    carry, active = new_carry(n), np.ones(n, dtype=bool)
    pred, seg = seg_logits[-1].argmax(-1), np.full(n, len(seg_logits) - 1)
    for i, logits in enumerate(seg_logits[:-1]):
        leave, carry_new = policy.decide(logits, carry, i)
        carry = np.where(active[:, None], carry_new, carry)
        leave &= active
        pred = np.where(leave, logits.argmax(-1), pred)
        seg = np.where(leave, i, seg)
        active &= ~leave
    return pred, seg


def evaluate(policy: Policy, seg_logits: list[np.ndarray], labels: np.ndarray,
             seg_costs: list[float]) -> tuple[float, float, list[float]]:
    """(accuracy %, expected speed-up, exit fractions) of a policy on one split."""
    pred, seg = replay(policy, seg_logits)
    cum = np.cumsum(seg_costs)
    speedup = float(cum[-1] / cum[seg].mean())
    fractions = np.bincount(seg, minlength=len(seg_logits)) / len(seg)
    return float((pred == labels).mean() * 100), speedup, [round(float(f), 4) for f in fractions]


def sweep(seg_logits: list[np.ndarray], labels: np.ndarray, seg_costs: list[float],
          n_points: int = 60) -> tuple[float, list[SweepPoint]]:
    """(full-depth accuracy, points over thresholds from 0 to ln(classes))."""
    full = float((seg_logits[-1].argmax(-1) == labels).mean() * 100)
    top = float(np.log(seg_logits[0].shape[-1]))
    points = []
    for t in np.unique(np.concatenate([np.linspace(0, top, n_points), np.geomspace(1e-4, top, n_points)])):
        acc, speed, frac = evaluate(EntropyPolicy(float(t)), seg_logits, labels, seg_costs)
        points.append(SweepPoint(round(float(t), 6), round(acc, 3), round(full - acc, 3), round(speed, 4), frac))
    return full, points


def choose(points: list[SweepPoint], max_drop_pt: float) -> SweepPoint:
    """Largest expected speed-up with accuracy drop ≤ budget (threshold 0 = full depth always fits)."""
    ok = [p for p in points if p.accuracy_drop_pt <= max_drop_pt]
    return max(ok, key=lambda p: (p.expected_speedup, -p.threshold))


# ---- per-exit rules: exit scores, a greedy frontier over per-exit cuts, and the learned rule ----

def exit_scores(kind: str, seg_logits: list[np.ndarray], weights=None) -> np.ndarray:
    """[exits, n] score per sample and exit such that the rule leaves iff score > cut: −entropy for
    the entropy rule, the learned exit probability for `learned`. Scores do not depend on which
    samples left earlier (the carry a still-running sample has seen is every exit before)."""
    carry, rows = new_carry(len(seg_logits[0])), []
    for i, logits in enumerate(seg_logits[:-1]):
        if kind == "learned":
            w = np.asarray(weights[i])
            rows.append(0.5 * (1 + np.tanh((exit_features(logits, carry) @ w[:-1] + w[-1]) / 2)))
        else:
            rows.append(-entropy(logits))
        carry = track(logits, carry)
    return np.stack(rows)


def cuts_to_thresholds(kind: str, cuts: np.ndarray) -> list[float]:
    """Score cuts → the policy's thresholds (entropy < t ⇔ −entropy > −t; never: t = 0 / τ = 1)."""
    if kind == "learned":
        return [round(float(min(c, 1.0)), 6) for c in cuts]
    return [round(float(max(-c, 0.0)), 6) for c in cuts]


@dataclass(frozen=True)
class Outcome:
    cuts: np.ndarray  # [exits] leave at exit i iff score > cuts[i]
    accuracy: float  # percent
    expected_speedup: float
    exit_fractions: list[float]


def _segments(scores: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """[n] first segment that lets each sample go (the last one always does)."""
    leave = np.vstack([scores > cuts[:, None], np.ones((1, scores.shape[1]), bool)])  # [exits + 1, n]
    return leave.argmax(0)


def outcome(scores: np.ndarray, cuts: np.ndarray, correct: np.ndarray, cum: np.ndarray) -> Outcome:
    """Accuracy and expected speed-up of per-exit cuts; `correct` [exits + 1, n], `cum` cumulative costs."""
    seg = _segments(scores, cuts)
    frac = np.bincount(seg, minlength=len(cum)) / len(seg)
    return Outcome(cuts, float(correct[seg, np.arange(len(seg))].mean() * 100), float(cum[-1] / cum[seg].mean()),
                   [round(float(f), 4) for f in frac])


def _best_cut(i: int, scores: np.ndarray, cuts: np.ndarray, grid: np.ndarray, correct: np.ndarray,
              cum: np.ndarray, lam: float) -> float:
    """The cut of exit i in `grid` minimising mean cost / full cost + λ · error rate, the others fixed:
    a sample that left before i stays put; one that reaches i leaves there or where it would have next."""
    n, ar = scores.shape[1], np.arange(scores.shape[1])
    others = cuts.copy()
    others[i] = np.inf
    seg_without = _segments(scores, others)  # [n] where each sample goes if exit i never lets go
    reaches = seg_without > i
    stay_cost, stay_ok = cum[seg_without], correct[seg_without, ar]
    take = reaches[None] & (scores[i][None] > grid[:, None])  # [grid, n] leaves at i under each cut
    cost = np.where(take, cum[i], stay_cost).mean(1) / cum[-1]
    err = 1 - np.where(take, correct[i][None], stay_ok).sum(1) / n
    return float(grid[int(np.argmin(cost + lam * err))])


LAMBDAS = tuple(float(x) for x in np.geomspace(1, 300, 40))  # price of one error, in full passes


def frontier(scores: np.ndarray, seg_logits: list[np.ndarray], labels: np.ndarray, seg_costs: list[float],
             per_exit: bool = True, levels: int = 60, rounds: int = 3) -> list[Outcome]:
    """One outcome per λ in LAMBDAS: the cuts minimising mean cost + λ · error rate, found by the best
    single cut shared by every exit, then (per_exit) coordinate descent over one exit's cut at a time
    (`levels` quantiles of its scores, or never), `rounds` sweeps. The speed / accuracy frontier."""
    correct = np.stack([lg.argmax(-1) == labels for lg in seg_logits])  # [exits + 1, n]
    cum = np.cumsum(seg_costs)
    q = np.linspace(1, 0, levels + 1)
    grids = [np.concatenate([[np.inf], np.quantile(s, q)]) for s in scores]
    shared = np.concatenate([[np.inf], np.quantile(scores, q)])
    path = []
    for lam in LAMBDAS:
        cuts = _shared_cut(scores, shared, correct, cum, lam)
        for _ in range(rounds if per_exit else 0):
            before = cuts.copy()
            for i in range(len(scores)):
                cuts[i] = _best_cut(i, scores, cuts, np.append(grids[i], cuts[i]), correct, cum, lam)  # never worse
            if np.array_equal(before, cuts):
                break
        path.append(outcome(scores, cuts, correct, cum))
    return path


def _shared_cut(scores: np.ndarray, grid: np.ndarray, correct: np.ndarray, cum: np.ndarray, lam: float) -> np.ndarray:
    """The one cut for every exit minimising mean cost + λ · error rate."""
    def price(c: float) -> float:
        o = outcome(scores, np.full(len(scores), c), correct, cum)
        return 1 / o.expected_speedup + lam * (1 - o.accuracy / 100)
    return np.full(len(scores), min(grid, key=price))


def fit_exit_model(seg_logits: list[np.ndarray], l2: float = 1e-2, steps: int = 30) -> list[list[float]]:
    """BERxiT's learned exit: per exit, logistic regression (Newton's method, L2 on standardised
    features) of "this exit's answer is the final head's" on `exit_features`. → per exit 5 + 1 numbers."""
    final, carry, rows = seg_logits[-1].argmax(-1), new_carry(len(seg_logits[0])), []
    for logits in seg_logits[:-1]:
        x, y = exit_features(logits, carry), (logits.argmax(-1) == final).astype(np.float64)
        mu, sd = x.mean(0), np.where(x.std(0) > 1e-9, x.std(0), 1.0)
        z = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])  # [n, 6]
        w = np.zeros(z.shape[1])
        reg = np.diag([l2 * len(x)] * (z.shape[1] - 1) + [1e-4 * len(x)])  # the bias too: y may be constant
        for _ in range(steps):
            p = 0.5 * (1 + np.tanh(z @ w / 2))
            hess = z.T @ (z * (p * (1 - p))[:, None]) + reg + 1e-9 * np.eye(len(w))
            w -= np.linalg.solve(hess, z.T @ (p - y) + reg @ w)
        coef = w[:-1] / sd
        rows.append([round(float(c), 8) for c in coef] + [round(float(w[-1] - coef @ mu), 8)])
        carry = track(logits, carry)
    return rows


RULES = ("entropy", "entropy_per_exit", "learned")


@dataclass(frozen=True)
class RuleFit:
    """One exit rule calibrated on a split: settings, in-sample and cross-validated results, curve."""
    kind: str  # one of RULES
    thresholds: list[float]  # one per exit
    weights: list[list[float]] | None  # learned: per exit 5 coefficients + bias
    accuracy_drop_pt: float  # in-sample, on the whole split (optimistic: the settings were fitted on it)
    expected_speedup: float
    exit_fractions: list[float]
    cv_accuracy_drop_pt: float  # 5-fold: settings fitted on 4/5, measured on the held-out 1/5
    cv_expected_speedup: float
    curve: list[dict]  # per λ: lambda, cv drop / speed-up, in-sample drop / speed-up

    def policy(self) -> Policy:
        return rule_policy(self.kind, self.thresholds, self.weights)


def _rule_path(kind: str, seg_logits: list[np.ndarray], labels: np.ndarray, seg_costs: list[float]):
    weights = fit_exit_model(seg_logits) if kind == "learned" else None
    scores = exit_scores(kind, seg_logits, weights)
    return weights, frontier(scores, seg_logits, labels, seg_costs, per_exit=kind != "entropy")


def fit_rule(kind: str, seg_logits: list[np.ndarray], labels: np.ndarray, seg_costs: list[float],
             max_drop_pt: float, folds: int = 5, seed: int = 0) -> RuleFit:
    """Choose the rule's λ by k-fold cross-validation (largest held-out expected speed-up whose held-out
    drop is within budget; the settings fitted on a split are optimistic on it), then fit on the whole
    split at that λ."""
    n, k = len(labels), max(2, min(folds, len(labels) // 4))
    fold = np.random.default_rng(seed).permutation(n) % k
    cum, cv_drop, cv_speed = np.cumsum(seg_costs), np.zeros(len(LAMBDAS)), np.zeros(len(LAMBDAS))
    for f in range(k):
        tr, te = fold != f, fold == f
        weights, path = _rule_path(kind, [lg[tr] for lg in seg_logits], labels[tr], seg_costs)
        held = [lg[te] for lg in seg_logits]
        scores, correct = exit_scores(kind, held, weights), np.stack([lg.argmax(-1) == labels[te] for lg in held])
        for j, o in enumerate(path):
            h = outcome(scores, o.cuts, correct, cum)
            cv_drop[j] += (correct[-1].mean() * 100 - h.accuracy) * te.sum() / n
            cv_speed[j] += h.expected_speedup * te.sum() / n
    ok = np.flatnonzero(cv_drop <= max_drop_pt)
    j = int(ok[np.argmax(cv_speed[ok])]) if len(ok) else int(np.argmin(cv_drop))
    weights, path = _rule_path(kind, seg_logits, labels, seg_costs)
    fit = RuleFit(kind, cuts_to_thresholds(kind, path[j].cuts), weights, 0.0, 0.0, [], round(float(cv_drop[j]), 3),
                  round(float(cv_speed[j]), 4), [])
    acc, speed, frac = evaluate(fit.policy(), seg_logits, labels, seg_costs)  # the runtime's rule, replayed
    full = float((seg_logits[-1].argmax(-1) == labels).mean() * 100)
    curve = [{"lambda": round(lam, 4), "cv_accuracy_drop_pt": round(float(d), 3),
              "cv_expected_speedup": round(float(s), 4), "accuracy_drop_pt": round(full - o.accuracy, 3),
              "expected_speedup": round(o.expected_speedup, 4)}
             for lam, d, s, o in zip(LAMBDAS, cv_drop, cv_speed, path)]
    return RuleFit(kind, fit.thresholds, weights, round(full - acc, 3), round(speed, 4), frac,
                   fit.cv_accuracy_drop_pt, fit.cv_expected_speedup, curve)


def best_rule(fits: list[RuleFit], max_drop_pt: float) -> RuleFit:
    """The rule with the largest cross-validated speed-up within budget (ties: the simpler, earlier one)."""
    ok = [f for f in fits if f.cv_accuracy_drop_pt <= max_drop_pt] or fits[:1]
    return max(ok, key=lambda f: (f.cv_expected_speedup, -RULES.index(f.kind)))
