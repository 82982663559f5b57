"""Speculative decoding: a draft graph proposes tokens, the target graph verifies them in one call.

One round, with `x` the last token (sampled, not yet seen by either model):

    draft   : feed the tokens the draft has not seen → q₁; sample d₁ ~ q₁; feed d₁ → q₂ … → d_k
    verify  : target.forward([x, d₁ … d_k]) → p₁ … p_{k+1}            (one call, k+1 positions)
    accept  : for i = 1..k accept d_i with prob min(1, p_i(d_i)/q_i(d_i)); at the first rejection
              sample from norm(max(0, p_i − q_i)) and stop; if all k pass, sample a bonus from p_{k+1}
    roll back: both caches keep only the accepted tokens (the rest are masked, see kv.py)

Greedy is the same rule on one-hot distributions, so its output equals the target's greedy
decoding token for token. `num_draft_tokens=0` runs the target alone (the baseline, same runtime).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tokenizers import Tokenizer

from ..errors import InputError
from ..manifest import SpeculativeManifest
from .kv import LMSession
from .policies import AdaptiveDraft, FixedDraft
from .sampling import SamplingCfg, accept_or_resample, pick, sample, warp


@dataclass
class GenStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft_s: float = 0.0  # prompt in → first new token out
    total_s: float = 0.0
    target_calls: int = 0
    draft_calls: int = 0
    drafted: int = 0  # draft tokens proposed
    accepted: int = 0  # draft tokens accepted
    draft_lengths: list[int] = field(default_factory=list)  # k (or tree size) per round
    accepted_lengths: list[int] = field(default_factory=list)  # drafts accepted per round

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first."""
        return (self.total_s - self.ttft_s) / max(self.new_tokens - 1, 1)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.total_s if self.total_s else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens produced per target call in the decode phase (accepted drafts + the target's own)."""
        rounds = len(self.draft_lengths)
        return (self.accepted + rounds) / rounds if rounds else 1.0

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("draft_lengths"), d.pop("accepted_lengths")
        d.update(tpot_s=self.tpot_s, tokens_per_s=self.tokens_per_s, acceptance_rate=self.acceptance_rate,
                 mean_accepted_length=self.mean_accepted_length,
                 mean_draft_length=float(np.mean(self.draft_lengths)) if self.draft_lengths else 0.0)
        return d


@dataclass(frozen=True)
class GenResult:
    text: str
    tokens: list[int]
    stats: GenStats


class SpeculativePipeline:
    def __init__(self, root: Path, manifest: SpeculativeManifest, backend: str, device: str = "CPU",
                 threads: int | None = None):
        self.manifest, self.backend = manifest, backend
        self.tokenizer = Tokenizer.from_file(str(root / manifest.tokenizer.file))
        self.target = LMSession(root, manifest.target, backend, device, threads)
        self.draft = LMSession(root, manifest.draft, backend, device, threads)
        self.eos = set(manifest.tokenizer.eos_ids)

    def encode(self, prompt: str) -> list[int]:
        return encode_prompt(self.tokenizer, prompt)

    def generate(self, prompt: str, max_new_tokens: int = 64, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                 num_draft_tokens: int | str | None = None, ignore_eos: bool = False,
                 streamer: Callable[[str], None] | None = None) -> GenResult:
        """Generate up to `max_new_tokens` after `prompt`; k = `num_draft_tokens` (int, 0 = target
        alone, or "adaptive"); streamer gets each new piece of text as soon as it is accepted."""
        cfg = SamplingCfg(do_sample, temperature if do_sample else 1.0, top_k, top_p)
        check_request(0, max_new_tokens, None)
        policy = self._policy(num_draft_tokens)
        ids = self.encode(prompt)
        check_request(len(ids), max_new_tokens, self.manifest.tokenizer.max_context)
        rng = np.random.default_rng(seed)
        stats = GenStats(prompt_tokens=len(ids))
        out = _Output(self.tokenizer, streamer)
        t0 = time.perf_counter()
        self.target.reset(), self.draft.reset()
        logits = self.target.forward(ids)[-1]  # [V]
        self.target.commit(len(ids))
        x = pick(logits, cfg, rng)
        stats.ttft_s = time.perf_counter() - t0
        draft_pending = list(ids)  # tokens the draft has not seen yet
        while True:
            done = out.push([x], self.eos, max_new_tokens, ignore_eos)
            if done:
                break
            k = min(policy.next_k(), max_new_tokens - len(out.tokens))
            if k == 0:
                logits = self.target.forward([x])[-1]  # [V]
                self.target.commit(1)
                x = pick(logits, cfg, rng)
                continue
            new, draft_pending = self._round(x, draft_pending, k, cfg, rng, stats)
            policy.update(k, len(new) - 1)
            done = out.push(new[:-1], self.eos, max_new_tokens, ignore_eos)
            if done:
                break
            x = new[-1]
        return finish(out, stats, t0, self.target, self.draft)

    def _round(self, x: int, pending: list[int], k: int, cfg: SamplingCfg, rng, stats: GenStats):
        """Draft k tokens after x, verify, accept. Returns (accepted drafts + next token, draft pending)."""
        drafts, qs = self._draft(x, pending, k, cfg, rng)
        logits = self.target.forward([x, *drafts])  # [k+1, V]: one call verifies all k drafts
        n, tok = self._accept(drafts, qs, logits, cfg, rng)
        self.target.commit(1 + n)
        self._rollback_draft(k, n)
        stats.drafted, stats.accepted = stats.drafted + k, stats.accepted + n
        stats.draft_lengths.append(k), stats.accepted_lengths.append(n)
        return [*drafts[:n], tok], ([drafts[-1]] if n == k else [])

    def _draft(self, x: int, pending: list[int], k: int, cfg: SamplingCfg, rng):
        """k draft tokens (full-vocabulary ids) and, when sampling, their distributions q [V] each."""
        drafts, qs = [], []
        feed = pending + [x]
        for _ in range(k):
            logits = self.draft.forward(feed)[-1]  # [V']
            self.draft.commit(len(feed))
            if cfg.greedy:
                d = int(self.draft.full_ids(int(logits.argmax())))
            else:
                q = self._draft_probs(logits, cfg)  # [V]
                d = sample(q, rng)
                qs.append(q)
            drafts.append(d)
            feed = [d]
        return drafts, qs  # the draft has seen pending + x + d₁ … d_{k−1}; d_k is still unseen

    @staticmethod
    def _accept(drafts: list[int], qs: list, logits: np.ndarray, cfg: SamplingCfg, rng) -> tuple[int, int]:
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

    def _rollback_draft(self, k: int, n: int) -> None:
        """Mask the draft's rejected tokens: it fed d₁ … d_{k−1} one call each, n were accepted."""
        unseen = k - 1  # draft calls after the first fed one draft token each
        self.draft.discard_last(unseen - min(n, unseen))

    def _draft_probs(self, logits: np.ndarray, cfg: SamplingCfg) -> np.ndarray:
        """Draft logits [V'] → warped probabilities over the full vocabulary [V]."""
        q_small = warp(logits, cfg)
        if self.draft.vocab_ids is None:
            return q_small
        q = np.zeros(self.manifest.tokenizer.vocab_size, np.float64)
        q[self.draft.vocab_ids] = q_small
        return q

    def _policy(self, k):
        k = self.manifest.defaults.get("num_draft_tokens", 4) if k is None else k
        if k == "adaptive":
            d = self.manifest.defaults
            return AdaptiveDraft(cost_ratio=float(d.get("draft_cost_ratio", 0.15)),
                                 verify_slope=float(d.get("verify_slope", 0.02)))
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 16:
            raise InputError(f"num_draft_tokens must be an integer in 0..16 or 'adaptive', got {k!r}")
        return FixedDraft(k)


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    if not isinstance(prompt, str):
        raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise InputError("prompt is empty")
    return tokenizer.encode(prompt, add_special_tokens=False).ids


def check_request(prompt_tokens: int, max_new_tokens, limit: int | None) -> None:
    """max_new_tokens is a positive int and prompt + max_new_tokens fits the context (limit None: skip)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if limit is not None and prompt_tokens + max_new_tokens > limit:
        raise InputError(f"prompt ({prompt_tokens} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                         f"context of {limit} tokens; shorten the prompt or generate fewer tokens")


def finish(out: "_Output", stats: GenStats, t0: float, target: LMSession, draft: LMSession) -> GenResult:
    """Close one generate() call: wall time, tokens, graph calls (the sessions' counters restart)."""
    stats.total_s = time.perf_counter() - t0
    stats.new_tokens = len(out.tokens)
    stats.target_calls, stats.draft_calls = target.calls, draft.calls
    target.calls = draft.calls = 0
    return GenResult(out.text(), out.tokens, stats)


class _Output:
    """Generated ids → text, streamed as complete characters (a byte-level BPE token may end mid-UTF-8)."""

    def __init__(self, tokenizer: Tokenizer, streamer):
        self.tok, self.streamer, self.tokens, self._sent = tokenizer, streamer, [], 0

    def push(self, ids: list[int], eos: set[int], limit: int, ignore_eos: bool) -> bool:
        """Append ids up to EOS / the limit; returns True when generation is finished."""
        done = False
        for i in ids:
            if i in eos and not ignore_eos:
                done = True
                break
            self.tokens.append(int(i))
            if len(self.tokens) >= limit:
                done = True
                break
        if self.streamer is not None:
            text = self.text()
            if done or not text.endswith("\ufffd"):
                self.streamer(text[self._sent:])
                self._sent = len(text)
        return done

    def text(self) -> str:
        return self.tok.decode(self.tokens, skip_special_tokens=False)
