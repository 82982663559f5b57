"""Goodness-of-fit for sampling exactness checks (tests, scripts/genai_exactness.py)."""

from __future__ import annotations

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
