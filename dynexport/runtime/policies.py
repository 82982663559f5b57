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


# ---- draft-length policies (speculative decoding) ----

def expected_tokens(alpha: float, k: int) -> float:
    """Expected tokens per round with k drafts and per-token acceptance alpha: (1 − α^{k+1}) / (1 − α)."""
    return float(k + 1) if alpha >= 1 else (1 - alpha ** (k + 1)) / (1 - alpha)


def best_k(alpha: float, cost_ratio: float, k_max: int, verify_slope: float = 0.0) -> int:
    """k maximising expected tokens per unit time: E[tokens] / (k·c + 1 + slope·k), time in target calls."""
    speed = [expected_tokens(alpha, k) / (k * cost_ratio + 1 + verify_slope * k) for k in range(k_max + 1)]
    return int(np.argmax(speed))


@dataclass(frozen=True)
class FixedDraft:
    k: int

    def next_k(self) -> int:
        return self.k

    def update(self, k: int, accepted: int) -> None:
        pass


@dataclass
class AdaptiveDraft:
    """k from the running acceptance estimate: α̂ = accepted / (accepted + rejections), exponentially
    decayed, with a prior of `prior_alpha` worth `prior_weight` trials; k = best_k(α̂, c, slope).
    When no k pays (best_k = 0: the draft costs more than it saves) the target decodes alone, with a
    k = 1 probe every `probe_every` tokens so α̂ keeps tracking the text."""
    cost_ratio: float = 0.15  # draft call time / target single-token call time (measured at export)
    verify_slope: float = 0.02  # extra target time per verified token, in target calls
    k_max: int = 8
    decay: float = 0.9
    prior_alpha: float = 0.6
    prior_weight: float = 4.0
    probe_every: int = 8
    accepted: float = 0.0
    trials: float = 0.0
    idle: int = 0  # target-only steps since the last draft round

    def alpha(self) -> float:
        return (self.accepted + self.prior_alpha * self.prior_weight) / (self.trials + self.prior_weight)

    def next_k(self) -> int:
        k = best_k(self.alpha(), self.cost_ratio, self.k_max, self.verify_slope)
        if k == 0:
            self.idle += 1
            if self.idle < self.probe_every:
                return 0
            k = 1
        self.idle = 0
        return k

    def update(self, k: int, accepted: int) -> None:
        """A round drafted k and accepted `accepted`: that is `accepted` successes and one failure if < k."""
        self.accepted = self.decay * self.accepted + accepted
        self.trials = self.decay * self.trials + accepted + (1 if accepted < k else 0)


# ---- step policies (StepSaver) ----

def choose_steps(probs: np.ndarray, counts: list[int], margin: float) -> np.ndarray:
    """Smallest step count whose cumulative predicted probability of being enough reaches `margin`.
    probs [B, C] over the ascending `counts` → [B] int."""
    if not 0.0 < margin < 1.0:
        raise InputError(f"margin must be in (0, 1), got {margin!r}")
    idx = np.minimum((np.cumsum(probs, -1) < margin).sum(-1), len(counts) - 1)
    return np.asarray(counts)[idx]
