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

from ..errors import GraphError, InputError, ManifestError
from ..manifest import EarlyExitManifest
from .config import resolve
from .graph import Graph
from .policies import EXIT_POLICIES, EntropyPolicy, FullDepth, LearnedExit, Policy, new_carry, softmax
from .text import TextEncoder


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
class ClassifyConfig:
    """How `run` classifies. policy None: the artifact's calibrated entropy threshold."""
    policy: Policy | None = None
    batch_size: int = 32
    sort_by_length: bool = True  # group texts of similar token length into a batch (less padding)

    def __post_init__(self):
        if self.policy is not None and not isinstance(self.policy, EXIT_POLICIES):
            raise InputError("policy must be EntropyPolicy, LearnedExit, PatiencePolicy or FullDepth, "
                             f"got {self.policy!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"batch_size must be an int ≥ 1, got {self.batch_size!r}")
        if not isinstance(self.sort_by_length, bool):
            raise InputError(f"sort_by_length must be true or false, got {self.sort_by_length!r}")


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

    def __init__(self, root: Path, manifest: EarlyExitManifest, backend: str, device: str, threads: int | None):
        self.root, self.manifest, self.backend = root, manifest, backend
        tok = manifest.tokenizer
        self.encoder = TextEncoder(root / tok.file, tok.max_length, tok.pad_id)
        self.graphs = [Graph(root / g.files[backend], backend, device, threads) for g in manifest.graphs]
        self.input_names = [[t.name for t in g.inputs] for g in manifest.graphs]
        self.exit_layers = [g.exit_layer for g in manifest.graphs]

    @property
    def default_policy(self) -> Policy:
        return policy_from_manifest(self.manifest.policy)

    def calibrated(self, kind: str) -> Policy:
        """One of the artifact's calibrated exit rules by kind: entropy, entropy_per_exit, learned."""
        p = self.manifest.policy
        found = {c.kind: c for c in (p.candidates if p else [])}
        if kind not in found:
            raise InputError(f"this artifact has no calibrated {kind!r} rule (it has: "
                             f"{', '.join(found) or 'none; re-export it for per-exit rules'})")
        return rule_policy(kind, found[kind].thresholds, found[kind].weights)

    def run(self, texts: list[str], config: ClassifyConfig | Policy | None = None, *, collect_all: bool = False,
            progress: bool = False, **overrides) -> Result:
        """Classify `texts`; results come back in input order. `config` (or an exit policy object, as
        `ClassifyConfig(policy=...)`) and keyword overrides are ClassifyConfig fields. `collect_all` runs
        every segment for every sample and returns each exit's logits (used by calibration)."""
        cfg = resolve(ClassifyConfig, config, overrides, "policy", EXIT_POLICIES)
        policy = self.default_policy if cfg.policy is None else cfg.policy
        if policy.exits is not None and policy.exits != len(self.graphs) - 1:
            raise InputError(f"the policy has settings for {policy.exits} exits; this artifact has "
                             f"{len(self.graphs) - 1} (exits {self.exit_layers[:-1]})")
        batch_size, sort_by_length = cfg.batch_size, cfg.sort_by_length
        t0 = time.perf_counter()
        batch = self.encoder(texts)  # validates texts; [n, seq] int64 arrays
        n, nseg, classes = len(texts), len(self.graphs), len(self.manifest.labels)
        acc = _Accumulator(Stats(samples=n, truncated=sum(batch.truncated), segment_calls=[0] * nseg,
                                 segment_samples=[0] * nseg, exit_counts=[0] * nseg, segment_s=[0.0] * nseg,
                                 tokenize_s=time.perf_counter() - t0),
                           np.zeros((n, classes), np.float32), np.zeros(n, np.int64),
                           [np.zeros((n, classes), np.float32) for _ in range(nseg)] if collect_all else None)
        lengths = batch.attention_mask.sum(1)
        order = np.argsort(lengths, kind="stable") if sort_by_length else np.arange(n)
        chunks = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        for idx in tqdm(chunks, desc="classify", unit="batch", mininterval=5) if progress else chunks:
            seq = int(lengths[idx].max())
            self._run_chunk(idx, batch.input_ids[idx, :seq], batch.attention_mask[idx, :seq],
                            FullDepth() if collect_all else policy, acc)
        acc.stats.total_s = time.perf_counter() - t0
        if acc.stats.truncated:
            warnings.warn(f"{acc.stats.truncated} of {n} texts were longer than {self.encoder.max_length} "
                          "tokens and were truncated", stacklevel=2)
        ids = acc.logits.argmax(-1)
        return Result([self.manifest.labels[i] for i in ids], ids, softmax(acc.logits).astype(np.float32),
                      np.array(self.exit_layers)[acc.exit_seg], acc.stats, acc.all_logits)

    def _run_chunk(self, idx: np.ndarray, x: np.ndarray, mask: np.ndarray, policy: Policy,
                   acc: _Accumulator) -> None:
        """One batch through the segments; `idx` are the samples' positions in the caller's list."""
        carry, last, stats = new_carry(len(idx)), len(self.graphs) - 1, acc.stats
        for i, graph in enumerate(self.graphs):
            t = time.perf_counter()
            out = graph(**dict(zip(self.input_names[i], (x, mask))))
            stats.segment_s[i] += time.perf_counter() - t
            stats.segment_calls[i] += 1
            stats.segment_samples[i] += len(idx)
            hidden, logits = out["hidden_states_out"], out["logits"]  # [b, seq, hidden], [b, classes]
            check_logits(graph.path.name, logits, acc.logits.shape[-1])
            if acc.all_logits is not None:
                acc.all_logits[i][idx] = logits
            if i == last:  # the final head decides for everyone left
                leave = np.ones(len(idx), dtype=bool)
            else:
                leave, carry = policy.decide(logits, carry, i)
            acc.logits[idx[leave]] = logits[leave]
            acc.exit_seg[idx[leave]] = i
            stats.exit_counts[i] += int(leave.sum())
            keep = ~leave
            if not keep.any():
                return
            idx, hidden, mask, carry = idx[keep], hidden[keep], mask[keep], carry[keep]
            seq = int(mask.sum(1).max())  # trailing padding no remaining sample needs
            x, mask = np.ascontiguousarray(hidden[:, :seq]), np.ascontiguousarray(mask[:, :seq])


def check_logits(name: str, logits: np.ndarray, classes: int) -> None:
    """A segment's logits [b, classes] fit the manifest's labels and are finite (a damaged graph whose file
    was re-hashed can compile and still compute NaN)."""
    if logits.ndim != 2 or logits.shape[-1] != classes:
        raise ManifestError(f"{name} outputs logits of shape {list(logits.shape)}; the manifest lists {classes} labels")
    if not np.isfinite(logits).all():
        raise GraphError(f"{name} computed non-finite logits: the graph file is damaged; re-export the artifact")


def rule_policy(kind: str, thresholds: list[float], weights: list[list[float]] | None = None) -> Policy:
    """A calibrated exit rule (manifest `policy.candidates`) as a policy object."""
    if kind == "learned":
        return LearnedExit(tuple(map(tuple, weights)), tuple(thresholds))
    return EntropyPolicy(thresholds[0] if kind == "entropy" else tuple(thresholds))


def policy_from_manifest(p) -> Policy:
    """The artifact's calibrated policy: per-exit or global entropy thresholds, or a learned exit
    policy. Manifests from before per-exit thresholds have one global threshold and load as before."""
    if p is None:
        return FullDepth()
    if p.kind == "learned":
        return rule_policy("learned", p.thresholds, p.weights)
    return EntropyPolicy(tuple(p.thresholds) if p.thresholds else p.threshold)


@dataclass
class _Accumulator:
    """Where chunks write their per-sample results (indexed by position in the caller's list)."""
    stats: Stats
    logits: np.ndarray  # [n, classes] logits of the head each sample left at
    exit_seg: np.ndarray  # [n] segment index each sample left at
    all_logits: list[np.ndarray] | None  # per segment [n, classes], with collect_all
