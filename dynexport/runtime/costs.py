"""Measured costs of an LM artifact on this machine: the target's call time for n new positions (the
verify-cost curve) and the draft's / EAGLE head's one-token call relative to the target's.

The adaptive draft length and EAGLE's dynamic trees decide from these. Export measures them on the
export machine; `calibrate(root)` (`dynexport calibrate ART`) measures them again on the deployment
machine and rewrites the manifest: a machine with more cores verifies more positions for the price of
one, a 2-core one may not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..manifest import MANIFEST, EagleManifest, SpeculativeManifest, read_manifest
from .kv import EXACT_ROLLBACK, NO_DQ, LMSession, median_call_ms, prime

VERIFY_POSITIONS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64)


def verify_curve(target: LMSession, positions=VERIFY_POSITIONS, reps: int = 10) -> dict[str, float]:
    """Median ms of one target call appending n positions after a 32-token prompt, n in `positions`."""
    prime(target)
    return {str(n): round(median_call_ms(target, n, reps), 3) for n in positions}


def call_size_exact(target: LMSession, k_max: int = 8, contexts=(12, 40, 100)) -> bool:
    """Whether one call of m tokens gives bit-identical logits to m one-token calls (m = 2..k_max+1)
    after each context length: what greedy speculative == greedy target needs of the target graph."""
    for p in contexts:
        prefix = probe_prefix(p)
        for m in range(2, k_max + 2):
            new = probe_tokens(m)
            _fresh(target, prefix)
            many = target.forward(new)  # [m, V]
            target.commit(0)  # rejected: dropped again (EXACT_ROLLBACK)
            if not np.array_equal(many, np.stack([_step(target, x) for x in new])):
                return False
    return True


TREE_PARENTS = (-1, 0, 0, 1, 1, 2, 3, 3, 4)  # a depth-4 draft tree with branches at every level


def tree_call_exact(target: LMSession, parents=TREE_PARENTS, contexts=(12, 40, 100)) -> bool:
    """Whether one tree call (each token sees the prefix and its ancestors only) gives every token
    bit-identical logits to one-token calls along its path: what greedy EAGLE trees == greedy target
    needs. Non-ancestors are masked inside the call, a pattern the chain check never sees."""
    tokens = probe_tokens(len(parents))
    for p in contexts:
        prefix = probe_prefix(p)
        _fresh(target, prefix)
        tree = target.forward(tokens, parents=list(parents))  # [N, V]
        target.commit(0)
        for i in range(len(parents)):
            path = [i]  # token i, its parent, …, the root
            while parents[path[-1]] >= 0:
                path.append(parents[path[-1]])
            _fresh(target, prefix)
            one = [_step(target, tokens[j]) for j in reversed(path)][-1]
            if not np.array_equal(one, tree[i]):
                return False
    return True


def probe_prefix(n: int) -> list[int]:
    """A fixed, varied context of n token ids for the exactness checks."""
    return [100 + (7 * i) % 900 for i in range(n)]


def probe_tokens(n: int) -> list[int]:
    """n fixed token ids the exactness checks append after the context."""
    return [11 + (13 * j) % 500 for j in range(n)]


def _fresh(target: LMSession, prefix: list[int]) -> None:
    """An empty cache, then `prefix` committed."""
    target.reset()
    target.run(prefix, logits_from=-1)
    target.commit(len(prefix))


def _step(target: LMSession, x: int) -> np.ndarray:
    """One committed one-token call → its logits [V]."""
    out = target.forward([x])[0]
    target.commit(1)
    return out


def exact_cpu_config(root: Path, manifest, threads: int | None = None) -> dict[str, str]:
    """The target's OpenVINO CPU settings for exact greedy on this machine: the plugin's default (dynamic
    quantization on) when its k-token calls are bit-identical to one-token calls (and, for EAGLE, its
    tree calls too), else NO_DQ. Compressed weights only (dynamic quantization touches nothing else).
    Measured: SmolLM2 int8 fails the chain check at k = 4, and its EAGLE trees diverged with DQ on
    (7 of 12 prompt × setting pairs)."""
    if manifest.weight_format not in ("int8", "int4"):
        return {}
    target = LMSession(root, manifest.target, "openvino", threads=threads, compact_after=EXACT_ROLLBACK)
    exact = call_size_exact(target) and (not isinstance(manifest, EagleManifest) or tree_call_exact(target))
    return {} if exact else dict(NO_DQ)


def measure(root: Path, manifest, threads: int | None = None, reps: int = 10) -> dict:
    """The manifest update ({cpu_config, verify_ms, defaults}) with this machine's exactness settings and
    costs (measured under those settings), on OpenVINO."""
    cpu_config = exact_cpu_config(root, manifest, threads)
    target = LMSession(root, manifest.target, "openvino", threads=threads, cpu_config=cpu_config)
    curve = verify_curve(target, reps=reps)
    t1 = curve["1"]
    if isinstance(manifest, SpeculativeManifest):
        draft = LMSession(root, manifest.draft, "openvino", threads=threads)
        prime(draft)
        c = median_call_ms(draft, 1, reps) / t1
        slope = max(curve["5"] / t1 - 1, 0) / 4  # the linear summary older runtimes read
        costs = {"draft_cost_ratio": round(c, 4), "verify_slope": round(slope, 4)}
    elif isinstance(manifest, EagleManifest):
        head = LMSession(root, manifest.head, "openvino", threads=threads)
        hid = np.zeros((1, 32, head_hidden(manifest)), np.float32)
        prime(head, hidden=hid)
        costs = {"head_cost_ratio": round(median_call_ms(head, 1, reps, hidden=hid[:, :1]) / t1, 4)}
    else:
        raise InputError(f"artifact method {manifest.method!r} has no draft costs to measure")
    return {"cpu_config": cpu_config, "verify_ms": curve, "defaults": manifest.defaults.model_copy(update=costs)}


def head_hidden(manifest: EagleManifest) -> int:
    return int(next(s.shape[2] for s in manifest.head.inputs if s.name == "hidden"))


def calibrate(root: str | Path, threads: int | None = None, reps: int = 10):
    """Measure the artifact's costs on this machine and rewrite its manifest (atomically) → the manifest."""
    root = Path(root)
    manifest = read_manifest(root)
    if "openvino" not in manifest.target.files:
        raise InputError(f"{root} has no OpenVINO graphs: costs are measured on OpenVINO")
    updated = manifest.model_copy(update=measure(root, manifest, threads, reps))  # files unchanged
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(updated.model_dump_json(indent=1))
    tmp.replace(root / MANIFEST)
    return updated


def curve_points(verify_ms: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """A manifest's verify_ms {"n": ms} → (n [M] ascending, ms [M]) as float64 arrays."""
    n = np.array(sorted(int(k) for k in verify_ms), np.float64)
    return n, np.array([verify_ms[str(int(k))] for k in n], np.float64)


def relative_curve(verify_ms: dict[str, float], n_max: int) -> tuple[float, ...]:
    """t(n) / t(1) for n = 1..n_max from a measured curve (interpolated; flat past the last point), made
    non-decreasing: more positions never cost less, a dip below 1 is timing noise (measured: 0.96 at n = 2),
    and taking it at face value made one draft token look free."""
    n, ms = curve_points(verify_ms)
    rel = np.maximum.accumulate(np.interp(np.arange(1, n_max + 1), n, ms) / np.interp(1, n, ms))
    return tuple(float(x) for x in rel)
