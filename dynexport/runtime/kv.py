"""A causal-LM graph with its KV cache held in one place: `LMSession.forward(ids) → logits`.

OpenVINO IR graphs are stateful (the cache lives inside the infer request); ONNX graphs take and
return the cache explicitly (kept here as numpy arrays). Both are driven the same way:

- every call appends its tokens to the cache as new *slots*; positions and the attention mask are
  inputs, computed here from which slots are valid;
- `commit(n)` keeps the first n tokens of the last call and marks the rest (rejected draft tokens)
  invalid: they stay in the cache but are masked out of every later call. Masking costs nothing;
  rewriting OpenVINO's state costs ~5 ms for 56 states of 300 slots (Qwen2.5-1.5B);
- when masked slots pile up past `compact_after`, the cache is rewritten with the valid slots only.
  Drafts mask (their holes only move acceptance); targets compact at once (`EXACT_ROLLBACK`): their
  cache then holds exactly what the target alone would have, so greedy output is identical.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..manifest import LMGraph
from .graph import Graph

NEG = np.float32(np.finfo(np.float32).min)
# f32 KV cache: the CPU plugin's default (u8) moves logits by ~1e-2 between a k-token call and k one-token
# calls. Dynamic activation quantization (the plugin's default for int8/int4 weights) is kept where it is
# bit-identical across call sizes — Qwen2.5-1.5B int8: max |Δlogit| = 0 for k = 2–6 at every context
# tried, and it makes prefill 2.2x and k-token verify calls far cheaper — but that depends on the graph
# and the CPU (SmolLM2-135M int8: identical at k = 2, not at 4), so export and calibrate check it and
# record the target's `cpu_config` (runtime/costs.py). Even where it is exact it amplifies a masked
# slot: a hole in the cache shifts attention sums by ~1e-5 and quantization turns that into ~0.2 on
# the logits, so a target that must stay exact drops its rejected slots (EXACT_ROLLBACK).
CPU_EXACT = {"KV_CACHE_PRECISION": "f32"}
NO_DQ = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}  # for graphs where dynamic quantization is not call-size exact
EXACT_ROLLBACK = 0  # compact_after for the target: rewrite the cache after every rejection (~5 ms / 300 slots)
def target_cpu_config(manifest) -> dict[str, str]:
    """The target's exactness settings: what export / calibrate checked, or (unchecked, compressed
    weights) dynamic quantization off."""
    if manifest.cpu_config is not None:
        return dict(manifest.cpu_config)
    return dict(NO_DQ) if manifest.weight_format in ("int8", "int4") else {}


def open_lm(root: Path, spec: LMGraph, backend: str, device: str, threads: int | None,
            cpu_config: dict | None) -> tuple[Graph, bool, np.ndarray | None]:
    """(compiled graph, whether it holds its cache as state, its vocabulary map or None)."""
    config = {**CPU_EXACT, **(cpu_config or {})} if device == "CPU" else None
    graph = Graph(root / spec.files[backend], backend, device, threads, ov_config=config)
    vocab_ids = np.load(root / spec.vocab_file, allow_pickle=False) if spec.vocab_file else None
    return graph, spec.kv_cache[backend] == "stateful", vocab_ids


def empty_past(spec: LMGraph) -> list[np.ndarray]:
    """An explicit (ONNX) cache of one row and no slots: key, value per layer [1, Hkv, 0, D]."""
    return [np.zeros((1, spec.kv_heads, 0, spec.head_dim), np.float32) for _ in range(2 * spec.num_layers)]


def explicit_call(graph: Graph, spec: LMGraph, past: list[np.ndarray], feed: dict) -> tuple[dict, list[np.ndarray]]:
    """One call of an explicit-KV graph → (its non-KV outputs, the new cache)."""
    for i in range(spec.num_layers):
        feed[f"past_key.{i}"], feed[f"past_value.{i}"] = past[2 * i], past[2 * i + 1]
    res = graph(**feed)
    new = [res[f"present_{kind}.{i}"] for i in range(spec.num_layers) for kind in ("key", "value")]
    return {k: v for k, v in res.items() if not k.startswith("present_")}, new


class LMSession:
    def __init__(self, root: Path, spec: LMGraph, backend: str, device: str = "CPU",
                 threads: int | None = None, compact_after: int = 256, cpu_config: dict | None = None):
        """cpu_config: OpenVINO CPU settings on top of CPU_EXACT (the artifact's `target_cpu_config`)."""
        self.spec, self.backend = spec, backend
        self.graph, self.stateful, self.vocab_ids = open_lm(root, spec, backend, device, threads, cpu_config)
        self.compact_after = compact_after
        self.sliced = "logits_index" in self.graph.input_names  # artifacts before it compute every row
        self.calls = 0
        self.reset()

    def reset(self) -> None:
        self.valid = np.zeros(0, bool)  # [slots] which cache slots hold committed tokens
        self._last = 0  # tokens appended by the last forward (not yet committed)
        if self.stateful:
            self.graph.reset_state()
        else:
            self.past = empty_past(self.spec)

    @property
    def length(self) -> int:
        """Committed tokens (what the model has seen and kept)."""
        return int(self.valid.sum())

    def forward(self, ids: list[int] | np.ndarray, parents: list[int] | None = None, **extra) -> np.ndarray:
        """Append `ids` → logits [T − logits_from, V'] (see `run`)."""
        return self.run(ids, parents, **extra)["logits"]

    def run(self, ids: list[int] | np.ndarray, parents: list[int] | None = None,
            visible: list[np.ndarray] | None = None, base_depth: int = 0, logits_from: int = 0,
            **extra) -> dict[str, np.ndarray]:
        """Append `ids` after the committed tokens → every non-KV output, batch row 0 ([T, ...] each;
        logits only for tokens logits_from… (a Python slice start: −1 = the last one; a prefill needs no more).
        parents=None: a chain; else parents[i] is the index (in this call) of token i's parent, −1 for
        the last committed token: a tree, each token at position length + base_depth + its depth,
        attending to the committed tokens, its ancestors, and `visible[i]` (slot indices of uncommitted
        tokens of earlier calls: a draft tree grown over several calls). The slots this call's tokens
        occupy are `last_slots` afterwards. `extra`: further graph inputs ([1, T, ...] arrays)."""
        if self._last:
            raise RuntimeError("commit() the previous call before the next forward()")
        ids = np.asarray(ids, np.int64)[None]  # [1, T]
        t, slots = ids.shape[1], len(self.valid)
        anc, depth = tree_ancestry(parents, t)
        pos = (self.length + base_depth + depth)[None]  # [1, T]
        mask = np.full((1, 1, t, slots + t), NEG, np.float32)  # [1, 1, T, S+T] additive
        mask[..., :slots][..., self.valid] = 0.0
        for i, extra_slots in enumerate(visible or []):
            mask[0, 0, i, np.asarray(extra_slots, np.int64)] = 0.0
        mask[0, 0, :, slots:] = np.where(anc, 0.0, NEG)
        rows = np.arange(t, dtype=np.int64)[logits_from:]  # [N]
        if self.sliced:
            extra["logits_index"] = rows
        out = self._run({"input_ids": ids, "position_ids": pos, "attention_mask": mask, **extra})
        if not self.sliced:
            out["logits"] = out["logits"][:, rows]
        self.valid = np.concatenate([self.valid, np.zeros(t, bool)])
        self._last, self.calls = t, self.calls + 1
        self.last_slots = np.arange(slots, slots + t)
        return {k: v[0] for k, v in out.items()}

    def commit(self, keep: int | list[int] | np.ndarray, compact: bool = True) -> None:
        """Keep the first `keep` tokens of the last forward, or the tokens at indices `keep` (a tree's
        accepted path); the rest become masked slots. compact=False: never compact now (slot indices
        held for `visible` stay valid)."""
        if isinstance(keep, (int, np.integer)):
            ok, idx = 0 <= keep <= self._last, np.arange(max(int(keep), 0))
        else:
            idx = np.asarray(keep, np.int64)
            ok = not idx.size or (idx.min() >= 0 and idx.max() < self._last and len(np.unique(idx)) == len(idx))
        if not ok:
            raise RuntimeError(f"commit({keep}) after a forward of {self._last} tokens")
        start = len(self.valid) - self._last
        self.valid[start + idx] = True
        self._last = 0
        if compact and len(self.valid) - self.length > self.compact_after:
            self._compact()

    def discard_last(self, n: int) -> None:
        """Mask the last n committed slots (draft tokens fed one per call, then rejected)."""
        if n:
            idx = np.flatnonzero(self.valid)[-n:]
            self.valid[idx] = False

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.stateful:
            return self.graph(**feed, beam_idx=np.zeros(1, np.int32))
        out, self.past = explicit_call(self.graph, self.spec, self.past, feed)
        return out

    def _compact(self) -> None:
        keep = np.flatnonzero(self.valid)
        if self.stateful:
            self.graph.map_states(lambda x: np.ascontiguousarray(x[:, :, keep]))
        else:
            self.past = [np.ascontiguousarray(p[:, :, keep]) for p in self.past]
        self.valid = np.ones(len(keep), bool)

    def full_ids(self, columns: np.ndarray | int) -> np.ndarray | int:
        """Output column(s) → full-vocabulary token id(s) (identity without a truncated vocabulary)."""
        if self.vocab_ids is None:
            return columns
        return self.vocab_ids[columns]


def tree_ancestry(parents: list[int] | None, t: int) -> tuple[np.ndarray, np.ndarray]:
    """(anc [T, T] bool: token j is token i's ancestor or i itself, depth [T] int64) for a call of T
    tokens; parents None = a chain. parents[i] < i (a parent comes first), −1 = the committed sequence."""
    if parents is None:
        return np.tril(np.ones((t, t), bool)), np.arange(t, dtype=np.int64)
    if len(parents) != t or any(not -1 <= p < i for i, p in enumerate(parents)):
        raise ValueError(f"parents must give each of the {t} tokens an earlier parent or −1, got {parents}")
    anc, depth = np.eye(t, dtype=bool), np.zeros(t, np.int64)
    for i, p in enumerate(parents):
        if p >= 0:
            anc[i] |= anc[p]
            depth[i] = depth[p] + 1
    return anc, depth


def prime(session, **extra) -> None:
    """Reset the session and commit a 32-token prompt (the state every cost measurement starts from)."""
    session.reset()
    session.run(list(range(10, 42)), **extra)
    session.commit(32)


def median_call_ms(session, n: int, reps: int, **extra) -> float:
    """Median ms of a call appending n tokens after the committed prefix (masked out after each call;
    3 warm-up calls dropped). `extra`: further graph inputs (the EAGLE head's features)."""
    ts = []
    for _ in range(reps + 3):
        t0 = time.perf_counter()
        session.run([100 + j for j in range(n)], **extra)
        ts.append(time.perf_counter() - t0)
        session.commit(0)
    return 1e3 * float(np.median(ts[3:]))
