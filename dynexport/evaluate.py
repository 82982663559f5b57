"""Measure an early-exit artifact on its own held-out split: accuracy and wall time per policy.

Torch-free. Policies are timed interleaved (A B A B …, order rotated each repeat) on the same texts,
and the median wall time is compared with full depth on the same backend in the same run.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import assets, data
from .errors import ManifestError
from .manifest import EarlyExitManifest
from .runtime.early_exit import EarlyExitPipeline, Result
from .runtime.policies import FullDepth, Policy


def artifact_split(manifest: EarlyExitManifest, split: str = "test") -> tuple[list[str], np.ndarray]:
    """The artifact's own split, rebuilt from its dataset and checked against the recorded key hash."""
    ds = manifest.source.dataset
    splits = data.load_splits(assets.resolve_dataset(ds["id"]), ds["text_column"], ds["label_column"],
                              tuple(ds["labels"]), ds["val_size"], ds["test_size"], ds["seed"])
    if splits.info["key_sha256"][split] != manifest.source.split["key_sha256"][split]:
        raise ManifestError(f"the {split} split rebuilt from {ds['id']!r} differs from the one recorded "
                            "in the manifest (dataset file changed?)")
    examples = getattr(splits, split)
    return [e.text for e in examples], np.array([e.label for e in examples])


@dataclass(frozen=True)
class Row:
    name: str
    accuracy: float  # percent
    wall_s: float  # median over repeats
    wall_s_all: list[float]
    speedup: float  # full-depth median / this median
    mean_exit_layer: float
    exit_fractions: list[float]
    segment_samples: list[int]

    def to_json(self) -> dict:
        return asdict(self)


def timed_runs(pipe: EarlyExitPipeline, texts: list[str], policies: dict[str, Policy], batch_size: int,
               repeats: int) -> dict[str, tuple[list[float], Result]]:
    """Run each policy `repeats` times, interleaved, rotating the order; one warm-up pass first."""
    return timed_pairs({n: (pipe, p) for n, p in policies.items()}, texts, batch_size, repeats)


def timed_pairs(runs: dict[str, tuple[EarlyExitPipeline, Policy]], texts: list[str], batch_size: int,
                repeats: int) -> dict[str, tuple[list[float], Result]]:
    """Like `timed_runs`, for (pipeline, policy) pairs: several artifacts (fp32 / INT8) side by side."""
    names = list(runs)
    for pipe in {id(p): p for p, _ in runs.values()}.values():  # warm-up: first calls allocate
        pipe.run(texts[: min(len(texts), 2 * batch_size)], FullDepth(), batch_size=batch_size)
    out: dict[str, tuple[list[float], Result]] = {n: ([], None) for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            pipe, policy = runs[name]
            res = pipe.run(texts, policy, batch_size=batch_size)
            out[name][0].append(res.stats.total_s)
            out[name] = (out[name][0], res)
    return out


def rows(runs: dict[str, tuple[list[float], Result]], labels: np.ndarray, reference: str) -> list[Row]:
    ref = statistics.median(runs[reference][0])
    table = []
    for name, (times, res) in runs.items():
        med = statistics.median(times)
        n = max(1, res.stats.samples)
        table.append(Row(name, round(float((res.label_ids == labels).mean() * 100), 3), round(med, 4),
                         [round(t, 4) for t in times], round(ref / med, 3), round(float(res.exit_layers.mean()), 3),
                         [round(c / n, 4) for c in res.stats.exit_counts], res.stats.segment_samples))
    return table


def load_and_measure(artifact: Path, backend: str, policies: dict[str, Policy], split: str, limit: int | None,
                     batch_size: int, repeats: int, pipe: EarlyExitPipeline | None = None) -> list[Row]:
    from .runtime import load
    pipe = pipe or load(artifact, backend)
    texts, labels = artifact_split(pipe.manifest, split)
    texts, labels = texts[:limit], labels[:limit]
    return rows(timed_runs(pipe, texts, policies, batch_size, repeats), labels, next(iter(policies)))
