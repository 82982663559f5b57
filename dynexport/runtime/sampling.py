"""Numpy sampling shared by every generator: logits warping, sampling, and the speculative rejection rule.

`warp(logits, cfg)` turns logits into the distribution generation samples from (temperature, then
top-k, then top-p, renormalised); greedy is temperature 0 (a one-hot at the argmax). The same
function is applied to the target's and the draft's logits, which is what keeps speculative
sampling exact: accept a draft token x ~ q with probability min(1, p(x)/q(x)), otherwise sample
from norm(max(0, p − q)) (Leviathan et al. 2023; Chen et al. 2023).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class SamplingCfg:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off

    def __post_init__(self):
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise InputError(f"temperature must be ≥ 0, got {self.temperature}")
        if self.do_sample and self.temperature == 0:
            raise InputError("temperature 0 means greedy: pass do_sample=False instead")
        if self.top_k < 0:
            raise InputError(f"top_k must be ≥ 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return not self.do_sample


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z, dtype=np.float64)
    return e / e.sum(axis=-1, keepdims=True)


def warp(logits: np.ndarray, cfg: SamplingCfg) -> np.ndarray:
    """logits [..., V] → probabilities [..., V] (float64) after temperature / top-k / top-p."""
    if cfg.greedy:
        out = np.zeros(logits.shape, np.float64)
        np.put_along_axis(out, logits.argmax(-1)[..., None], 1.0, axis=-1)
        return out
    x = logits.astype(np.float64) / cfg.temperature
    if cfg.top_k and cfg.top_k < x.shape[-1]:
        kth = np.partition(x, -cfg.top_k, axis=-1)[..., -cfg.top_k, None]
        x = np.where(x < kth, -np.inf, x)
    p = softmax(x)
    if cfg.top_p < 1.0:
        order = np.argsort(-p, axis=-1)
        sorted_p = np.take_along_axis(p, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass strictly before each token
        keep_sorted = before < cfg.top_p  # the smallest prefix whose mass reaches top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    return p


def sample(p: np.ndarray, rng: np.random.Generator) -> int:
    """One token id from a probability vector [V] (inverse CDF; exact, deterministic given rng)."""
    c = np.cumsum(p)
    return int(min(np.searchsorted(c, rng.random() * c[-1], side="right"), len(p) - 1))


def pick(logits: np.ndarray, cfg: SamplingCfg, rng: np.random.Generator) -> int:
    """The next token from logits [V]: the argmax when greedy, else a sample of the warped distribution."""
    return int(logits.argmax()) if cfg.greedy else sample(warp(logits, cfg), rng)


def accept_or_resample(p: np.ndarray, q: np.ndarray, token: int, rng: np.random.Generator) -> tuple[bool, int]:
    """The speculative rejection rule for one drafted `token` ~ q against target p (both [V]).

    Returns (True, token) if accepted, else (False, a token from norm(max(0, p − q))).
    """
    pt, qt = p[token], q[token]
    if qt > 0 and rng.random() * qt < pt:  # u < p/q without dividing
        return True, token
    residual = np.maximum(p - q, 0.0)
    total = residual.sum()
    if total <= 0:  # p == q: any rejection is a measure-zero event; fall back to p itself
        return False, sample(p, rng)
    return False, sample(residual / total, rng)


def recursive_reject(p: np.ndarray, candidates: list[int], rng: np.random.Generator) -> tuple[int | None, np.ndarray]:
    """Multi-candidate rejection over fixed draft candidates (a tree node's children, best first).

    Each candidate c is a point-mass proposal: accepted with probability p(c), else p loses c and is
    renormalised (the residual norm(max(0, p − δ_c))). Returns (index of the accepted candidate, p) or
    (None, the final residual to sample the next token from): the token that comes out follows p exactly.
    """
    p = p.copy()
    for j, c in enumerate(candidates):
        if rng.random() < p[c]:
            return j, p
        p[c] = 0.0
        total = p.sum()
        if total <= 0:  # cannot happen unless p is degenerate; p(c) = 1 is always accepted
            raise ValueError("target distribution has no mass left after rejecting the candidates")
        p /= total
    return None, p
