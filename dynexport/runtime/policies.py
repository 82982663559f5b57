"""Exit policies: pure numpy rules that decide, per sample, whether to leave at an exit.

Each policy has `decide(logits, carry) -> (exit_mask, carry)`; `carry` is a per-sample int array
[batch, 2] (previous prediction, streak) that the pipeline compacts together with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy (nats) of softmax(logits) per row: [batch, classes] → [batch]."""
    p = softmax(logits.astype(np.float64))
    return -(p * np.log(np.clip(p, 1e-30, None))).sum(-1)


def new_carry(batch: int) -> np.ndarray:
    return np.stack([np.full(batch, -1), np.zeros(batch, dtype=np.int64)], 1)  # [batch, 2]


@dataclass(frozen=True)
class EntropyPolicy:
    """DeeBERT: leave at the first exit whose prediction entropy is below `threshold`."""

    threshold: float

    def __post_init__(self):
        if not np.isfinite(self.threshold) or self.threshold < 0:
            raise InputError(f"EntropyPolicy threshold must be a finite number ≥ 0, got {self.threshold}")

    def decide(self, logits: np.ndarray, carry: np.ndarray):
        return entropy(logits) < self.threshold, carry


@dataclass(frozen=True)
class PatiencePolicy:
    """PABEE: leave once `patience` consecutive exits after the first agree on the prediction."""

    patience: int

    def __post_init__(self):
        if not isinstance(self.patience, (int, np.integer)) or self.patience < 1:
            raise InputError(f"PatiencePolicy patience must be an int ≥ 1, got {self.patience!r}")

    def decide(self, logits: np.ndarray, carry: np.ndarray):
        pred = logits.argmax(-1)
        streak = np.where(pred == carry[:, 0], carry[:, 1] + 1, 0)
        return streak >= self.patience, np.stack([pred, streak], 1)


@dataclass(frozen=True)
class FullDepth:
    """Never leave early: the reference every speed-up is measured against."""

    def decide(self, logits: np.ndarray, carry: np.ndarray):
        return np.zeros(len(logits), dtype=bool), carry


Policy = EntropyPolicy | PatiencePolicy | FullDepth
