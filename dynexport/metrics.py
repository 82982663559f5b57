"""Metrics in numpy: SSIM between images (the convergence test of StepSaver), and the share of a
target's variance that a grouping explains beyond chance (what decides the step labels).

SSIM as Wang et al. 2004 with skimage's defaults: 7×7 uniform window, K1 = 0.01, K2 = 0.03, sample
covariance (N−1), mean over the valid (unpadded) window positions, then over channels.
"""

from __future__ import annotations

import numpy as np

WIN = 7


def _box(x: np.ndarray) -> np.ndarray:
    """Mean over every WIN×WIN window of the last two axes (valid positions only)."""
    c = np.cumsum(np.cumsum(x, -1), -2)
    c = np.pad(c, [(0, 0)] * (x.ndim - 2) + [(1, 0), (1, 0)])
    s = c[..., WIN:, WIN:] - c[..., :-WIN, WIN:] - c[..., WIN:, :-WIN] + c[..., :-WIN, :-WIN]
    return s / (WIN * WIN)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """SSIM per image: a, b [..., H, W, C] (same shape, e.g. uint8 images) → [...]."""
    if a.shape != b.shape or a.ndim < 3:
        raise ValueError(f"ssim needs two [..., H, W, C] arrays of one shape, got {a.shape} and {b.shape}")
    x = np.moveaxis(a.astype(np.float64), -1, -3)  # [..., C, H, W]
    y = np.moveaxis(b.astype(np.float64), -1, -3)
    cov = WIN * WIN / (WIN * WIN - 1)
    mx, my = _box(x), _box(y)
    vx, vy = cov * (_box(x * x) - mx * mx), cov * (_box(y * y) - my * my)
    vxy = cov * (_box(x * y) - mx * my)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))  # [..., C, h, w]
    return s.mean((-1, -2, -3))


def group_share(y: np.ndarray, groups: np.ndarray, shuffles: int = 2000, seed: int = 0) -> dict:
    """R² of the group means of y, its permutation null, p-value and the excess share of variance."""
    def r2(g: np.ndarray) -> float:
        mean = (np.bincount(g, y) / np.bincount(g))[g]
        return float(1 - ((y - mean) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    rng = np.random.default_rng(seed)
    obs, null = r2(groups), np.array([r2(rng.permutation(groups)) for _ in range(shuffles)])
    return {"r2": obs, "null_mean": float(null.mean()), "p": float((null >= obs).mean()),
            "share": float((obs - null.mean()) / (1 - null.mean()))}
