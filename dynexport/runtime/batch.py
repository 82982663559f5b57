"""Many continuations of one prompt decoded together: `BatchLM`, one KV graph driven with batch > 1.

One prefill of the prompt (batch 1), then `fork(rows)` makes the next call's batch out of those rows
of the cache — N copies of the prompt's cache for N samples, or each REBASE node's cache repeated once
per child — without recomputing anything: OpenVINO's stateful graphs gather their state by the
`beam_idx` input (optimum-intel's make_stateful), ONNX graphs get their explicit cache rows taken.

Every call appends T slots to every row; row b's real tokens are the first `lengths[b]` of them, the
rest is padding that row b never attends to (its own valid-slot mask), so rows advance at their own
pace (a row that finished a line waits while the others finish theirs). Positions count each row's
valid slots. `sample_rows` is the batched sampling loop on top: N completions of one prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..manifest import LMGraph
from .kv import NEG, empty_past, explicit_call, open_lm
from .sampling import SamplingCfg, pick


class BatchLM:
    """A causal-LM graph whose cache holds B rows, each with its own valid slots."""

    def __init__(self, root: Path, spec: LMGraph, backend: str, device: str = "CPU", threads: int | None = None,
                 cpu_config: dict | None = None):
        self.spec = spec
        self.graph, self.stateful, self.vocab_ids = open_lm(root, spec, backend, device, threads, cpu_config)
        self.sliced = "logits_index" in self.graph.input_names
        self.calls = self.tokens_in = 0  # graph calls; slots appended over all rows (compute accounting)
        self.reset()

    def reset(self) -> None:
        self.valid = np.zeros((1, 0), bool)  # [B, S] which cache slots each row attends to
        self._beam = np.zeros(1, np.int32)  # the rows of the cache the next call continues
        if self.stateful:
            self.graph.reset_state()
        else:
            self.past = empty_past(self.spec)

    @property
    def rows(self) -> int:
        return self.valid.shape[0]

    @property
    def lengths(self) -> np.ndarray:
        """[B] tokens each row holds."""
        return self.valid.sum(1)

    def fork(self, rows: Sequence[int]) -> None:
        """The next call continues these rows of the cache (repeats allowed: children of one parent)."""
        idx = np.asarray(rows, np.int64)
        if idx.ndim != 1 or not idx.size or idx.min() < 0 or idx.max() >= self.rows:
            raise ValueError(f"fork rows must be 1..n indices below {self.rows}, got {list(rows)}")
        self.valid = self.valid[idx]
        if self.stateful:
            self._beam = self._beam[idx]  # composes with a fork not yet applied by a call
        else:
            self.past = [p[idx] for p in self.past]

    def append(self, ids: np.ndarray, lengths: Sequence[int] | None = None, logits_from: int = 0) -> np.ndarray:
        """ids [B, T]: row b's first lengths[b] tokens (default all T) join its cache → logits
        [B, T − logits_from, V'] (a slice start like `LMSession.run`; padding rows' logits are junk)."""
        ids = np.asarray(ids, np.int64)
        b, t = ids.shape
        lens = np.full(b, t) if lengths is None else np.asarray(lengths, np.int64)
        if b != self.rows or lens.shape != (b,) or lens.min() < 0 or lens.max() > t:
            raise ValueError(f"append: ids {ids.shape} with lengths {lens.tolist()} for a cache of {self.rows} rows")
        slots = self.valid.shape[1]
        pos = self.lengths[:, None] + np.arange(t)[None]  # [B, T]
        mask = np.full((b, 1, t, slots + t), NEG, np.float32)  # [B, 1, T, S+T] additive
        mask[:, 0, :, :slots] = np.where(self.valid[:, None, :], 0.0, NEG)
        mask[:, 0, :, slots:] = np.where(np.tril(np.ones((t, t), bool)), 0.0, NEG)
        feed = {"input_ids": ids, "position_ids": pos, "attention_mask": mask}
        rows = np.arange(t, dtype=np.int64)[logits_from:]
        if self.sliced:
            feed["logits_index"] = rows
        logits = self._infer(feed)["logits"]
        self.valid = np.concatenate([self.valid, np.arange(t)[None] < lens[:, None]], axis=1)
        self.calls, self.tokens_in = self.calls + 1, self.tokens_in + int(b * t)
        return logits if self.sliced else logits[:, rows]

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.stateful:
            out = self.graph(**feed, beam_idx=self._beam)
            self._beam = np.arange(self.rows, dtype=np.int32)
            return out
        out, self.past = explicit_call(self.graph, self.spec, self.past, feed)
        return out

    def full_ids(self, columns):
        return columns if self.vocab_ids is None else self.vocab_ids[columns]


def logsumexp(x: np.ndarray) -> np.ndarray:
    """x [..., V] → [...] log Σ exp(x): exp in x's dtype (float32 logits: 10x faster than float64),
    summed in float64."""
    m = x.max(axis=-1, keepdims=True)
    return (m.astype(np.float64) + np.log(np.exp(x - m).sum(axis=-1, keepdims=True, dtype=np.float64)))[..., 0]


def log_softmax(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) - logsumexp(x)[..., None]


def token_logprobs(logits: np.ndarray, tokens: Sequence[int]) -> np.ndarray:
    """logits [n, V] → [n] log p(tokens[i]) under row i (float64)."""
    idx = np.asarray(tokens, np.int64)
    return logits[np.arange(len(idx)), idx].astype(np.float64) - logsumexp(logits[: len(idx)])


def score_rows(lm: BatchLM, pending: Sequence[int], seqs: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Row b's cache (all of its sequence but `pending[b]`) reads seqs[b] → each token's log-prob [len]
    under the model; a row with an empty seq only waits (its cache is unchanged)."""
    t = max(max(map(len, seqs)), 1)
    ids = np.zeros((len(seqs), t), np.int64)  # [rows, T]: pending + seq[:-1], padded
    for j, (x, q) in enumerate(zip(pending, seqs)):
        ids[j, : len(q)] = [x, *q[:-1]][: len(q)]
    logits = lm.append(ids, [len(q) for q in seqs])  # [rows, T, V']
    return [token_logprobs(logits[j], q) for j, q in enumerate(seqs)]


@dataclass
class Row:
    """One sampled continuation: the cache row it started from, its tokens, each token's log-prob under the
    model (temperature 1), whether it is finished."""
    index: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    done: bool = False


def prefill(lm: BatchLM, prompt: Sequence[int]) -> np.ndarray:
    """Reset and feed the prompt as the one row → the logits [V'] after its last token."""
    lm.reset()
    return lm.append(np.asarray([prompt], np.int64), logits_from=-1)[0, 0]


def sample_rows(lm: BatchLM, pending: Sequence[int], sampling: SamplingCfg, rng: np.random.Generator,
                max_new: int, finished, keep_finished: bool = False) -> list[Row]:
    """One continuation per cache row, decoded together: row b's cache holds all of its sequence but
    its last token `pending[b]` (full-vocabulary id), which the first call feeds. `finished(row) → bool`
    ends a row (EOS, a stop string, a step delimiter), as does max_new. Finished rows leave the batch
    (a fork of the live rows), or with keep_finished stay as padding so that every row's cache survives
    (a REBASE step: each row's cache then holds its sequence but the row's last token)."""
    if len(pending) != lm.rows:
        raise ValueError(f"{len(pending)} pending tokens for a cache of {lm.rows} rows")
    out = [Row(i) for i in range(lm.rows)]
    batch, feed = list(range(lm.rows)), [int(x) for x in pending]  # out index of each cache row; its next token
    while True:
        lens = [0 if out[r].done else 1 for r in batch]
        logits = lm.append(np.asarray(feed)[:, None], lens)[:, 0]  # [rows, V']
        lse = logsumexp(logits)  # [rows]: each token's log-prob is logits[j, c] − lse[j]
        for j, r in enumerate(batch):
            row = out[r]
            if row.done:
                continue
            c = pick(logits[j], sampling, rng)
            row.tokens.append(int(lm.full_ids(c)))
            row.logprobs.append(float(logits[j, c] - lse[j]))
            row.done = len(row.tokens) >= max_new or finished(row)
        alive = [j for j, r in enumerate(batch) if not out[r].done]
        if not alive:
            return out
        if not keep_finished and len(alive) < len(batch):
            lm.fork(alive)
            batch = [batch[j] for j in alive]
        feed = [out[r].tokens[-1] if not out[r].done else 0 for r in batch]
