"""StepSaver (diffusion): numpy schedulers vs diffusers, the emoji captions, and bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from helpers import (
    COUNTS,
    cpu_int8_flags,
    export_diffusion,
    make_tiny_diffusion,
    onnx_op_counts,
    ov_low_precision_constants,
    ov_op_counts,
    run_cli,
)

from dynexport.errors import InputError
from dynexport.runtime import PredictedSteps
from dynexport.runtime.schedulers import DIFFUSERS_SETTINGS, make_scheduler, timesteps
from dynexport.runtime.steploop import run_loop


def _diffusers(kind: str, beta_schedule: str, n: int):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
    cls = DDIMScheduler if kind == "ddim" else DPMSolverMultistepScheduler
    s = cls(num_train_timesteps=1000, beta_schedule=beta_schedule, prediction_type="epsilon", **DIFFUSERS_SETTINGS[kind])
    s.set_timesteps(n)
    return s


@pytest.mark.parametrize("kind", ["ddim", "dpmsolver++"])
@pytest.mark.parametrize("beta_schedule", ["squaredcos_cap_v2", "linear"])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 50])
def test_scheduler_matches_diffusers(kind, beta_schedule, n):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(n)
    w = rng.standard_normal((3, 3)).astype(np.float32) * 0.3

    def eps_fn(x, t):  # a fixed nonlinear stand-in for the UNet: ε ≈ x (as near pure noise) plus a twist
        return (0.9 * x + 0.1 * np.tanh(np.einsum("ij,bjhw->bihw", w, x) + t / 1000.0)).astype(np.float32)

    ref = _diffusers(kind, beta_schedule, n)
    x0 = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    x = torch.from_numpy(x0.copy())
    for t in ref.timesteps:
        x = ref.step(torch.from_numpy(eps_fn(x.numpy(), int(t))), t, x).prev_sample
    cfg = make_scheduler({"train_timesteps": 1000, "beta_schedule": beta_schedule}, kind)
    assert timesteps(cfg, n).tolist() == ref.timesteps.tolist()
    got, want = run_loop(cfg, n, x0, eps_fn), x.numpy()
    # diffusers steps in float32; near t = T−1 the cosine schedule's σ reaches 2·10⁴, so compare relative
    # to the output's scale: 1e-5 absolute on unit-scale outputs
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max()), np.abs(got - want).max()


def test_scheduler_bad_input():
    with pytest.raises(InputError, match="unknown scheduler"):
        make_scheduler({"train_timesteps": 1000, "beta_schedule": "linear"}, "euler-magic")
    cfg = make_scheduler({"train_timesteps": 1000, "beta_schedule": "linear"}, "ddim")
    for bad in (0, -3, 1001, 2.5):
        with pytest.raises(InputError, match="steps must be"):
            timesteps(cfg, bad)


def test_emoji_captions():
    from dynexport.emoji_data import caption
    assert caption("1F34E") == ("red apple", "red apple")
    assert caption("1F1EF-1F1F5") == ("flag jp", "flag jp")
    assert caption("1F468-1F3FD-200D-2696-FE0F") == ("man scales: medium skin tone", "man scales")
    assert caption("0023-FE0F-20E3") == ("number sign keycap", "number sign keycap")
    assert caption("E080") is None  # private-use extra: no Unicode name


# ---- tiny random UNet + tiny text encoder: export, runtime, CLI ----

@pytest.fixture(scope="module")
def tiny_diffusion(tmp_path_factory):
    d = make_tiny_diffusion(tmp_path_factory.mktemp("diffusion"))
    d["artifact"] = d["root"] / "art"
    export_diffusion(d["artifact"], d["unet"], d["pred"], sampling={"scheduler": "ddim", "full_steps": 8})
    return d


def test_export_parity_and_manifest(tiny_diffusion):
    from dynexport.manifest import read_manifest
    m = read_manifest(tiny_diffusion["artifact"])
    assert m.method == "stepsaver" and [g.name for g in m.all_graphs()] == ["text_encoder", "unet", "predictor"]
    assert set(m.parity) == {f"{g}/{b}" for g in ("text_encoder", "unet", "predictor") for b in ("openvino", "onnxruntime")}
    assert max(m.parity.values()) < 6e-3, m.parity  # the fp32 bound; tiny graphs land near 1e-6
    assert m.step_predictor.counts == COUNTS and m.scheduler["kind"] == "ddim"


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_runtime_loop_matches_torch_and_diffusers(tiny_diffusion, backend):
    """The numpy loop through the exported graphs == the torch UNet stepped by diffusers' DDIM."""
    import torch
    from diffusers import DDIMScheduler

    from dynexport.models.sentence import caption_embeddings
    from dynexport.models.unet import load_unet
    from dynexport.runtime import load
    pipe = load(tiny_diffusion["artifact"], backend)
    got = pipe.generate(["red apple", "grinning face with big eyes"], seed=3, steps=5, guidance_scale=2.0)
    unet, ucfg = load_unet(tiny_diffusion["unet"])
    emb = caption_embeddings(["red apple", "grinning face with big eyes"], str(tiny_diffusion["text"]))
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule=ucfg.beta_schedule, **DIFFUSERS_SETTINGS["ddim"])
    sched.set_timesteps(5)
    x = torch.from_numpy(np.stack([np.random.default_rng([3, i]).standard_normal((3, 16, 16)) for i in range(2)])
                         .astype(np.float32))
    ctx = torch.cat([emb[:, None], torch.zeros_like(emb[:, None])])
    with torch.no_grad():
        for t in sched.timesteps:
            out = unet(torch.cat([x, x]), t, ctx).sample
            eps = out[2:] + 2.0 * (out[:2] - out[2:])
            x = sched.step(eps, t, x).prev_sample
    want = np.clip((x.numpy().transpose(0, 2, 3, 1) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(got.images.astype(int) - want.astype(int)).max() <= 1
    assert got.stats.steps == [5, 5] and got.stats.unet_calls == 5


def test_auto_steps_come_from_the_predictor(tiny_diffusion):
    from dynexport.runtime import load
    from dynexport.runtime.policies import choose_steps
    pipe = load(tiny_diffusion["artifact"])
    prompts = ["red apple", "flag jp", "man judge: medium skin tone", "clock face two oclock"]
    r = pipe.generate(prompts, seed=0)
    assert all(s in COUNTS for s in r.stats.steps) and r.stats.predictor_s > 0
    probs = pipe.graphs["predictor"](embedding=pipe.embed(prompts))["probs"]
    assert r.stats.steps == choose_steps(probs, COUNTS, 0.5).tolist()
    assert pipe.generate(prompts, PredictedSteps(0.999)).stats.steps == [8] * 4  # all mass needed: the last count
    # the noise depends on (seed, prompt index) only: a prompt's image is the same alone or in a batch
    fixed = pipe.generate(prompts, seed=1, steps=4).images
    assert np.array_equal(pipe.generate(prompts[:1], seed=1, steps=4).images[0], fixed[0])
    assert not np.array_equal(pipe.generate(prompts[:1], seed=2, steps=4).images[0], fixed[0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompts=[""]), "empty"), (dict(prompts=[]), "empty"), (dict(prompts=[3]), "not str"),
    (dict(steps=0), "steps must be"), (dict(steps=1001), "steps must be"), (dict(steps="fast"), "steps must be"),
    (dict(steps=2.5), "steps must be"), (dict(scheduler="euler-magic"), "unknown scheduler"),
    (dict(steps=PredictedSteps), "steps must be"), (dict(margin=0.5), "unknown settings"),
    (dict(seed=-1), "seed must be"), (dict(guidance_scale=0.5), "guidance_scale")])
def test_bad_input(tiny_diffusion, kwargs, message):
    from dynexport.runtime import load
    pipe = load(tiny_diffusion["artifact"])
    kwargs = {"prompts": ["red apple"], **kwargs}
    with pytest.raises(InputError, match=message):
        pipe.generate(**kwargs)


def test_step_policies_validate():
    from dynexport.runtime import FixedSteps
    for make in (lambda: PredictedSteps(1.5), lambda: PredictedSteps(0.0), lambda: PredictedSteps(True)):
        with pytest.raises(InputError, match="margin must be"):
            make()
    with pytest.raises(InputError, match="steps must be"):
        FixedSteps(0)


def test_tampered_graph_and_missing_predictor(tiny_diffusion, tmp_path):
    import shutil

    from dynexport.errors import IntegrityError
    from dynexport.runtime import load
    art = tmp_path / "art"
    shutil.copytree(tiny_diffusion["artifact"], art)
    data = bytearray((art / "unet.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (art / "unet.bin").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="unet.bin"):
        load(art)
    bare = tmp_path / "bare"
    export_diffusion(bare, tiny_diffusion["unet"], None)
    with pytest.raises(InputError, match="no step predictor"):
        load(bare).generate(["red apple"])
    assert load(bare).generate(["red apple"], steps=3).stats.steps == [3]


def test_export_bad_input(tiny_diffusion, tmp_path):
    from dynexport import methods
    from dynexport.errors import AssetError, RecipeError
    stepsaver = methods.get("stepsaver")
    with pytest.raises(RecipeError, match="scheduler"):
        stepsaver.load_recipe(None, {"sampling.scheduler": "euler-magic"})
    with pytest.raises(RecipeError, match="weight_format"):
        stepsaver.load_recipe(None, {"quantization.weight_format": "int3"})
    with pytest.raises(AssetError, match="neither a directory nor one of the committed UNets"):
        export_diffusion(tmp_path / "a", tmp_path / "missing", None)
    assert not (tmp_path / "a").exists()


def test_cli_diffusion_and_imagine(tiny_diffusion, tmp_path):
    run = run_cli
    out, png = tmp_path / "art", tmp_path / "apple.png"
    p = run("diffusion", out, "--unet", tiny_diffusion["unet"], "--predictor", tiny_diffusion["pred"],
            "--step-control", "", "--weight-format", "fp32")
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stdout and "step predictor over [2, 4, 8]" in " ".join(p.stdout.split())
    p = run("imagine", out, "red apple", "--out", png, "--scale", "2")
    assert p.returncode == 0, p.stderr
    from PIL import Image
    assert Image.open(png).size == (32, 32)
    assert any(f"{c} steps, {c} UNet calls (PredictedSteps" in " ".join(p.stdout.split()) for c in COUNTS)
    p = run("imagine", out, "red apple", "--out", png, "--steps", "3")
    assert p.returncode == 0 and "3 steps, 3 UNet calls (FixedSteps(n=3))" in " ".join(p.stdout.split())
    p = run("imagine", out, "red apple", "--out", png, "--steps", "stop", "--tol", "1e6")
    assert p.returncode == 0 and "4 steps, 4 UNet calls (InLoopStop(tol=1000000.0" in " ".join(p.stdout.split())
    for bad, message in ((["--steps", "auto", "--tol", "0.1"], "--tol is for"), (["--steps", "stop"], "no calibrated tol"),
                         (["--steps", "stop", "--tol", "-1"], "tol must be"), (["--steps", "warp"], "--steps must be")):
        p = run("imagine", out, "red apple", "--out", png, *bad)
        assert p.returncode == 2 and message in p.stderr, (bad, p.stderr)
    p = run("imagine", out, "red apple", "--steps", "0")
    assert p.returncode == 2 and "error: steps must be" in p.stderr
    p = run("imagine", out, "", "--out", png)
    assert p.returncode == 2 and "error:" in p.stderr and "empty" in p.stderr
    p = run("imagine", out, "red apple", "--out", png, "--steps", "auto", "--margin", "0.999")
    assert p.returncode == 0 and "8 steps, 8 UNet calls" in p.stdout, p.stderr
    p = run("export", "stepsaver", "-m", tiny_diffusion["unet"], "--predictor", "", "--step-control", "",
            "--formats", "onnxruntime", tmp_path / "bare")
    assert p.returncode == 0 and "no step predictor" in p.stdout, p.stderr
    p = run("classify", out, "red apple")
    assert p.returncode == 2 and "`dynexport imagine`" in p.stderr


def test_int8_unet_ptq_and_weight_compression(tiny_diffusion, tmp_path):
    """--quant-mode int8: FakeQuantize / QuantizeLinear in the UNet graphs (calibrated on real noisy emoji),
    the text encoder keeps float weights; --weight-format int8 puts int8 constants in every graph."""
    from dynexport.runtime import load
    ptq = export_diffusion(tmp_path / "ptq", tiny_diffusion["unet"], tiny_diffusion["pred"],
                           quantization={"quant_mode": "int8"})
    assert ptq.unet.precision == {"openvino": "int8", "onnxruntime": "int8"}
    assert ov_op_counts(tmp_path / "ptq" / "unet.xml").get("FakeQuantize", 0) >= 8
    assert onnx_op_counts(tmp_path / "ptq" / "unet.onnx").get("QuantizeLinear", 0) >= 8
    assert ov_op_counts(tmp_path / "ptq" / "text_encoder.xml").get("FakeQuantize", 0) == 0
    w8 = export_diffusion(tmp_path / "w8", tiny_diffusion["unet"], None, quantization={"weight_format": "int8"})
    assert all(ov_low_precision_constants(tmp_path / "w8" / g.files["openvino"]) > 0 for g in w8.all_graphs())
    for art in ("ptq", "w8"):
        for backend in ("openvino", "onnxruntime"):
            img = load(tmp_path / art, backend).generate(["red apple"], steps=3).images
            assert img.shape == (1, 16, 16, 3) and img.std() > 0
    # stated bounds on one UNet call vs fp32, as a share of the fp32 noise variance (measured on the tiny
    # UNet: PTQ ≤ 1.9%, int8 weights 0.013%): PTQ 5%, int8 weights 0.1%. One CI machine measured 10.4%
    # for PTQ before the export turned on NNCF's overflow fix (7-bit weights, for CPUs whose int8 dot
    # products saturate without VNNI); the failure message names the CPU's int8 instructions
    from dynexport.runtime.graph import Graph
    rng = np.random.default_rng(0)
    ctx = rng.standard_normal((4, 1, 64)).astype(np.float32)
    feed = {"sample": rng.standard_normal((4, 3, 16, 16)).astype(np.float32),
            "context": ctx / np.linalg.norm(ctx, axis=-1, keepdims=True)}
    for t in (999.0, 500.0, 20.0):
        feed["timestep"] = np.full(4, t, np.float32)
        for backend, f in (("openvino", "unet.xml"), ("onnxruntime", "unet.onnx")):
            ref = Graph(tiny_diffusion["artifact"] / f, backend)(**feed)["noise"]
            for art, bound in (("ptq", 0.05), ("w8", 0.001)):
                err = float(((Graph(tmp_path / art / f, backend)(**feed)["noise"] - ref) ** 2).mean())
                assert err <= bound * ref.var(), (art, backend, t, err / ref.var(), cpu_int8_flags())


def test_predictor_must_fit_the_export_and_the_call(tiny_diffusion, tmp_path):
    """A predictor's labels hold for one UNet, scheduler, full count and guidance: others are refused."""
    from dynexport.manifest import StepPredictorInfo, sha256_file
    from dynexport.models.step_predictor import PredictorCfg, load_predictor, save_predictor
    from dynexport.runtime import load
    ddim8 = {"scheduler": "ddim", "full_steps": 8}
    model, _ = load_predictor(tiny_diffusion["pred"])
    sha = sha256_file(tiny_diffusion["unet"] / "unet.safetensors")
    made = {"scheduler": "ddim", "full_steps": 8, "guidance": 1.0, "unet_sha256": sha}
    for key, wrong in (("scheduler", "dpmsolver++"), ("unet_sha256", "0" * 64)):
        pred = tmp_path / f"pred-{key}"
        save_predictor(model, PredictorCfg(hidden=16), StepPredictorInfo(counts=COUNTS, margin=0.5,
                       training={**made, key: wrong}), pred)
        with pytest.raises(InputError, match=f"does not fit this export.*{key}"):
            export_diffusion(tmp_path / "a", tiny_diffusion["unet"], pred, sampling=ddim8)
        assert not (tmp_path / "a").exists()
    pred = tmp_path / "pred-ok"
    save_predictor(model, PredictorCfg(hidden=16), StepPredictorInfo(counts=COUNTS, margin=0.5, training=made), pred)
    export_diffusion(tmp_path / "a", tiny_diffusion["unet"], pred, sampling=ddim8)
    pipe = load(tmp_path / "a")
    assert pipe.generate(["red apple"]).stats.steps[0] in COUNTS
    with pytest.raises(InputError, match="predicts counts for scheduler 'ddim'"):
        pipe.generate(["red apple"], scheduler="dpmsolver++")
    with pytest.raises(InputError, match="predicts counts for guidance"):
        pipe.generate(["red apple"], guidance_scale=2.0)
    assert pipe.generate(["red apple"], steps=3, guidance_scale=2.0).stats.steps == [3]


def test_step_labels_and_margin_calibration():
    """The label rule (smallest count from which every larger count converged) and the margin
    calibration against a mean-SSIM target, on hand-made cases whose answers are known."""
    from dynexport.train.step_predictor import calibrate_margin, converged, label_of
    counts = [4, 8, 12]
    assert label_of(np.array([True, True, True]), counts, 50) == 4
    assert label_of(np.array([True, False, True]), counts, 50) == 12  # 4 converged by luck: not a label
    assert label_of(np.array([True, True, False]), counts, 50) == 50
    rec = {"ssim": [0.9, 0.96, 0.99], "agree": [True, False, True], "agree_family": [True, True, True]}
    assert converged(rec, 0.95, "none").tolist() == [False, True, True]
    assert converged(rec, 0.95, "caption").tolist() == [False, False, True]
    assert converged(rec, 0.95, "family").tolist() == [False, True, True]
    # two kinds of prompt: "easy" ones converge at 4, "hard" ones need 12; the predictor knows which
    classes = [4, 8, 12, 50]
    easy, hard = [0.97, 0.98, 0.99, 1.0], [0.5, 0.8, 0.97, 1.0]
    ssim_at = np.array([easy] * 6 + [hard] * 4)  # [10, 4]
    probs = np.array([[0.9, 0.05, 0.03, 0.02]] * 6 + [[0.02, 0.03, 0.9, 0.05]] * 4)
    cal = calibrate_margin(probs, ssim_at, classes, 0.96)
    assert cal["chosen"]["mean_steps"] == (6 * 4 + 4 * 12) / 10 and cal["chosen"]["mean_ssim"] >= 0.96
    assert cal["chosen"]["margin"] <= 0.9  # the smallest margin that meets the target
    assert cal["constant_same_target"] == {"steps": 12, "mean_ssim": pytest.approx((6 * 0.99 + 4 * 0.97) / 10)}


def test_train_time_budget_and_resume(tmp_path):
    """A wall-time budget stops training early and says where; a rerun resumes from the checkpoint."""
    import numpy as np
    import torch

    from dynexport.models.unet import UNetCfg
    from dynexport.train.diffusion import TrainCfg, _fit_budget, train
    assert _fit_budget(TrainCfg(steps=10_000, minutes=1.0), 0, 100, 10.0).steps == 100 + 500  # 0.1 s/step, 50 s left
    assert _fit_budget(TrainCfg(steps=300, minutes=1.0), 0, 100, 10.0).steps == 300  # never past the steps asked
    assert _fit_budget(TrainCfg(steps=10_000, minutes=1.0), 0, 100, 70.0).steps == 101  # over budget: stop now
    ucfg = UNetCfg(size=8, channels=(8, 16), attention_head_dim=4, norm_num_groups=4, context_dim=16)
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    emb = torch.randn(6, 16)
    cfg = TrainCfg(steps=100_000, batch=2, minutes=0.02, probe=3, warmup=2, ckpt_every=1000)
    _, ran = train(images, emb, ucfg, cfg, tmp_path, log=lambda m: None)
    assert 3 < ran.steps < 100_000 and ran.planned == 100_000
    assert torch.load(tmp_path / "unet_ckpt.pt", weights_only=True)["step"] == ran.steps
    logs = []
    _, more = train(images, emb, ucfg, TrainCfg(steps=ran.steps + 2, batch=2, warmup=2), tmp_path, log=logs.append)
    assert logs[0] == f"resumed at step {ran.steps}" and more.steps == ran.steps + 2


def test_train_fine_tune_starts_from_the_given_weights(tmp_path):
    """`init` seeds the weights and their EMA when no checkpoint exists; a checkpoint wins over it."""
    import torch

    from dynexport.models.unet import UNetCfg, build_unet
    from dynexport.train.diffusion import TrainCfg, train
    ucfg = UNetCfg(size=8, channels=(8, 16), attention_head_dim=4, norm_num_groups=4, context_dim=16)
    torch.manual_seed(1)
    init = build_unet(ucfg).state_dict()
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    cfg = TrainCfg(steps=1, batch=2, warmup=1, lr=1e-12, ema_decay=0.0)
    ema, _ = train(images, torch.randn(6, 16), ucfg, cfg, tmp_path / "a", log=lambda m: None, init=init)
    assert all(torch.allclose(ema.state_dict()[k], v, atol=1e-6) for k, v in init.items())
    fresh, _ = train(images, torch.randn(6, 16), ucfg, cfg, tmp_path / "b", log=lambda m: None)
    assert not all(torch.allclose(fresh.state_dict()[k], v) for k, v in init.items())
    torch.manual_seed(2)
    other = build_unet(ucfg).state_dict()
    resumed, _ = train(images, torch.randn(6, 16), ucfg, replace(cfg, steps=2), tmp_path / "a", log=lambda m: None,
                       init=other)
    assert all(torch.allclose(resumed.state_dict()[k], v, atol=1e-6) for k, v in init.items())


def test_twemoji_images_get_the_openmoji_captions():
    """The Twemoji asset: captioned files only, on white, at the asked size, same caption for the same code."""
    from dynexport.emoji_data import caption, load_emoji, load_twemoji
    tw = load_twemoji(16)
    assert len(tw) > 3000 and all(v.shape == (16, 16, 3) and v.dtype == np.uint8 for v in tw.values())
    assert all(caption(code) is not None for code in tw)
    apple = tw["1F34E"]
    assert apple[0, 0].min() > 240 and apple[8, 8, 0] > 150 > apple[8, 8, 1]  # white corner, red middle
    codes = set(load_emoji(32).codes)
    assert len(codes & set(tw)) > 3000


def test_group_share_finds_a_real_group_effect_only():
    """The noise-share statistic of scripts/analyze_step_labels.py: ~0 for labels, ~true share for effects."""
    import numpy as np

    from dynexport.metrics import group_share
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(100), 10)  # 100 noises, 10 prompts each
    effect = rng.standard_normal(100)[groups]  # variance 1
    y = effect + rng.standard_normal(1000)  # half the variance is the group's
    real = group_share(y, groups, shuffles=300)
    assert real["p"] < 0.01 and 0.35 < real["share"] < 0.65
    none = group_share(rng.standard_normal(1000), groups, shuffles=300)
    assert none["p"] > 0.01 and abs(none["share"]) < 0.1


def test_caption_scores_rank_the_right_caption():
    """Images scored against their own embeddings rank first; shuffled captions fall to chance."""
    import torch

    from dynexport.train.scorer import ImageEncoder, caption_scores, embed_images
    torch.manual_seed(0)
    model = ImageEncoder().eval()
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    text = embed_images(model, images)  # [40, D]: caption i is image i's own embedding
    fam_of, fams = np.arange(40) // 4, np.arange(40) // 4
    right = caption_scores(model, images, text, np.arange(40), fam_of, fams)
    assert right["accuracy"] == 1.0 and right["family_accuracy"] == 1.0 and right["caption_rank_pct"] > 0.97
    wrong = caption_scores(model, images, text, np.roll(np.arange(40), 7), fam_of, fams)
    assert wrong["accuracy"] == 0.0 and wrong["caption_rank_pct"] < right["caption_rank_pct"]
