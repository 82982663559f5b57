"""Policies: the frozen objects that say how a pipeline spends its compute, with their numpy rules.

- exit policies (early exit): `decide(logits, carry, exit_index) -> (exit_mask, carry)`; `carry` is a
  per-sample int array [batch, 2] (previous prediction, streak) that the pipeline compacts with the batch;
- draft policies (speculative, EAGLE): `FixedDraft(k)`, `AdaptiveDraft(...)`, `TreeCfg(...)`;
- step policies (StepSaver): `FixedSteps(n)`, `PredictedSteps(margin)` (decided before the loop),
  `InLoopStop(tol)`, `AdaptiveSkip(threshold)`, `CombinedSteps(margin, tol)` (decided inside it;
  their numpy rules are in `stepcontrol.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

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


def _thresholds(name: str, value, lo: float, hi: float) -> None:
    vals = value if isinstance(value, tuple) else (value,)
    if not vals or not all(isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)
                           and np.isfinite(v) and lo <= v <= hi for v in vals):
        raise InputError(f"{name} threshold must be a finite number in [{lo}, {hi}] or a non-empty tuple of "
                         f"them (one per exit), got {value!r}")


def _at(value, exit_index: int) -> float:
    return value[exit_index] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class EntropyPolicy:
    """DeeBERT: leave at the first exit whose prediction entropy is below its threshold: one number for
    every exit, or a tuple with one per exit (the last segment always decides)."""

    threshold: float | tuple[float, ...]

    def __post_init__(self):
        _thresholds("EntropyPolicy", self.threshold, 0.0, np.inf)

    @property
    def exits(self) -> int | None:
        """Exits the thresholds are for (None: any number)."""
        return len(self.threshold) if isinstance(self.threshold, tuple) else None

    def decide(self, logits: np.ndarray, carry: np.ndarray, exit_index: int):
        return entropy(logits) < _at(self.threshold, exit_index), carry


def exit_features(logits: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """What a learned exit policy sees at one exit: [batch, classes] logits + carry → [batch, 5]
    (max probability, entropy, top-1 − top-2 probability, agrees with the previous exit, its streak)."""
    p = np.sort(softmax(logits.astype(np.float64)), -1)
    agree = (logits.argmax(-1) == carry[:, 0]).astype(np.float64)
    streak = np.where(agree > 0, carry[:, 1] + 1, 0).astype(np.float64)
    return np.stack([p[:, -1], entropy(logits), p[:, -1] - p[:, -2], agree, streak], 1)


def track(logits: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """Carry after one exit: (this exit's prediction, how many exits in a row agreed with it)."""
    pred = logits.argmax(-1)
    return np.stack([pred, np.where(pred == carry[:, 0], carry[:, 1] + 1, 0)], 1)


@dataclass(frozen=True)
class LearnedExit:
    """BERxiT's "learning to exit": per exit, a logistic regression on `exit_features` estimates the
    probability that this exit's answer is the final head's; a sample leaves once it is above the
    exit's threshold (1.0: never). `weights[i]` has 5 coefficients + a bias (fitted on validation, in the manifest)."""

    weights: tuple[tuple[float, ...], ...]
    threshold: float | tuple[float, ...]

    def __post_init__(self):
        w = self.weights
        if not isinstance(w, tuple) or not w or not all(
                isinstance(r, tuple) and len(r) == 6 and all(
                isinstance(x, (int, float, np.floating)) and not isinstance(x, bool) and np.isfinite(x) for x in r)
            for r in w):
            raise InputError("LearnedExit weights must be a non-empty tuple of 6 finite numbers per exit")
        _thresholds("LearnedExit", self.threshold, 0.0, 1.0)
        if isinstance(self.threshold, tuple) and len(self.threshold) != len(w):
            raise InputError(f"LearnedExit has {len(w)} weight rows but {len(self.threshold)} thresholds")

    @property
    def exits(self) -> int:
        return len(self.weights)

    def decide(self, logits: np.ndarray, carry: np.ndarray, exit_index: int):
        w = np.asarray(self.weights[exit_index])
        z = exit_features(logits, carry) @ w[:-1] + w[-1]
        return 0.5 * (1 + np.tanh(z / 2)) > _at(self.threshold, exit_index), track(logits, carry)  # sigmoid


@dataclass(frozen=True)
class PatiencePolicy:
    """PABEE: leave once `patience` consecutive exits after the first agree on the prediction."""

    patience: int
    exits = None  # works with any number of exits (a class attribute, not a field)

    def __post_init__(self):
        if not isinstance(self.patience, (int, np.integer)) or self.patience < 1:
            raise InputError(f"PatiencePolicy patience must be an int ≥ 1, got {self.patience!r}")

    def decide(self, logits: np.ndarray, carry: np.ndarray, exit_index: int):
        carry = track(logits, carry)
        return carry[:, 1] >= self.patience, carry


@dataclass(frozen=True)
class FullDepth:
    """Never leave early: the reference every speed-up is measured against."""
    exits = None

    def decide(self, logits: np.ndarray, carry: np.ndarray, exit_index: int):
        return np.zeros(len(logits), dtype=bool), carry


Policy = EntropyPolicy | LearnedExit | PatiencePolicy | FullDepth
EXIT_POLICIES = (EntropyPolicy, LearnedExit, PatiencePolicy, FullDepth)


# ---- draft-length policies (speculative decoding) ----

def expected_tokens(alpha: float, k: int) -> float:
    """Expected tokens per round with k drafts and per-token acceptance alpha: (1 − α^{k+1}) / (1 − α)."""
    return float(k + 1) if alpha >= 1 else (1 - alpha ** (k + 1)) / (1 - alpha)


def best_k(alpha: float, cost_ratio: float, k_max: int, verify_slope: float = 0.0,
           verify_cost: tuple[float, ...] | None = None) -> int:
    """k maximising expected tokens per unit time: E[tokens] / (k·c + v(k+1)), time in one-token target
    calls; v(n) = verify_cost[n − 1] (the measured curve t(n)/t(1)) if given, else 1 + slope·(n − 1)."""
    v = (lambda n: verify_cost[min(n, len(verify_cost)) - 1]) if verify_cost else (lambda n: 1 + verify_slope * (n - 1))
    speed = [expected_tokens(alpha, k) / (k * cost_ratio + v(k + 1)) for k in range(k_max + 1)]
    return int(np.argmax(speed))


DraftPolicy = Union["FixedDraft", "AdaptiveDraft", "TreeCfg"]


def _int_in(name: str, v, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise InputError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")


@dataclass(frozen=True)
class FixedDraft:
    """Draft k tokens every round (a chain of k for EAGLE); k = 0 runs the target alone."""
    k: int

    def __post_init__(self):
        _int_in("FixedDraft k (num_draft_tokens)", self.k, 0, 16)


@dataclass(frozen=True)
class AdaptiveDraft:
    """Speculative decoding: k from the running acceptance estimate α̂ = accepted / (accepted +
    rejections), exponentially decayed, with a prior of `prior_alpha` worth `prior_weight` trials;
    k = best_k(α̂, c, slope). When no k pays (best_k = 0: the draft costs more than it saves) the target
    decodes alone, with a k = 1 probe every `probe_every` tokens so α̂ keeps tracking the text.
    cost_ratio / verify_slope / verify_cost None: the artifact's measured values (its verify-cost curve
    `verify_ms` when it has one, else the slope; `FALLBACK_COSTS` if it has neither).
    A frozen config: the estimate lives in the generate call (`AcceptanceEstimate`)."""
    cost_ratio: float | None = None  # draft call time / target single-token call time
    verify_slope: float | None = None  # extra target time per verified token, in target calls
    verify_cost: tuple[float, ...] | None = None  # t(n)/t(1), n = 1, 2, …: the measured curve (beats the slope)
    k_max: int = 8
    decay: float = 0.9
    prior_alpha: float = 0.6
    prior_weight: float = 4.0
    probe_every: int = 8

    def __post_init__(self):
        _int_in("AdaptiveDraft k_max", self.k_max, 1, 16)
        _int_in("AdaptiveDraft probe_every", self.probe_every, 1, 1 << 20)
        for name in ("cost_ratio", "verify_slope"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0):
                raise InputError(f"AdaptiveDraft {name} must be a finite number ≥ 0 or None, got {v!r}")
        vc = self.verify_cost
        if vc is not None and (not isinstance(vc, tuple) or not vc or
                               not all(isinstance(x, (int, float)) and np.isfinite(x) and x > 0 for x in vc)):
            raise InputError(f"AdaptiveDraft verify_cost must be a non-empty tuple of positive numbers or None, got {vc!r}")
        if not 0 < self.decay <= 1 or not 0 <= self.prior_alpha <= 1 or not self.prior_weight > 0:
            raise InputError("AdaptiveDraft needs 0 < decay ≤ 1, 0 ≤ prior_alpha ≤ 1 and prior_weight > 0")


FALLBACK_COSTS = AdaptiveDraft(cost_ratio=0.15, verify_slope=0.02)  # for artifacts without measured costs


@dataclass
class AcceptanceEstimate:
    """The mutable state of one AdaptiveDraft generation: decayed accepted / trial counts. The prior
    enters as initial pseudo-counts that decay like the data, so a draft that stops agreeing is seen
    as useless after a few rounds (a fixed prior kept α̂ ≥ 0.17 forever with decay 0.9: an untrained
    layer-cut draft with α = 0.01 then ran at 0.71x the target alone)."""
    policy: AdaptiveDraft  # with cost_ratio and verify_slope filled in
    accepted: float | None = None  # None: the prior's pseudo-counts
    trials: float | None = None
    idle: int = 0  # target-only steps since the last draft round

    def __post_init__(self):
        p = self.policy
        if self.trials is None:
            self.accepted, self.trials = p.prior_alpha * p.prior_weight, p.prior_weight

    def alpha(self) -> float:
        return self.accepted / self.trials if self.trials > 0 else self.policy.prior_alpha

    def next_k(self) -> int:
        p = self.policy
        k = best_k(self.alpha(), p.cost_ratio, p.k_max, p.verify_slope, p.verify_cost)
        if k == 0:
            self.idle += 1
            if self.idle < p.probe_every:
                return 0
            k = 1
        self.idle = 0
        return k

    def update(self, k: int, accepted: int) -> None:
        """A round drafted k and accepted `accepted`: that is `accepted` successes and one failure if < k."""
        d = self.policy.decay
        self.accepted = d * self.accepted + accepted
        self.trials = d * self.trials + accepted + (1 if accepted < k else 0)


@dataclass(frozen=True)
class TreeCfg:
    """EAGLE: draft a token tree (EAGLE-2: grown by the head's confidence) instead of a chain."""
    depth: int = 5  # draft depth (head calls per round, counting the free first level)
    topk: int = 8  # children per expanded node, and nodes expanded per depth
    max_tokens: int = 32  # draft tokens verified per round at most
    dynamic: bool = True  # size each tree from the measured target cost (False: exactly max_tokens)

    def __post_init__(self):
        for name, lo, hi in (("depth", 1, 16), ("topk", 1, 64), ("max_tokens", 1, 256)):
            _int_in(f"tree {name}", getattr(self, name), lo, hi)
        if not isinstance(self.dynamic, bool):
            raise InputError(f"tree dynamic must be true or false, got {self.dynamic!r}")


# ---- step policies (StepSaver) ----

def _check_margin(margin) -> None:
    if isinstance(margin, bool) or not isinstance(margin, (int, float, np.floating)) or not 0.0 < margin < 1.0:
        raise InputError(f"margin must be a number in (0, 1), got {margin!r}")


def choose_steps(probs: np.ndarray, counts: list[int], margin: float) -> np.ndarray:
    """Smallest step count whose cumulative predicted probability of being enough reaches `margin`.
    probs [B, C] over the ascending `counts` → [B] int."""
    _check_margin(margin)
    idx = np.minimum((np.cumsum(probs, -1) < margin).sum(-1), len(counts) - 1)
    return np.asarray(counts)[idx]


@dataclass(frozen=True)
class FixedSteps:
    """Every prompt denoises with the same n steps (the baseline schedule, re-spaced)."""
    n: int

    def __post_init__(self):
        _int_in("steps", self.n, 1, 1000)


@dataclass(frozen=True)
class PredictedSteps:
    """StepSaver: the step predictor picks each prompt's count, the smallest whose predicted probability
    of being enough reaches `margin` (None: the artifact's calibrated margin)."""
    margin: float | None = None

    def __post_init__(self):
        if self.margin is not None:
            _check_margin(self.margin)


FINISHES = ("jump", "respace")


def _check_positive(name: str, v) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.floating))
                          or not np.isfinite(v) or v <= 0):
        raise InputError(f"{name} must be a finite number > 0, got {v!r}")


def _check_stop(p) -> None:
    """The stop fields InLoopStop and CombinedSteps share: tol, finish, respace_steps, min_calls."""
    _check_positive("tol", p.tol)
    if p.finish is not None and p.finish not in FINISHES:
        raise InputError(f"finish must be one of {', '.join(FINISHES)}, got {p.finish!r}")
    _int_in("respace_steps", p.respace_steps, 1, 50)
    if p.min_calls is not None:
        _int_in("min_calls", p.min_calls, 1, 1000)


def _check_steps(v) -> None:
    if v is not None:
        _int_in("steps", v, 1, 1000)


@dataclass(frozen=True)
class InLoopStop:
    """Run the `steps`-step schedule and, from call `min_calls` on, stop a sample once its x̂₀ moved less
    than `tol` (RMS, x̂₀ in [-1, 1]) since the previous call: "jump" ends at t → 0 from the current x̂₀
    (no further call), "respace" re-spaces the rest of the schedule into `respace_steps` steps (the
    current call counts as the first). None: the artifact's calibrated value."""
    tol: float | None = None
    steps: int | None = None
    finish: str | None = None
    respace_steps: int = 2
    min_calls: int | None = None

    def __post_init__(self):
        _check_stop(self)
        _check_steps(self.steps)


@dataclass(frozen=True)
class AdaptiveSkip:
    """AdaptiveDiffusion (Ye et al., 2024) on the `steps`-step schedule: skip the UNet call (reuse the last
    noise) when the third-order difference of the latents is small — |(d_k + d_{k−2}) / 2 − d_{k−1}| ≤
    threshold · d_{k−1}, d_k = mean |x_k − x_{k−1}| — never in the first `warmup` steps nor more than
    `max_skips` in a row. None: the artifact's calibrated value."""
    threshold: float | None = None
    steps: int | None = None
    max_skips: int = 4
    warmup: int = 4

    def __post_init__(self):
        _check_positive("threshold", self.threshold)
        _check_steps(self.steps)
        _int_in("max_skips", self.max_skips, 1, 100)
        _int_in("warmup", self.warmup, 3, 1000)


@dataclass(frozen=True)
class CombinedSteps:
    """The step predictor sets each sample's starting budget (at `margin`); inside the loop InLoopStop's
    check (at `tol`) stops it early, and a sample whose x̂₀ still moves more than `tol` in the last third
    of its budget continues on the full schedule's remaining steps, re-checked each call. None: calibrated."""
    margin: float | None = None
    tol: float | None = None
    finish: str | None = None
    respace_steps: int = 2
    min_calls: int | None = None

    def __post_init__(self):
        if self.margin is not None:
            _check_margin(self.margin)
        _check_stop(self)


StepPolicy = FixedSteps | PredictedSteps | InLoopStop | AdaptiveSkip | CombinedSteps
STEP_POLICIES = (FixedSteps, PredictedSteps, InLoopStop, AdaptiveSkip, CombinedSteps)
# steps= shorthands; "adaptive" is the in-loop policy the artifact's calibration found best
STEP_SHORTHANDS = {"auto": PredictedSteps, "stop": InLoopStop, "skip": AdaptiveSkip, "combined": CombinedSteps}
