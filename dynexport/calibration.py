"""Threshold calibration for early exit, in numpy: replay the exit rule on every exit's logits.

Given each exit's logits for a labelled split (one full-depth pass collects them all) and each
segment's measured cost, `sweep` gives accuracy and expected speed-up per entropy threshold, and
`choose` picks the largest speed-up whose accuracy drop vs full depth stays within the budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .runtime.policies import EntropyPolicy, Policy, new_carry


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
        leave, carry_new = policy.decide(logits, carry)
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
