"""Statistics the benchmarks and tests share: goodness of fit for sampling exactness checks (tests,
scripts/genai_exactness.py) and the paired bootstrap CI of a difference in mean over the same items."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pvalue(expected: dict, observed: dict, n: int) -> float:
    """Chi-square goodness of fit of `observed` counts (n draws) to `expected` probabilities; cells
    expected < 5 times are pooled into one 'other' cell."""
    from scipy import stats
    keys = [key for key, e in expected.items() if e * n >= 5]
    obs = [observed.get(key, 0) for key in keys]
    exp = [expected[key] * n for key in keys]
    obs_other, exp_other = n - sum(obs), n - sum(exp)
    if exp_other > 1e-6 * n:
        obs, exp = obs + [obs_other], exp + [exp_other]
    elif obs_other:
        return 0.0  # outcomes the target gives probability 0
    if len(obs) == 1:
        return 1.0  # a single possible outcome, and only it was observed
    return float(stats.chisquare(obs, np.array(exp) * sum(obs) / sum(exp)).pvalue)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], reps: int = 4000, seed: int = 0) -> dict:
    """Mean of a − b over the same items (problems, texts), in points, with a 95% percentile CI by
    resampling items; `separated`: the CI excludes 0."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (reps, len(d)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"diff_pt": 100 * float(d.mean()), "ci95_pt": [100 * float(lo), 100 * float(hi)],
            "separated": bool(lo > 0 or hi < 0)}
