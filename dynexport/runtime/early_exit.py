"""Early-exit control flow: run segment graphs in order, let samples leave at exits, compact the batch.

Per chunk of `batch_size` texts: tokenize → segment 0 → the policy decides per sample → samples that
leave are recorded and removed (batch compaction, trailing padding trimmed) → next segment on the
rest. Results come back in input order. Torch-free.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError
from ..manifest import Manifest
from .graph import Graph
from .policies import EntropyPolicy, FullDepth, PatiencePolicy, Policy, new_carry, softmax
from .text import TextEncoder, check_texts


@dataclass
class Stats:
    samples: int = 0
    truncated: int = 0  # texts cut to max_length
    segment_calls: list[int] = field(default_factory=list)  # graph calls per segment
    segment_samples: list[int] = field(default_factory=list)  # samples that entered each segment
    exit_counts: list[int] = field(default_factory=list)  # samples that left at each segment
    tokenize_s: float = 0.0
    segment_s: list[float] = field(default_factory=list)  # wall time inside each segment's graph
    total_s: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Result:
    labels: list[str]
    label_ids: np.ndarray  # [n] int64
    probabilities: np.ndarray  # [n, classes] float32, from the head the sample left at
    exit_layers: np.ndarray  # [n] 1-based encoder layer of the head that decided
    stats: Stats
    all_logits: list[np.ndarray] | None = None  # per segment [n, classes], only with collect_all


class EarlyExitPipeline:
    """Compiled segment graphs + tokenizer of one artifact; `run` is reentrant (no state across calls)."""

    def __init__(self, root: Path, manifest: Manifest, backend: str, device: str, threads: int | None):
        self.root, self.manifest, self.backend = root, manifest, backend
        tok = manifest.tokenizer
        self.encoder = TextEncoder(root / tok.file, tok.max_length, tok.pad_id)
        missing = [g.name for g in manifest.graphs if backend not in g.files]
        if missing:
            raise InputError(f"artifact {root} has no {backend} graphs for {missing}; "
                             f"it has {sorted(manifest.graphs[0].files)}")
        self.graphs = [Graph(root / g.files[backend], backend, device, threads) for g in manifest.graphs]
        self.input_names = [[t.name for t in g.inputs] for g in manifest.graphs]
        self.exit_layers = [g.exit_layer for g in manifest.graphs]

    @property
    def default_policy(self) -> Policy:
        p = self.manifest.policy
        return EntropyPolicy(p.threshold) if p else FullDepth()

    def run(self, texts: list[str], policy: Policy | None = None, batch_size: int = 32,
            collect_all: bool = False, progress: bool = False) -> Result:
        """Classify `texts`. `policy` defaults to the calibrated entropy threshold of the manifest.
        `collect_all` runs every segment for every sample and returns each exit's logits (calibration)."""
        policy = self.default_policy if policy is None else policy
        if not isinstance(policy, (EntropyPolicy, PatiencePolicy, FullDepth)):
            raise InputError(f"policy must be EntropyPolicy, PatiencePolicy or FullDepth, got {policy!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an int ≥ 1, got {batch_size!r}")
        if collect_all:
            policy = FullDepth()
        t0 = time.perf_counter()
        nseg = len(self.graphs)
        stats = Stats(segment_calls=[0] * nseg, segment_samples=[0] * nseg, exit_counts=[0] * nseg,
                      segment_s=[0.0] * nseg)
        check_texts(texts)
        n = len(texts)
        classes = len(self.manifest.labels)
        logits_out = np.zeros((n, classes), np.float32)
        exit_seg = np.zeros(n, np.int64)
        all_logits = [np.zeros((n, classes), np.float32) for _ in range(nseg)] if collect_all else None
        starts = range(0, n, batch_size)
        for start in tqdm(starts, desc="classify", unit="batch", mininterval=5) if progress else starts:
            self._run_chunk(texts[start:start + batch_size], start, policy, stats, logits_out, exit_seg, all_logits)
        stats.samples, stats.total_s = n, time.perf_counter() - t0
        if stats.truncated:
            warnings.warn(f"{stats.truncated} of {n} texts were longer than {self.encoder.max_length} "
                          "tokens and were truncated", stacklevel=2)
        ids = logits_out.argmax(-1)
        return Result([self.manifest.labels[i] for i in ids], ids, softmax(logits_out).astype(np.float32),
                      np.array(self.exit_layers)[exit_seg], stats, all_logits)

    def _run_chunk(self, texts, offset, policy, stats, logits_out, exit_seg, all_logits) -> None:
        t = time.perf_counter()
        batch = self.encoder(texts)
        stats.tokenize_s += time.perf_counter() - t
        stats.truncated += sum(batch.truncated)
        x, mask = batch.input_ids, batch.attention_mask  # [b, seq] int64
        idx = np.arange(len(texts)) + offset  # positions in the caller's list
        carry = new_carry(len(texts))
        last = len(self.graphs) - 1
        for i, graph in enumerate(self.graphs):
            t = time.perf_counter()
            out = graph(**dict(zip(self.input_names[i], (x, mask))))
            stats.segment_s[i] += time.perf_counter() - t
            stats.segment_calls[i] += 1
            stats.segment_samples[i] += len(idx)
            hidden, logits = out[self.manifest.graphs[i].outputs[0].name], out["logits"]  # [b, seq, h], [b, c]
            if all_logits is not None:
                all_logits[i][idx] = logits
            leave, carry = policy.decide(logits, carry)
            if i == last:
                leave = np.ones(len(idx), dtype=bool)
            logits_out[idx[leave]] = logits[leave]
            exit_seg[idx[leave]] = i
            stats.exit_counts[i] += int(leave.sum())
            keep = ~leave
            if not keep.any():
                return
            idx, hidden, mask, carry = idx[keep], hidden[keep], mask[keep], carry[keep]
            seq = int(mask.sum(1).max())  # trailing padding no remaining sample needs
            x, mask = np.ascontiguousarray(hidden[:, :seq]), np.ascontiguousarray(mask[:, :seq])
