"""Analysis for scripts/bench_strategies.py: one pool of samples per problem, subsampled at every budget.

A pool record (one problem, one generator) holds its candidates as plain dicts: `key` (behaviour
signature, JSON-able), `answered`, `passed` (hidden tests: grading only), rewards (`self`, `task`,
`lm`, `product`), `tokens` (generated) and `scored` (re-encoded tokens the reward model read), plus the
prompt length. `expected_at_budget` draws `draws` random subsets of size b (seeded), applies a
strategy's `select` to each and averages whether the chosen answer passes and what the subset cost:
policy FLOPs (one prefill + the subset's tokens) and total FLOPs (+ the reward model's scoring).
(`stats.paired_bootstrap` gives the CI of a difference in mean pass rate over the same problems.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dynexport.runtime.compute import tokens_flops
from dynexport.runtime.strategies import Candidate, select


def as_candidates(pool: dict) -> tuple[list[Candidate], list]:
    cands = [Candidate("", (), True if c["answered"] else None, c["rewards"]) for c in pool["candidates"]]
    keys = [tuple(c["key"]) if c["key"] is not None else None for c in pool["candidates"]]
    return cands, keys


def subset_cost(pool: dict, idx: Sequence[int], graph, reward_graph, reward: str | None) -> tuple[float, float]:
    """(policy FLOPs, reward-model FLOPs) of generating the candidates idx (one shared prefill) and,
    when the reward needs the reward model, scoring them."""
    p, cs = pool["prompt_tokens"] - 1, pool["candidates"]
    policy = tokens_flops(graph, p, 0) + sum(tokens_flops(graph, cs[i]["tokens"], p) for i in idx)
    if reward not in ("lm", "product") or reward_graph is None:
        return policy, 0.0
    return policy, tokens_flops(reward_graph, p, 0) + sum(tokens_flops(reward_graph, cs[i]["scored"], p) for i in idx)


def expected_at_budget(pool: dict, strategy: str, budget: int, reward: str, graph, reward_graph,
                       draws: int, seed: int) -> dict:
    """Mean over `draws` random size-`budget` subsets of the pool: pass (of the chosen answer), policy
    and total FLOPs, the fraction with no answer. budget = pool size: the one full pool. The votes'
    policy FLOPs include `pool["key_flops"]` (the model writing its own test inputs), when present."""
    cands, keys = as_candidates(pool)
    n = len(cands)
    if budget > n:
        raise ValueError(f"budget {budget} exceeds the pool of {n}")
    rng = np.random.default_rng(seed)
    subsets = [list(range(n))] if budget == n else [sorted(rng.choice(n, budget, replace=False)) for _ in range(draws)]
    passed, pol, tot, none = [], [], [], 0
    needs = reward if strategy in ("best_of_n", "weighted") else None
    for idx in subsets:
        j = select(strategy, [cands[i] for i in idx], [keys[i] for i in idx], reward)
        passed.append(0.0 if j is None else float(pool["candidates"][idx[j]]["passed"]))
        none += j is None
        f_pol, f_rm = subset_cost(pool, idx, graph, reward_graph, needs)
        f_pol += pool.get("key_flops", 0.0) if strategy in ("majority", "weighted") else 0.0
        pol.append(f_pol)
        tot.append(f_pol + f_rm)
    return {"pass": float(np.mean(passed)), "policy_flops": float(np.mean(pol)), "total_flops": float(np.mean(tot)),
            "no_answer": none / len(subsets)}
