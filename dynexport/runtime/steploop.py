"""The sampler loop with per-sample step control: every sample carries its own remaining plan, and an
in-loop step policy may shorten it (stop: jump to t → 0 from the current x̂₀, or re-space the rest into
fewer steps), lengthen it, or skip a UNet call (reuse the last noise prediction) — decided from cheap
numpy statistics of the sample, never an extra UNet call.

    x, eps, x0 [b, C, S, S]   samples, the noise used by the last step, its clipped x̂₀
    plan[r]    [(t_call, t_land), ...]  the remaining steps of sample r; t_land = -1 lands at σ = 0

`run_loop(cfg, n, x, eps_fn)` is the fixed n-step loop (DDIM lands at t − T // n as diffusers does,
DPM-Solver++ on the next call's t). The samples of one loop share each UNet call, each with its own timestep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .schedulers import SchedulerCfg, alphas_cumprod, timesteps

Plan = list[tuple[int, int]]
EpsFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (x [k, C, S, S], t [k], rows [k]) → noise


def fixed_plan(cfg: SchedulerCfg, n: int) -> Plan:
    """The n-step schedule as (call, land) pairs."""
    ts = [int(t) for t in timesteps(cfg, n)]
    if cfg.kind == "ddim":
        stride = cfg.train_timesteps // n
        return [(t, t - stride if t - stride >= 0 else -1) for t in ts]
    return list(zip(ts, ts[1:] + [-1]))


def respaced_plan(t: int, n: int) -> Plan:
    """n steps (fewer where t < n − 1) from the current t (called first) down to σ = 0, evenly spaced in t."""
    u = sorted({int(v) for v in np.round(np.linspace(t, 0, n + 1))[1:n]} - {t}, reverse=True)  # distinct, < t
    calls = [t, *u]
    return list(zip(calls, u + [-1]))


def tail_plan(cfg: SchedulerCfg, n: int, t: int) -> Plan:
    """From the current t (called first), the n-step schedule's calls below t, down to σ = 0."""
    below = [int(s) for s in timesteps(cfg, n) if s < t]
    return list(zip([t, *below], below + [-1]))


@dataclass
class LoopState:
    """Everything a step policy may read (and `plan` it may edit), one entry per sample."""
    x: np.ndarray  # [b, C, S, S]
    plan: list[Plan]
    eps: np.ndarray | None = None  # [b, C, S, S] noise of the last call
    x0: np.ndarray | None = None  # [b, C, S, S] x̂₀ of the current step
    prev_x0: np.ndarray | None = None  # [b, C, S, S] x̂₀ of the previous step
    has_prev: np.ndarray = None  # [b] bool
    lam_prev: np.ndarray = None  # [b] λ = log(α/σ) at the previous step
    calls: np.ndarray = None  # [b] UNet calls made
    steps: np.ndarray = None  # [b] solver steps taken (calls + skipped)
    skips_in_row: np.ndarray = None  # [b] consecutive skipped steps
    diffs: list = field(default_factory=list)  # per sample: mean |x_k − x_{k−1}| of the steps so far
    estimate: np.ndarray = None  # [b] the policy's last error estimate (nan before the first)
    stopped: np.ndarray = None  # [b] bool: the policy has cut this sample's plan short
    check_s: float = 0.0  # time spent in policy checks and the step differences they read

    def __post_init__(self):
        b = len(self.x)
        self.has_prev, self.lam_prev = np.zeros(b, bool), np.zeros(b)
        self.calls, self.steps, self.skips_in_row = (np.zeros(b, np.int64) for _ in range(3))
        self.diffs = [[] for _ in range(b)]
        self.estimate = np.full(b, np.nan)
        self.stopped = np.zeros(b, bool)


def run_loop(cfg: SchedulerCfg, n: int, x: np.ndarray, eps_fn: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
    """Denoise x [B, C, H, W] from pure noise in n steps; eps_fn(x, t) → predicted noise, same shape."""
    return run_plans(cfg, x, lambda xs, t, rows: eps_fn(xs, int(t[0])), [fixed_plan(cfg, n)] * len(x)).x


class Control:
    """The no-op step policy: follow the plan. Subclasses override the two hooks."""

    def skip(self, st: LoopState, rows: np.ndarray) -> np.ndarray:
        """Before the UNet call: which of `rows` reuse st.eps instead → [len(rows)] bool."""
        return np.zeros(len(rows), bool)

    def after_x0(self, st: LoopState, rows: np.ndarray) -> None:
        """After st.x0 of `rows` is known, before they step: may rewrite st.plan[r] (the first entry's call
        is the current one and stays)."""


def run_plans(cfg: SchedulerCfg, x: np.ndarray, eps_fn: EpsFn, plans: list[Plan],
              control: Control | None = None) -> LoopState:
    """Denoise every sample along its plan (as the policy edits it); the final samples are in st.x."""
    control = control or Control()
    st = LoopState(x.copy(), [list(p) for p in plans])
    sig = np.sqrt((1 - (ac := alphas_cumprod(cfg))) / ac)  # [T] VE σ per timestep
    st.eps, st.x0 = np.zeros_like(x), np.zeros_like(x)
    while len(rows := np.array([r for r in range(len(x)) if st.plan[r]], np.int64)):
        t = np.array([st.plan[r][0][0] for r in rows])
        t0 = time.perf_counter()
        skip = control.skip(st, rows) & st.has_prev[rows]
        st.check_s += time.perf_counter() - t0
        call = rows[~skip]
        if len(call):
            st.eps[call] = eps_fn(st.x[call], t[~skip].astype(np.float32), call)
            st.calls[call] += 1
        st.skips_in_row[rows] = np.where(skip, st.skips_in_row[rows] + 1, 0)
        s_s = sig[t][:, None, None, None]
        a_s = 1.0 / np.sqrt(s_s * s_s + 1.0)
        st.x0[rows] = np.clip((st.x[rows] - s_s * a_s * st.eps[rows]) / a_s, -1.0, 1.0)
        t0 = time.perf_counter()
        control.after_x0(st, rows)
        st.check_s += time.perf_counter() - t0
        land = np.array([st.plan[r][0][1] for r in rows])
        new = _step(cfg, st, rows, sig[t], np.where(land >= 0, sig[np.maximum(land, 0)], 0.0))
        t0 = time.perf_counter()
        for r, xr, xo in zip(rows, new, st.x[rows]):  # AdaptiveSkip's input: part of the check's cost
            st.diffs[r].append(float(np.abs(xr - xo).mean()))
        st.check_s += time.perf_counter() - t0
        for r in rows:
            st.plan[r].pop(0)
        st.prev_x0 = st.x0.copy() if st.prev_x0 is None else st.prev_x0
        st.prev_x0[rows] = st.x0[rows]
        st.x[rows] = new
        st.steps[rows] += 1
    return st


def _step(cfg: SchedulerCfg, st: LoopState, rows: np.ndarray, s_s: np.ndarray, s_t: np.ndarray) -> np.ndarray:
    """One DDIM or DPM-Solver++(2M) step of `rows` from VE σ s_s to s_t [k] (0: the end) → new x [k, ...]."""
    a_s, a_t = 1.0 / np.sqrt(s_s ** 2 + 1.0), 1.0 / np.sqrt(s_t ** 2 + 1.0)
    v_s, v_t = s_s * a_s, s_t * a_t  # VP σ
    x, eps, x0 = st.x[rows], st.eps[rows], st.x0[rows]
    col = lambda v: v[:, None, None, None]
    if cfg.kind == "ddim":
        out = col(a_t) * x0 + col(v_t) * eps
    else:
        lam_s = np.log(a_s) - np.log(v_s)
        with np.errstate(divide="ignore"):
            lam_t = np.where(v_t > 0, np.log(a_t) - np.log(np.where(v_t > 0, v_t, 1.0)), np.inf)
        h = lam_t - lam_s
        em1 = np.where(np.isfinite(h), np.expm1(-np.where(np.isfinite(h), h, 0.0)), -1.0)
        ratio = np.where(v_s > 0, v_t / v_s, 0.0)
        out = col(ratio) * x - col(a_t * em1) * x0
        second = st.has_prev[rows] & np.isfinite(h)  # lower order at the start and the final step
        if second.any():
            r0 = np.where(second, (lam_s - st.lam_prev[rows]) / np.where(second, h, 1.0), 1.0)
            d1 = (x0 - st.prev_x0[rows]) / col(r0) if st.prev_x0 is not None else 0.0
            out = out - col(np.where(second, 0.5 * a_t * em1, 0.0)) * d1
        st.lam_prev[rows] = lam_s
    st.has_prev[rows] = True
    return out.astype(st.x.dtype)


def x0_change(st: LoopState, rows: np.ndarray) -> np.ndarray:
    """RMS change of x̂₀ since the previous step [k] (nan where there is none); x̂₀ ∈ [-1, 1]."""
    if st.prev_x0 is None:
        return np.full(len(rows), np.nan)
    d = np.sqrt(((st.x0[rows] - st.prev_x0[rows]) ** 2).mean((1, 2, 3)))
    return np.where(st.has_prev[rows], d, np.nan)

