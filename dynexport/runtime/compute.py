"""Compute accounting for the inference strategies: FLOPs of the tokens a model processed, and the
per-model tally a strategy returns.

FLOPs per token follow Kaplan et al. 2020 as the inference-scaling paper does (Wu et al. 2024):
2·N + 2·n_layer·n_ctx·d_attn, N the parameters the token multiplies through (decoder layers and LM
head, `LMGraph.params`), n_ctx the tokens it attends to. `tokens_flops(graph, n, context)` sums it
over n tokens appended after `context` cached ones (a prefill, a decoded token, a scored candidate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ..errors import InputError
from ..manifest import LMGraph


def tokens_flops(graph: LMGraph, n: int, context: int) -> float:
    """FLOPs of n tokens appended after `context` tokens: Σ_i 2N + 2·L·(context + i)·d_attn."""
    if graph.params is None or graph.attention_dim is None:
        raise InputError("this artifact predates FLOPs accounting (its manifest has no params); export it again")
    attended = n * context + n * (n - 1) / 2  # Σ_{i<n} (context + i)
    return 2.0 * graph.params * n + 2.0 * graph.num_layers * graph.attention_dim * attended


@dataclass
class ModelCompute:
    """What one model did for a strategy: tokens prefilled (prompts), generated, scored (as a reward
    model) and their FLOPs; `independent_flops`: what the same tokens cost with no shared prefix (each
    sequence prefilling the prompt itself), the saving of prefix reuse."""
    prefill_tokens: int = 0
    generated_tokens: int = 0
    scored_tokens: int = 0
    flops: float = 0.0
    independent_flops: float = 0.0
    calls: int = 0
    wall_s: float = 0.0

    def add(self, other: ModelCompute) -> ModelCompute:
        return ModelCompute(**{k: getattr(self, k) + getattr(other, k) for k in asdict(self)})

    def to_json(self) -> dict:
        return asdict(self)


def shared_prefix(graph: LMGraph, prefix: int, lengths: Sequence[int], calls: int = 0, wall_s: float = 0.0,
                  generated: bool = True) -> ModelCompute:
    """One prefill of `prefix` tokens, then one sequence of each length after it (generated, or scored
    when generated=False); independent_flops: each sequence prefilling the prefix itself."""
    flops = tokens_flops(graph, prefix, 0) + sum(tokens_flops(graph, n, prefix) for n in lengths)
    alone = sum(tokens_flops(graph, prefix + n, 0) for n in lengths)
    n = int(sum(lengths))
    return ModelCompute(prefill_tokens=prefix, generated_tokens=n if generated else 0, scored_tokens=0 if generated else n,
                        flops=flops, independent_flops=alone, calls=calls, wall_s=wall_s)
