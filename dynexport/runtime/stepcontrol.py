"""The numpy rules of the in-loop step policies (InLoopStop, AdaptiveSkip, CombinedSteps): `Control`s
for `steploop.run_plans`, built from a policy whose open fields the artifact's calibration fills.

Every rule reads only what the loop already has — x̂₀ of the current and previous call, the latents'
step-to-step change — so a check costs a few numpy reductions over the [C, S, S] sample, no UNet call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError
from .policies import AdaptiveSkip, CombinedSteps, InLoopStop, StepPolicy
from .schedulers import SchedulerCfg
from .steploop import Control, LoopState, respaced_plan, tail_plan, x0_change


def _finish(st: LoopState, r: int, finish: str, respace_steps: int) -> None:
    """Cut sample r's plan: land at σ = 0 from this call's x̂₀, or re-space what is left into fewer steps."""
    t, left = st.plan[r][0][0], len(st.plan[r])
    n = 1 if finish == "jump" else min(respace_steps, left)
    if n < left:
        st.plan[r] = [(t, -1)] if n == 1 else respaced_plan(t, n)
        st.stopped[r] = True


@dataclass(frozen=True)
class StopControl(Control):
    tol: float
    min_calls: int
    finish: str
    respace_steps: int

    def after_x0(self, st: LoopState, rows: np.ndarray) -> None:
        st.estimate[rows] = d = x0_change(st, rows)
        for r, dr in zip(rows, d):
            if not st.stopped[r] and st.calls[r] >= self.min_calls and dr < self.tol:
                _finish(st, r, self.finish, self.respace_steps)


@dataclass(frozen=True)
class SkipControl(Control):
    threshold: float
    max_skips: int
    warmup: int

    def skip(self, st: LoopState, rows: np.ndarray) -> np.ndarray:
        out = np.zeros(len(rows), bool)
        for i, r in enumerate(rows):
            d = st.diffs[r]
            if st.steps[r] >= self.warmup and len(d) >= 3 and st.skips_in_row[r] < self.max_skips:
                out[i] = abs((d[-1] + d[-3]) / 2 - d[-2]) <= self.threshold * d[-2]
        return out


@dataclass(frozen=True)
class CombinedControl(Control):
    """StopControl inside the predicted budget; once the last third of a sample's budget is reached and
    its x̂₀ still moves by more than tol, the rest of its plan becomes the full schedule's calls below the
    current t (where those are more), so it can extend up to the full count."""
    stop: StopControl
    cfg: SchedulerCfg
    full_steps: int

    def after_x0(self, st: LoopState, rows: np.ndarray) -> None:
        self.stop.after_x0(st, rows)
        for r in rows:
            left, done = len(st.plan[r]), int(st.steps[r]) + 1
            if st.stopped[r] or 3 * left > left + done or not st.estimate[r] >= self.stop.tol:
                continue  # stopped, not yet in the last third, or converged enough
            tail = tail_plan(self.cfg, self.full_steps, st.plan[r][0][0])
            if len(tail) > left:
                st.plan[r] = tail


# where each in-loop policy's calibration sits in the manifest's step_control, and the values an open
# field takes when the artifact calibrated none (steps: the artifact's full schedule)
STORED = {InLoopStop: "stop", AdaptiveSkip: "skip", CombinedSteps: "combined"}
FALLBACK = {InLoopStop: {"finish": "jump", "min_calls": 4}, AdaptiveSkip: {},
            CombinedSteps: {"finish": "jump", "min_calls": 4}}


def fill(policy: StepPolicy, step_control: dict, full_steps: int) -> StepPolicy:
    """`policy` with its open (None) fields from the calibration (`step_control`: the manifest's), then
    the fallbacks; an open tolerance with nothing calibrated is an error."""
    kind = type(policy)
    if kind not in STORED:
        return policy
    set_ = {k: v for k, v in asdict(policy).items() if v is not None}
    fields = {**FALLBACK[kind], **({"steps": full_steps} if kind is not CombinedSteps else {}),
              **(step_control.get(STORED[kind]) or {}), **set_}
    need = "threshold" if kind is AdaptiveSkip else "tol"
    if fields.get(need) is None:
        raise InputError(f"{kind.__name__}: this artifact has no calibrated {need}; pass {kind.__name__}({need}=...) "
                         "or export with a step-control calibration")
    return kind(**{k: v for k, v in fields.items() if k in asdict(policy)})


def control_for(policy: StepPolicy, cfg: SchedulerCfg, full_steps: int) -> Control | None:
    """The loop control of a filled policy (None: follow the plan)."""
    if isinstance(policy, AdaptiveSkip):
        return SkipControl(policy.threshold, policy.max_skips, policy.warmup)
    if isinstance(policy, (InLoopStop, CombinedSteps)):
        stop = StopControl(policy.tol, policy.min_calls, policy.finish, policy.respace_steps)
        return CombinedControl(stop, cfg, full_steps) if isinstance(policy, CombinedSteps) else stop
    return None
