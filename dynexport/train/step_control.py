"""Calibrate an in-loop step policy's tolerance: the value whose validation mean SSIM (to the full-step
image) reaches a target with the fewest UNet calls, found by bisection on a log scale.

A larger tolerance stops or skips more: fewer calls, lower SSIM. The relation is monotone only on
average, so every evaluated point is kept (the curve) and the choice is the cheapest point that meets the
target, not the bisection's last one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    value: float  # the tolerance / threshold
    calls: float  # mean UNet calls per image
    ssim: float  # mean SSIM to the full-step image
    ssim_p5: float


def calibrate(evaluate: Callable[[float], Point], lo: float, hi: float, target: float,
              iters: int = 7) -> tuple[Point | None, list[Point]]:
    """Bisect log(value) in [lo, hi] for mean SSIM ≥ target → (cheapest point meeting it or None, curve)."""
    if not 0 < lo < hi or not math.isfinite(hi):
        raise ValueError(f"need 0 < lo < hi < inf, got {lo}, {hi}")
    curve = [evaluate(lo), evaluate(hi)]
    a, b = math.log(lo), math.log(hi)
    for _ in range(iters):
        mid = evaluate(math.exp((a + b) / 2))
        curve.append(mid)
        a, b = ((a + b) / 2, b) if mid.ssim >= target else (a, (a + b) / 2)
    ok = [p for p in curve if p.ssim >= target]
    return (min(ok, key=lambda p: (p.calls, -p.ssim)) if ok else None), sorted(curve, key=lambda p: p.value)


def same_mean_fixed(fixed: dict[int, float], calls: float) -> float:
    """Mean SSIM of a mix of the two neighbouring fixed counts whose mean is `calls` (fixed: count → SSIM)."""
    counts = sorted(fixed)
    if not counts[0] <= calls <= counts[-1]:
        raise ValueError(f"{calls} calls is outside the measured fixed counts {counts[0]}..{counts[-1]}")
    lo = max(c for c in counts if c <= calls)
    hi = min(c for c in counts if c >= calls)
    w = 0.0 if hi == lo else (calls - lo) / (hi - lo)
    return (1 - w) * fixed[lo] + w * fixed[hi]
