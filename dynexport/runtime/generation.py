"""The one generate loop of every causal-LM pipeline, in openvino.genai's shape:
`pipe.generate(prompt | [prompts], config=GenerationConfig(...), streamer=fn, **overrides) -> GenResult`.

It owns what speculative decoding and EAGLE share: the config and its checks, prompt encoding and
the context limit, the seeded rng, stop conditions (EOS, extra stop ids, stop strings, the token
limit), streaming whole characters, and the stats. A method plugs in a `Decoder`: `start(ids) → x`
(prefill, the first token) and `step(x, remaining) → [accepted drafts…, next token]` (one round).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from tokenizers import Tokenizer

from ..errors import InputError
from .config import resolve
from .policies import AdaptiveDraft, DraftPolicy, FixedDraft, TreeCfg
from .sampling import SamplingCfg, pick
from .text import tokenized

Streamer = Callable[[str], "bool | None"]  # gets each new piece of text; returning True stops generation


def as_draft(value) -> DraftPolicy | str | None:
    """A draft setting as a policy object: an int k → FixedDraft(k), "adaptive" → AdaptiveDraft();
    "tree" (the artifact's tree settings) and None (its default) stay for the pipeline to resolve."""
    if value is None or isinstance(value, (FixedDraft, AdaptiveDraft, TreeCfg)) or (isinstance(value, str)
                                                                                  and value == "tree"):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return FixedDraft(int(value))
    if isinstance(value, str) and value == "adaptive":
        return AdaptiveDraft()
    raise InputError(f"draft must be FixedDraft(k), AdaptiveDraft(), TreeCfg(...), an integer k, 'adaptive' "
                     f"or 'tree', got {value!r}")


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate (openvino.genai's GenerationConfig, plus how to draft). Defaults defined here once."""
    max_new_tokens: int = 64
    do_sample: bool = False  # False: greedy (speculative output equals the target's greedy output)
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    seed: int = 0
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()  # stop on these as well as the artifact's EOS ids
    stop_strings: tuple[str, ...] = ()  # stop when the text contains one (it is cut from the output)
    draft: DraftPolicy | str | None = None  # FixedDraft(k) | AdaptiveDraft() | TreeCfg(); None: the artifact's

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)
        _check_int("max_new_tokens", self.max_new_tokens, 1)
        _check_int("seed", self.seed, 0)
        if not isinstance(self.do_sample, bool) or not isinstance(self.ignore_eos, bool):
            raise InputError("do_sample and ignore_eos must be true or false")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not np.isfinite(t) or t < 0:
            raise InputError(f"temperature must be a number ≥ 0, got {t!r}")
        _check_int("top_k", self.top_k, 0)
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)):
            raise InputError(f"top_p must be a number, got {self.top_p!r}")
        self.sampling  # noqa: B018  (validates temperature / top_p ranges)
        put("stop_token_ids", _int_tuple("stop_token_ids", self.stop_token_ids))
        strings = (self.stop_strings,) if isinstance(self.stop_strings, str) else self.stop_strings
        if not isinstance(strings, (list, tuple)) or any(not isinstance(s, str) or not s for s in strings):
            raise InputError(f"stop_strings must be non-empty strings, got {self.stop_strings!r}")
        put("stop_strings", tuple(strings))
        put("draft", as_draft(self.draft))

    @property
    def sampling(self) -> SamplingCfg:
        return SamplingCfg(self.do_sample, self.temperature if self.do_sample else 1.0, self.top_k, self.top_p)


def _check_int(name: str, v, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        kind = "a positive integer" if lo == 1 else f"an integer ≥ {lo}"
        raise InputError(f"{name} must be {kind}, got {v!r}")


def _int_tuple(name: str, values) -> tuple[int, ...]:
    values = (values,) if isinstance(values, (int, np.integer)) else values
    if not isinstance(values, (list, tuple)):
        raise InputError(f"{name} must be a list of token ids, got {values!r}")
    out = tuple(values)
    for v in out:
        _check_int(name, v, 0)
    return tuple(int(v) for v in out)


@dataclass
class GenStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft_s: float = 0.0  # call start → first new token out
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

    def record_round(self, drafted: int, accepted: int) -> None:
        self.drafted, self.accepted = self.drafted + drafted, self.accepted + accepted
        self.draft_lengths.append(drafted)
        self.accepted_lengths.append(accepted)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("draft_lengths"), d.pop("accepted_lengths")
        d.update(tpot_s=self.tpot_s, tokens_per_s=self.tokens_per_s, acceptance_rate=self.acceptance_rate,
                 mean_accepted_length=self.mean_accepted_length,
                 mean_draft_length=float(np.mean(self.draft_lengths)) if self.draft_lengths else 0.0)
        return d


def merged(parts: Sequence[GenStats]) -> GenStats:
    """One call's stats over several prompts: counts and times summed; TTFT is the first prompt's (the
    time from the call to its first token), so TPOT covers everything after it."""
    out = GenStats(ttft_s=parts[0].ttft_s)
    for s in parts:
        for f in ("prompt_tokens", "new_tokens", "total_s", "target_calls", "draft_calls", "drafted", "accepted"):
            setattr(out, f, getattr(out, f) + getattr(s, f))
        out.draft_lengths += s.draft_lengths
        out.accepted_lengths += s.accepted_lengths
    return out


@dataclass(frozen=True)
class GenResult:
    """texts / tokens: one entry per prompt; stats: the whole call (per_prompt: each prompt's)."""
    texts: list[str]
    tokens: list[list[int]]
    stats: GenStats
    per_prompt: tuple[GenStats, ...] = ()

    @property
    def text(self) -> str:
        """The one completion of a single-prompt call."""
        if len(self.texts) != 1:
            raise InputError(f"this result holds {len(self.texts)} completions; use .texts")
        return self.texts[0]


@dataclass(frozen=True)
class Decoder:
    """A method's decoding, bound to its sessions, sampling settings, rng and stats for one prompt."""
    start: Callable[[list[int]], int]  # prompt ids → the first new token (prefill)
    step: Callable[[int, int], list[int]]  # (pending token x, tokens still allowed) → [accepted…, next]
    sessions: tuple  # LMSessions: the first one's calls become target_calls, the others' draft_calls


MakeDecoder = Callable[["GenerationConfig", np.random.Generator, "GenStats"], "Decoder"]


def generate(tokenizer: Tokenizer, eos_ids: Sequence[int], max_context: int, prompts, config,
             streamer: Streamer | None, overrides: dict, make_decoder: MakeDecoder) -> GenResult:
    """The loop every LM pipeline's generate() runs; `make_decoder` binds the method's round."""
    cfg = resolve(GenerationConfig, config, overrides)
    prompts_list = check_prompts(prompts)
    if streamer is not None and (not callable(streamer) or len(prompts_list) > 1):
        raise InputError("streamer must be a callable taking a str, and streams one prompt at a time")
    encoded = [encode_prompt(tokenizer, p) for p in prompts_list]
    for ids in encoded:
        check_context(len(ids), cfg.max_new_tokens, max_context)
    stops = set() if cfg.ignore_eos else set(eos_ids) | set(cfg.stop_token_ids)
    runs = [_one(tokenizer, ids, cfg, stops, streamer, make_decoder) for ids in encoded]
    per = tuple(s for _, _, s in runs)
    return GenResult([t for t, _, _ in runs], [ids for _, ids, _ in runs], merged(per), per)


def _one(tokenizer, ids: list[int], cfg: GenerationConfig, stops: set[int], streamer, make_decoder):
    rng = np.random.default_rng(cfg.seed)
    stats = GenStats(prompt_tokens=len(ids))
    out = _Output(tokenizer, streamer, stops, cfg.max_new_tokens, cfg.stop_strings)
    t0 = time.perf_counter()
    dec = make_decoder(cfg, rng, stats)
    x = dec.start(ids)
    stats.ttft_s = time.perf_counter() - t0
    while not out.push([x]):
        new = dec.step(x, cfg.max_new_tokens - len(out.tokens))
        if out.push(new[:-1]):
            break
        x = new[-1]
    stats.total_s = time.perf_counter() - t0
    stats.new_tokens = len(out.tokens)
    calls = [s.calls for s in dec.sessions]
    stats.target_calls, stats.draft_calls = calls[0], sum(calls[1:])
    for s in dec.sessions:
        s.calls = 0
    return out.final_text(), out.tokens, stats


def check_prompts(prompts) -> list[str]:
    one = isinstance(prompts, str)
    if not one and not (isinstance(prompts, (list, tuple)) and prompts):
        raise InputError(f"prompt must be a string or a non-empty list of strings, got {type(prompts).__name__}")
    return [prompts] if one else list(prompts)


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    if not isinstance(prompt, str):
        raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise InputError("prompt is empty")
    return tokenized("tokenizer.json", lambda: tokenizer.encode(prompt, add_special_tokens=False).ids)


def check_context(prompt_tokens: int, max_new_tokens: int, limit: int) -> None:
    """prompt + max_new_tokens fits the model's context."""
    if prompt_tokens + max_new_tokens > limit:
        raise InputError(f"prompt ({prompt_tokens} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                         f"context of {limit} tokens; shorten the prompt or generate fewer tokens")


def pick_next(session, ids: list[int], sampling: SamplingCfg, rng) -> int:
    """Feed ids to a session, keep them, and choose the token after them (prefill, or the target alone)."""
    logits = session.forward(ids, logits_from=-1)[0]  # [V]
    session.commit(len(ids))
    return pick(logits, sampling, rng)


class _Output:
    """Generated ids → text, with the stop conditions; streamed as complete characters (a byte-level BPE
    token may end mid-UTF-8) and never showing the start of a stop string that may still complete."""

    def __init__(self, tokenizer: Tokenizer, streamer, stops: set[int], limit: int, stop_strings: tuple[str, ...]):
        self.tok, self.streamer, self.stops, self.limit = tokenizer, streamer, stops, limit
        self.stop_strings, self.tokens, self._sent, self._cut = stop_strings, [], 0, None
        self._hold = max((len(s) for s in stop_strings), default=1) - 1

    def push(self, ids: list[int]) -> bool:
        """Append ids up to a stop condition; returns True when generation is finished."""
        done = False
        for i in ids:
            if i in self.stops:
                done = True
                break
            self.tokens.append(int(i))
            if self.stop_strings and self._stopped():
                done = True
                break
            if len(self.tokens) >= self.limit:
                done = True
                break
        if self.streamer is not None:
            done = self._stream(done) or done
        return done

    def _stopped(self) -> bool:
        text = self.text()
        hits = [i for i in (text.find(s) for s in self.stop_strings) if i >= 0]
        if hits:
            self._cut = min(hits)
        return bool(hits)

    def _stream(self, done: bool) -> bool:
        text = self.final_text()
        end = len(text) if done else len(text) - self._hold
        if not done and text[:end].endswith("\ufffd"):
            return False
        if end > self._sent:
            stop = self.streamer(text[self._sent:end])
            self._sent = end
            return stop is True
        return False

    def text(self) -> str:
        return self.tok.decode(self.tokens, skip_special_tokens=False)

    def final_text(self) -> str:
        text = self.text()
        return text if self._cut is None else text[: self._cut]
