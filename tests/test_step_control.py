"""In-loop step policies (InLoopStop, AdaptiveSkip, CombinedSteps): the per-sample loop, the policies'
rules on a tiny random UNet, the calibration in the manifest, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import COUNTS, export_diffusion, make_tiny_diffusion
from hypothesis import given, settings
from hypothesis import strategies as st

from dynexport.errors import InputError
from dynexport.runtime.policies import AdaptiveSkip, CombinedSteps, FixedSteps, InLoopStop
from dynexport.runtime.schedulers import make_scheduler
from dynexport.runtime.steploop import fixed_plan, respaced_plan, tail_plan

PROMPTS = ["red apple", "flag jp", "man judge: medium skin tone", "clock face two oclock"]


def _calibration(unet_sha: str, **fields) -> dict:
    return {"stop": {"tol": 0.05, "steps": 8, "min_calls": 2}, "skip": {"threshold": 0.3, "steps": 8},
            "combined": {"tol": 0.05, "min_calls": 2}, "default": "skip",
            "training": {"unet_sha256": unet_sha, "scheduler": "dpmsolver++", "full_steps": 8, "guidance": 1.0},
            **fields}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from dynexport.manifest import sha256_file
    d = make_tiny_diffusion(tmp_path_factory.mktemp("stepcontrol"))
    d["sha"] = sha256_file(d["unet"] / "unet.safetensors")
    ctl = d["root"] / "control"
    ctl.mkdir()
    (ctl / "step_control.json").write_text(json.dumps(_calibration(d["sha"])))
    d["control"] = ctl
    d["plain"], d["calibrated"] = d["root"] / "plain", d["root"] / "calibrated"
    export_diffusion(d["plain"], d["unet"], d["pred"], sampling={"full_steps": 8})
    export_diffusion(d["calibrated"], d["unet"], d["pred"], step_control=ctl, sampling={"full_steps": 8})
    return d


@pytest.fixture(scope="module")
def pipes(tiny):
    from dynexport.runtime import load
    return {"plain": load(tiny["plain"]), "calibrated": load(tiny["calibrated"])}


@settings(max_examples=200, deadline=None)
@given(t=st.integers(0, 999), n=st.integers(1, 60))
def test_plans_chain_down_to_the_end(t, n):
    """Re-spaced and tail plans start at the current t, call strictly lower t's, and land on the next call."""
    cfg = make_scheduler({"train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}, "dpmsolver++")
    for plan in (respaced_plan(t, n), tail_plan(cfg, n, t), fixed_plan(cfg, n)):
        calls, lands = [c for c, _ in plan], [lnd for _, lnd in plan]
        assert lands == calls[1:] + [-1] and all(a > b >= 0 for a, b in zip(calls, calls[1:])), plan
    assert respaced_plan(t, n)[0][0] == t == tail_plan(cfg, n, t)[0][0]
    assert 1 <= len(respaced_plan(t, n)) <= min(n, t + 1) and (t < 2 * n or len(respaced_plan(t, n)) == n)
    assert len(fixed_plan(cfg, n)) == n


def test_open_fields_follow_the_plan_when_nothing_converges(pipes):
    """A tolerance nothing meets runs the plain schedule: same images, calls = steps."""
    p = pipes["plain"]
    fixed = p.generate(PROMPTS, steps=8, seed=1)
    for policy in (InLoopStop(tol=1e-12, steps=8), AdaptiveSkip(threshold=1e-12, steps=8)):
        r = p.generate(PROMPTS, policy, seed=1)
        assert r.stats.calls == [8] * 4 and r.stats.steps == [8] * 4, policy
        assert np.abs(r.images.astype(int) - fixed.images.astype(int)).max() <= 1, policy


def test_stop_jumps_at_min_calls_and_respace_finishes(pipes):
    p = pipes["plain"]
    r = p.generate(PROMPTS, InLoopStop(tol=1e6, steps=8, min_calls=3), seed=1)
    assert r.stats.calls == [3] * 4 and r.stats.steps == [3] * 4 and r.stats.check_s > 0
    r = p.generate(PROMPTS, InLoopStop(tol=1e6, steps=8, min_calls=3, finish="respace", respace_steps=3), seed=1)
    assert r.stats.calls == [5] * 4  # 2 calls before the check + the current one + 2 re-spaced
    r = p.generate(PROMPTS, InLoopStop(tol=1e6, steps=8, min_calls=7, finish="respace", respace_steps=4), seed=1)
    assert r.stats.calls == [8] * 4  # re-spacing never adds steps: 2 left, re-spaced into ≤ 2


def test_skip_reuses_noise_at_most_max_skips_in_a_row(pipes):
    r = pipes["plain"].generate(PROMPTS, AdaptiveSkip(threshold=1e6, steps=20, max_skips=3, warmup=4), seed=0)
    # every step skippable: 4 warm-up calls, then one call after each run of 3 skips
    assert r.stats.steps == [20] * 4 and r.stats.calls == [4 + 4] * 4
    assert r.images.dtype == np.uint8 and r.images.shape == (4, 16, 16, 3)


def test_combined_budget_stops_or_extends(pipes):
    p = pipes["plain"]
    predicted = p.generate(PROMPTS, steps="auto").stats.steps
    stop = p.generate(PROMPTS, CombinedSteps(tol=1e6, min_calls=2)).stats
    assert stop.calls == [min(2, n) for n in predicted]
    extend = p.generate(PROMPTS, CombinedSteps(tol=1e-12)).stats  # never converges: on to the full schedule
    assert all(c >= n for c, n in zip(extend.calls, predicted)) and max(extend.calls) <= 8 + max(COUNTS)
    assert any(c > n for c, n in zip(extend.calls, predicted))


def test_calibrated_values_fill_open_fields(pipes, tiny):
    from dynexport.manifest import read_manifest
    m = read_manifest(tiny["calibrated"])
    assert m.step_control.default == "skip" and m.step_control.stop["tol"] == 0.05
    c = pipes["calibrated"]
    assert c.generate(PROMPTS, steps="adaptive").stats.policy.startswith("AdaptiveSkip(threshold=0.3, steps=8")
    assert c.generate(PROMPTS, steps="stop").stats.policy.startswith("InLoopStop(tol=0.05, steps=8, finish='jump'")
    # a field set by the caller wins over the calibration
    assert "tol=0.2" in c.generate(PROMPTS, InLoopStop(tol=0.2)).stats.policy


@pytest.mark.parametrize("steps, message", [
    ("adaptive", "calibrated step control"), ("stop", "no calibrated tol"), ("skip", "no calibrated threshold"),
    ("combined", "no calibrated tol"), ("teleport", "steps must be"),
    (lambda: InLoopStop(tol=0.1, steps=0), "steps must be")])
def test_uncalibrated_artifact_needs_explicit_values(pipes, steps, message):
    with pytest.raises(InputError, match=message):
        pipes["plain"].generate(PROMPTS[:1], steps=steps() if callable(steps) else steps)


@pytest.mark.parametrize("make, message", [
    (lambda: InLoopStop(tol=0.0), "tol must be"), (lambda: InLoopStop(tol=-1), "tol must be"),
    (lambda: InLoopStop(tol=float("nan")), "tol must be"), (lambda: InLoopStop(tol=float("inf")), "tol must be"),
    (lambda: InLoopStop(tol=True), "tol must be"), (lambda: InLoopStop(tol="0.1"), "tol must be"),
    (lambda: InLoopStop(tol=0.1, steps=0), "steps must be"), (lambda: InLoopStop(tol=0.1, steps=1001), "steps must be"),
    (lambda: InLoopStop(finish="teleport"), "finish must be"), (lambda: InLoopStop(respace_steps=0), "respace_steps"),
    (lambda: AdaptiveSkip(threshold=0), "threshold must be"), (lambda: AdaptiveSkip(max_skips=0), "max_skips"),
    (lambda: AdaptiveSkip(warmup=2), "warmup"), (lambda: CombinedSteps(margin=1.0), "margin must be"),
    (lambda: CombinedSteps(tol=float("-inf")), "tol must be"), (lambda: FixedSteps(1001), "steps must be")])
def test_policies_validate(make, message):
    with pytest.raises(InputError, match=message):
        make()


def test_export_refuses_a_calibration_for_another_unet(tiny, tmp_path):
    ctl = tmp_path / "control"
    ctl.mkdir()
    (ctl / "step_control.json").write_text(json.dumps(_calibration("0" * 64)))
    with pytest.raises(InputError, match="does not fit this export"):
        export_diffusion(tmp_path / "art", tiny["unet"], tiny["pred"], step_control=ctl, sampling={"full_steps": 8})
    (ctl / "step_control.json").write_text(json.dumps(_calibration(tiny["sha"], default="warp")))
    from dynexport.errors import AssetError
    with pytest.raises(AssetError, match="unreadable"):
        export_diffusion(tmp_path / "art", tiny["unet"], tiny["pred"], step_control=ctl, sampling={"full_steps": 8})
    assert not (tmp_path / "art").exists()


@settings(max_examples=25, deadline=None)
@given(tol=st.floats(1e-6, 10.0), thr=st.floats(1e-6, 10.0), steps=st.integers(1, 12), min_calls=st.integers(1, 12),
       finish=st.sampled_from(["jump", "respace"]))
def test_any_valid_policy_gives_images_within_its_budget(pipes, tol, thr, steps, min_calls, finish):
    p = pipes["plain"]
    for policy in (InLoopStop(tol=tol, steps=steps, min_calls=min_calls, finish=finish),
                   AdaptiveSkip(threshold=thr, steps=max(steps, 1)), CombinedSteps(tol=tol, finish=finish)):
        r = p.generate(PROMPTS[:2], policy, seed=7)
        assert r.images.dtype == np.uint8 and r.images.shape == (2, 16, 16, 3)
        limit = 8 + max(COUNTS) if isinstance(policy, CombinedSteps) else steps
        assert all(1 <= c <= s <= limit for c, s in zip(r.stats.calls, r.stats.steps)), (policy, r.stats)


def test_calibration_picks_the_cheapest_point_meeting_the_target():
    from dynexport.train.step_control import Point, calibrate, same_mean_fixed

    def evaluate(v):  # a larger tolerance: fewer calls, lower SSIM (a known curve, with a noisy dip)
        calls = 50 / (1 + 100 * v)
        return Point(v, calls, 1 - 0.02 * v * 100 - (0.05 if 0.2 < v < 0.25 else 0.0), 0.0)
    best, curve = calibrate(evaluate, 1e-3, 1.0, target=0.9, iters=10)
    assert best is not None and best.ssim >= 0.9 and abs(best.value - 0.05) < 0.002
    assert [p.value for p in curve] == sorted(p.value for p in curve) and len(curve) == 12
    assert min(p.calls for p in curve if p.ssim >= 0.9) == best.calls
    none, _ = calibrate(evaluate, 0.5, 1.0, target=0.99, iters=3)
    assert none is None
    assert same_mean_fixed({16: 0.94, 17: 0.95}, 16.25) == pytest.approx(0.9425)
    with pytest.raises(ValueError, match="outside"):
        same_mean_fixed({16: 0.94, 17: 0.95}, 18.0)
