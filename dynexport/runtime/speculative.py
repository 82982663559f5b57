"""Speculative decoding: a draft graph proposes tokens, the target graph verifies them in one call.

One round (`speculative_round`), with `x` the last token (sampled, not yet seen by either model):

    draft   : feed the tokens the draft has not seen → q₁; sample d₁ ~ q₁; feed d₁ → q₂ … → d_k
    verify  : target.forward([x, d₁ … d_k]) → p₁ … p_{k+1}            (one call, k+1 positions)
    accept  : for i = 1..k accept d_i with prob min(1, p_i(d_i)/q_i(d_i)); at the first rejection
              sample from norm(max(0, p_i − q_i)) and stop; if all k pass, sample a bonus from p_{k+1}
    roll back: both caches keep only the accepted tokens (the rest are masked, see kv.py)

Greedy is the same rule on one-hot distributions, so its output equals the target's greedy
decoding token for token. `FixedDraft(0)` runs the target alone (the baseline, same runtime). The
loop, stopping, streaming and stats are `generation.generate`'s.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..manifest import SpeculativeManifest
from .costs import relative_curve
from .generation import Decoder, GenerationConfig, GenResult, GenStats, Streamer, generate, pick_next
from .kv import EXACT_ROLLBACK, LMSession, target_cpu_config
from .policies import FALLBACK_COSTS, AcceptanceEstimate, AdaptiveDraft, FixedDraft, TreeCfg
from .sampling import SamplingCfg, accept_or_resample, sample, warp
from .text import load_tokenizer


class SpeculativePipeline:
    def __init__(self, root: Path, manifest: SpeculativeManifest, backend: str, device: str = "CPU",
                 threads: int | None = None):
        self.manifest, self.backend = manifest, backend
        self.tokenizer = load_tokenizer(root / manifest.tokenizer.file)
        self.target = LMSession(root, manifest.target, backend, device, threads, compact_after=EXACT_ROLLBACK,
                                cpu_config=target_cpu_config(manifest))
        self.draft = LMSession(root, manifest.draft, backend, device, threads)

    def generate(self, prompt: str | list[str], config: GenerationConfig | None = None, streamer: Streamer | None = None,
                 **overrides) -> GenResult:
        """Complete `prompt` (or each of a list); `config` and keyword overrides are GenerationConfig
        fields; draft=FixedDraft(k) | AdaptiveDraft() (default: the artifact's). The streamer gets each
        new piece of text as soon as it is accepted (return True to stop)."""
        tok = self.manifest.tokenizer
        return generate(self.tokenizer, tok.eos_ids, tok.max_context, prompt, config, streamer, overrides,
                        self._decoder)

    def _decoder(self, cfg: GenerationConfig, rng: np.random.Generator, stats: GenStats) -> Decoder:
        policy = self._policy(cfg.draft)
        sampling, target, draft = cfg.sampling, self.target, self.draft
        estimate = AcceptanceEstimate(policy) if isinstance(policy, AdaptiveDraft) else None
        pending: list[int] = []  # tokens the draft has not seen yet

        def start(ids: list[int]) -> int:
            target.reset(), draft.reset()
            pending[:] = ids
            return pick_next(target, ids, sampling, rng)

        def step(x: int, remaining: int) -> list[int]:
            k = min(estimate.next_k() if estimate else policy.k, remaining)
            if k == 0:
                pending.append(x)
                return [pick_next(target, [x], sampling, rng)]
            new, pending[:] = speculative_round(target, draft, x, pending, k, sampling, rng,
                                                self.manifest.tokenizer.vocab_size)
            stats.record_round(k, len(new) - 1)
            if estimate:
                estimate.update(k, len(new) - 1)
            return new

        return Decoder(start, step, (target, draft))

    def _policy(self, draft) -> FixedDraft | AdaptiveDraft:
        """The draft setting as a policy with its costs filled in (None: the artifact's default)."""
        d = self.manifest.defaults
        if draft is None:
            draft = FixedDraft(d.num_draft_tokens) if isinstance(d.num_draft_tokens, int) else AdaptiveDraft()
        if isinstance(draft, (TreeCfg, str)):
            raise InputError("draft trees are for EAGLE artifacts; speculative decoding takes FixedDraft(k) or "
                             "AdaptiveDraft()")
        if isinstance(draft, AdaptiveDraft):
            measured = d.draft_cost_ratio is not None
            curve = relative_curve(self.manifest.verify_ms, draft.k_max + 1) if self.manifest.verify_ms else None
            return dataclasses.replace(
                draft, cost_ratio=_first(draft.cost_ratio, d.draft_cost_ratio if measured else None,
                                         FALLBACK_COSTS.cost_ratio),
                verify_slope=_first(draft.verify_slope, d.verify_slope if measured else None,
                                    FALLBACK_COSTS.verify_slope),
                verify_cost=draft.verify_cost or (None if draft.verify_slope is not None else curve))
        return draft


def _first(*values):
    return next(v for v in values if v is not None)


def speculative_round(target: LMSession, draft: LMSession, x: int, pending: list[int], k: int,
                      cfg: SamplingCfg, rng, vocab_size: int) -> tuple[list[int], list[int]]:
    """Draft k tokens after x, verify, accept. Returns (accepted drafts + next token, draft pending)."""
    drafts, qs = draft_chain(draft, x, pending, k, cfg, rng, vocab_size)
    logits = target.forward([x, *drafts])  # [k+1, V]: one call verifies all k drafts
    n, tok = accept_chain(drafts, qs, logits, cfg, rng)
    target.commit(1 + n)
    unseen = k - 1  # draft calls after the first fed one draft token each: mask the rejected ones
    draft.discard_last(unseen - min(n, unseen))
    return [*drafts[:n], tok], ([drafts[-1]] if n == k else [])


def draft_chain(draft: LMSession, x: int, pending: list[int], k: int, cfg: SamplingCfg, rng, vocab_size: int):
    """k draft tokens (full-vocabulary ids) and, when sampling, their distributions q [V] each."""
    drafts, qs = [], []
    feed = pending + [x]
    for _ in range(k):
        logits = draft.forward(feed, logits_from=-1)[0]  # [V']
        draft.commit(len(feed))
        if cfg.greedy:
            d = int(draft.full_ids(int(logits.argmax())))
        else:
            q = draft_probs(draft, logits, cfg, vocab_size)  # [V]
            d = sample(q, rng)
            qs.append(q)
        drafts.append(d)
        feed = [d]
    return drafts, qs  # the draft has seen pending + x + d₁ … d_{k−1}; d_k is still unseen


def accept_chain(drafts: list[int], qs: list, logits: np.ndarray, cfg: SamplingCfg, rng) -> tuple[int, int]:
    """(number of drafts accepted, the token after them). Greedy: the rejection rule on one-hot p and q
    reduces to 'accept while the draft token is the target's argmax', computed without probabilities."""
    if cfg.greedy:
        target = logits.argmax(-1)  # [k+1]
        n = next((i for i, d in enumerate(drafts) if d != target[i]), len(drafts))
        return n, int(target[n])
    ps = warp(logits, cfg)  # [k+1, V]
    for i, d in enumerate(drafts):
        ok, tok = accept_or_resample(ps[i], qs[i], d, rng)
        if not ok:
            return i, tok
    return len(drafts), sample(ps[len(drafts)], rng)


def draft_probs(draft: LMSession, logits: np.ndarray, cfg: SamplingCfg, vocab_size: int) -> np.ndarray:
    """Draft logits [V'] → warped probabilities over the full vocabulary [V]."""
    q_small = warp(logits, cfg)
    if draft.vocab_ids is None:
        return q_small
    q = np.zeros(vocab_size, np.float64)
    q[draft.vocab_ids] = q_small
    return q
