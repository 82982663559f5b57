"""Slow tier: StepSaver with the committed OpenMoji UNet and step predictor (dynexport/recipes/stepsaver.toml) —
the UNet is really trained, the exported loop equals torch + diffusers' DPM-Solver++, and predicted
step counts on held-out prompts are far below the full schedule while the images stay close to it."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    from dynexport import methods, paths
    from dynexport.runtime import load
    r = methods.get("stepsaver").load_recipe()
    out = tmp_path_factory.mktemp("stepsaver") / "art"
    methods.export("stepsaver", r, out)
    return {"recipe": r, "pipe": load(out), "unet": paths.resolve_weights(r.models.unet, "stepsaver", "UNet")}


@pytest.fixture(scope="module")
def emoji():
    from dynexport.emoji_data import load_emoji
    return load_emoji(32)


def test_real_unet_is_trained_and_exported_exactly(real, emoji):
    """Noise-prediction error on real emoji at mid-schedule: a trained UNet is far below an untrained
    one's ~1 (the noise variance); the export's recorded parity is inside the fp32 bound."""
    pipe = real["pipe"]
    assert max(pipe.manifest.parity.values()) < 6e-3, pipe.manifest.parity
    from dynexport.runtime.schedulers import alphas_cumprod, make_scheduler
    ac = alphas_cumprod(make_scheduler(pipe.manifest.scheduler, "ddim"))
    rows = emoji.split("test")[:32]
    x0 = emoji.images[rows].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1  # [32, 3, 32, 32]
    eps = np.random.default_rng(0).standard_normal(x0.shape).astype(np.float32)
    t = 500
    xt = np.sqrt(ac[t]) * x0 + np.sqrt(1 - ac[t]) * eps
    ctx = pipe.embed([emoji.captions[i] for i in rows])[:, None]
    got = pipe.graphs["unet"](sample=xt.astype(np.float32), timestep=np.full(len(rows), t, np.float32),
                              context=ctx)["noise"]
    assert float(((got - eps) ** 2).mean()) < 0.1


def test_real_loop_matches_torch_and_diffusers(real):
    import torch
    from diffusers import DPMSolverMultistepScheduler

    from dynexport.models.sentence import caption_embeddings
    from dynexport.models.unet import load_unet
    from dynexport.runtime.schedulers import DIFFUSERS_SETTINGS
    r, pipe = real["recipe"], real["pipe"]
    assert r.sampling.scheduler == "dpmsolver++"
    prompts = ["red apple", "flag jp"]
    got = pipe.generate(prompts, seed=5, steps=8, guidance_scale=1.0)
    unet, ucfg = load_unet(real["unet"])
    sched = DPMSolverMultistepScheduler(num_train_timesteps=ucfg.train_timesteps, beta_schedule=ucfg.beta_schedule,
                                        **DIFFUSERS_SETTINGS["dpmsolver++"])
    sched.set_timesteps(8)
    x = torch.from_numpy(np.stack([np.random.default_rng([5, i]).standard_normal((3, 32, 32)) for i in range(2)])
                         .astype(np.float32))
    ctx = caption_embeddings(prompts)[:, None]
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t, ctx).sample, t, x).prev_sample
    want = np.clip((x.numpy().transpose(0, 2, 3, 1) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(got.images.astype(int) - want.astype(int)).max() <= 2


def test_real_predicted_steps_save_steps_and_keep_the_image(real, emoji):
    """Held-out (test-split) prompts: predicted counts are far below the full schedule, vary by prompt,
    and the images stay close to the full-schedule ones."""
    from dynexport.metrics import ssim
    pipe = real["pipe"]
    rows = emoji.split("test")[::20]
    prompts = [emoji.captions[i] for i in rows]
    auto = pipe.generate(prompts, seed=7)
    full = pipe.generate(prompts, seed=7, steps=pipe.manifest.full_steps)
    steps = np.array(auto.stats.steps)
    assert set(steps) <= set(pipe.manifest.step_predictor.counts)
    assert steps.mean() < pipe.manifest.full_steps / 2 and len(set(steps)) > 1, steps
    assert ssim(auto.images, full.images).mean() > 0.9


def test_real_adaptive_steps_use_the_calibration(real, emoji):
    """The committed calibration reaches the manifest; steps="adaptive" (AdaptiveSkip on val) makes under a
    third of the full schedule's UNet calls on held-out prompts and stays close to the full image."""
    from dynexport.metrics import ssim
    pipe = real["pipe"]
    ctl = pipe.manifest.step_control
    assert ctl is not None and ctl.training["unet_sha256"] == pipe.manifest.source["unet_sha256"]
    rows = emoji.split("test")[::20]
    prompts = [emoji.captions[i] for i in rows]
    full = pipe.generate(prompts, seed=7, steps=pipe.manifest.full_steps)
    r = pipe.generate(prompts, seed=7, steps="adaptive")
    calls = np.array(r.stats.calls)
    assert r.stats.policy.startswith({"skip": "AdaptiveSkip", "stop": "InLoopStop", "combined": "Combined"}[ctl.default])
    assert calls.mean() < pipe.manifest.full_steps / 3 and (calls <= np.array(r.stats.steps)).all(), calls
    assert ssim(r.images, full.images).mean() > 0.93
