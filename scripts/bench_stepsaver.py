"""StepSaver benchmark → benchmarks/stepsaver.json + benchmarks/stepsaver.png (sample grid).

    python scripts/bench_stepsaver.py [--prompts 0] [--no-int8]

On the held-out (test-split) OpenMoji captions, each prompt drawn alone (batch 1, seed 2000 + i),
configurations interleaved prompt by prompt (rotated order), all through the dynexport runtime (OpenVINO):
- full: the full schedule (manifest full_steps);
- predicted: steps="auto" (the up-front step predictor at the manifest's margin);
- stop-jump / stop-respace: InLoopStop at the calibrated tolerance, finishing by a jump to t → 0 or by
  re-spacing the rest; skip: AdaptiveSkip; combined: CombinedSteps (all calibrated on val);
- predicted-int8: the predictor with an INT8 (NNCF PTQ) UNet artifact;
- then, in a second interleaved pass, fixed-same-mean:<policy>: for each policy, a mix of the two fixed
  counts around its mean UNet calls on these prompts (the first round(f·n) prompts of a seeded
  permutation get the higher one) so the means match to 1/n. Its wall time is from the second pass
  and is not compared with the first pass's; and twin:<policy>, the policy's non-adaptive twin with
  the same mean calls (every sample stopped at the same call / a fixed noise-reuse pattern), which
  separates what the schedule's shape gives from what the in-loop decision adds.
Quality: SSIM to the full-step fp32 image of the same prompt and seed (mean, 5th percentile, min); the
caption-match scorer's accuracy and the prompt caption's rank percentile among all captions (0.5 =
chance). Each policy's SSIM gain over its fixed-same-mean comes with a paired bootstrap 95% CI. The
summary's headline is steps="adaptive" (the policy the val calibration chose), not a pick on test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dynexport import paths
from dynexport.bench.env import environment, write_json
from dynexport.emoji_data import load_emoji
from dynexport.metrics import ssim

ROOT = Path(__file__).resolve().parents[1]
MIX_MAX_CALLS = 25  # a policy above this is far from the 3x target; its fixed mix is not run (time)


def ensure(out: Path, weight_format: str, quant_mode: str) -> Path:
    """The artifact from the recipe's models, re-exported when the UNet, predictor or calibration changed."""
    from dynexport import methods
    from dynexport.manifest import sha256_file
    r = methods.get("stepsaver").load_recipe(None, {"quantization.weight_format": weight_format,
                                                    "quantization.quant_mode": quant_mode})
    if not r.models.predictor:
        raise SystemExit("the StepSaver recipe (dynexport/recipes/stepsaver.toml) names no step predictor; "
                         "train one with scripts/train_step_predictor.py")
    unet = paths.resolve_weights(r.models.unet, "stepsaver", "UNet")
    pred = paths.resolve_weights(r.models.predictor, "stepsaver", "step predictor")
    shas = {"unet_sha256": sha256_file(unet / "unet.safetensors"),
            "predictor_sha256": sha256_file(pred / "predictor.safetensors")}
    ctl = paths.resolve_weights(r.models.step_control, "stepsaver", "step-control calibration") / "step_control.json"
    m = out / "manifest.json"
    if (not m.is_file() or any(json.loads(m.read_text())["source"][k] != v for k, v in shas.items())
            or json.loads(m.read_text()).get("step_control") != json.loads(ctl.read_text())):
        methods.export("stepsaver", r, out, overwrite=True)
    return out


def run_configs(pipes: dict, prompts: list[str], configs: list[tuple]) -> dict:
    """Every prompt alone through every config (rotated order): images, steps, calls, wall and check time.
    configs: (name, pipe key, steps) where steps is a step policy or a per-prompt list of them."""
    keys = ("images", "steps", "calls", "wall_s", "unet_s", "predictor_s", "check_s")
    res = {name: {k: [] for k in keys} for name, *_ in configs}
    for i, p in enumerate(tqdm(prompts, desc="prompts x configs", unit="prompt")):
        order = configs[i % len(configs):] + configs[: i % len(configs)]
        for name, pipe_key, steps in order:
            t0 = time.perf_counter()
            r = pipes[pipe_key].generate([p], seed=2000 + i, steps=steps[i] if isinstance(steps, list) else steps)
            wall = time.perf_counter() - t0
            d, st = res[name], r.stats
            for k, v in (("images", r.images[0]), ("steps", st.steps[0]), ("calls", st.calls[0]), ("wall_s", wall),
                         ("unet_s", st.unet_s), ("predictor_s", st.predictor_s), ("check_s", st.check_s)):
                d[k].append(v)
    return res


def same_mean_counts(calls: np.ndarray, seed: int = 0) -> list[int]:
    """Per-prompt fixed counts, the two integers around calls.mean(), mixed so their mean matches it."""
    mean, n = float(np.mean(calls)), len(calls)
    lo = int(np.floor(mean))
    k = int(round((mean - lo) * n))
    high = np.zeros(n, bool)
    high[np.random.default_rng(seed).permutation(n)[:k]] = True
    return [lo + int(h) for h in high]


def quality(res: dict, ref: np.ndarray, scorer, text: np.ndarray, caption_idx: np.ndarray, fam_of: np.ndarray,
            families: np.ndarray) -> dict:
    from dynexport.train.scorer import caption_scores
    out = {}
    for name, d in res.items():
        imgs = np.stack(d["images"])
        sim = ssim(imgs, ref)
        out[name] = {"mean_steps": float(np.mean(d["steps"])), "unet_calls_mean": float(np.mean(d["calls"])),
                     "wall_s_total": float(np.sum(d["wall_s"])), "wall_ms_median": 1e3 * float(np.median(d["wall_s"])),
                     "unet_s_total": float(np.sum(d["unet_s"])),
                     "predictor_ms_mean": 1e3 * float(np.mean(d["predictor_s"])),
                     "check_ms_mean": 1e3 * float(np.mean(d["check_s"])),
                     "ssim_mean": float(sim.mean()), "ssim_p5": float(np.percentile(sim, 5)), "ssim_min": float(sim.min()),
                     **caption_scores(scorer, imgs, text, caption_idx, fam_of, families),
                     "calls_histogram": {str(k): int(v) for k, v in zip(*np.unique(d["calls"], return_counts=True))},
                     "ssim_per_prompt": [round(float(v), 5) for v in sim]}
    return out


def plot(res: dict, q: dict, prompts: list[str], path: Path, names: list[str], rows: int = 12) -> None:
    """path: mean SSIM against mean UNet calls per configuration (each policy beside its same-mean fixed
    mix); path's _grid sibling: one row per prompt, columns = `names` (titles: UNet calls)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        p = q[name]
        ax.scatter(p["unet_calls_mean"], p["ssim_mean"], s=30, zorder=3)
        ax.annotate(name, (p["unet_calls_mean"], p["ssim_mean"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        if f"fixed-same-mean:{name}" in q:
            f = q[f"fixed-same-mean:{name}"]
            ax.plot([p["unet_calls_mean"]] * 2, [f["ssim_mean"], p["ssim_mean"]], "k:", lw=0.8)
            ax.scatter(f["unet_calls_mean"], f["ssim_mean"], marker="x", c="k", s=20, zorder=3)
    ax.axhline(0.95, c="grey", lw=0.6, ls="--")
    ax.axvline(50 / 3, c="grey", lw=0.6, ls="--")
    ax.set_xlabel("mean UNet calls per image (x: the fixed mix with the same mean)")
    ax.set_ylabel("mean SSIM to the 50-step image")
    ax.set_title(f"StepSaver step policies, {len(prompts)} held-out prompts (dashed: targets)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    pick = np.linspace(0, len(prompts) - 1, min(rows, len(prompts))).astype(int)
    fig, axes = plt.subplots(len(pick), len(names), figsize=(1.9 * len(names), 1.5 * len(pick)), squeeze=False)
    for r, i in enumerate(pick):
        for c, name in enumerate(names):
            ax = axes[r][c]
            ax.imshow(res[name]["images"][i], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{name}: {res[name]['calls'][i]}", fontsize=7)
            if c == 0:
                ax.set_ylabel(prompts[i][:22], fontsize=6)
    fig.tight_layout()
    fig.savefig(path.with_name(path.stem + "_grid.png"), dpi=110)
    plt.close(fig)


def compare(q: dict, name: str, full_steps: int) -> dict:
    """One configuration against full and against its fixed-same-mean mix."""
    from dynexport.bench.stats import paired_bootstrap
    c, f = q[name], q["full"]
    fm = q.get(f"fixed-same-mean:{name}")
    base = {"unet_calls_mean": c["unet_calls_mean"], "step_reduction": full_steps / c["unet_calls_mean"],
            "wall_speedup": f["wall_s_total"] / c["wall_s_total"], "ssim_mean": c["ssim_mean"], "ssim_p5": c["ssim_p5"],
            "accuracy_drop_pt": 100 * (f["accuracy"] - c["accuracy"]),
            "family_accuracy_drop_pt": 100 * (f["family_accuracy"] - c["family_accuracy"]),
            "caption_rank_pct_drop_pt": 100 * (f["caption_rank_pct"] - c["caption_rank_pct"]),
            "check_ms_mean": c["check_ms_mean"]}
    if fm is None:
        return base
    gain = paired_bootstrap(c["ssim_per_prompt"], fm["ssim_per_prompt"])
    return {**base, "vs_fixed_same_mean_ssim_gain": c["ssim_mean"] - fm["ssim_mean"],
            "vs_fixed_same_mean_ssim_gain_ci": [v / 100 for v in gain["ci95_pt"]],
            "vs_fixed_same_mean_accuracy_gain_pt": 100 * (c["accuracy"] - fm["accuracy"]),
            "vs_fixed_same_mean_rank_pct_gain_pt": 100 * (c["caption_rank_pct"] - fm["caption_rank_pct"]),
            "fixed_same_mean_steps": fm["unet_calls_mean"], "fixed_same_mean_ssim": fm["ssim_mean"],
            **_vs_twin(q, name)}


def _vs_twin(q: dict, name: str) -> dict:
    """The policy against its non-adaptive twin (same mean calls): what the in-loop decision itself adds."""
    from dynexport.bench.stats import paired_bootstrap
    if f"twin:{name}" not in q:
        return {}
    c, tw = q[name], q[f"twin:{name}"]
    gain = paired_bootstrap(c["ssim_per_prompt"], tw["ssim_per_prompt"])
    return {"twin_calls_mean": tw["unet_calls_mean"], "twin_ssim": tw["ssim_mean"],
            "vs_twin_ssim_gain": c["ssim_mean"] - tw["ssim_mean"],
            "vs_twin_ssim_gain_ci": [v / 100 for v in gain["ci95_pt"]]}


def summarize(q: dict, full_steps: int, default: str, policies: list[str]) -> dict:
    """The headline is steps="adaptive" (`default`, chosen on val); every policy's figures beside it."""
    per = {name: compare(q, name, full_steps) for name in policies}
    out = {"policy": default, **per[default], "full_accuracy": q["full"]["accuracy"], "policies": per,
           "targets": {"step_reduction": 3.0, "wall_speedup": 2.5, "ssim_mean": 0.95,
                       "vs_fixed_same_mean_ssim_gain": "> 0 with a paired 95% CI excluding 0"}}
    if "predicted-int8" in q:
        f, i8 = q["full"], q["predicted-int8"]
        out["int8"] = {"wall_speedup": f["wall_s_total"] / i8["wall_s_total"], "ssim_mean": i8["ssim_mean"],
                       "accuracy_drop_pt": 100 * (f["accuracy"] - i8["accuracy"]), "mean_steps": i8["mean_steps"]}
    return out


def twin(policy, calls: np.ndarray) -> list | None:
    """The policy's non-adaptive twin with the same mean UNet calls, per prompt: InLoopStop stopping every
    sample at the same call (a mix of two), AdaptiveSkip skipping every skippable step (a fixed reuse
    pattern: `warmup` calls, then one call per max_skips + 1 steps, on a schedule long enough for the
    count). It tells the schedule's shape apart from the in-loop decision."""
    from dynexport.runtime import AdaptiveSkip, FixedSteps, InLoopStop
    if isinstance(policy, InLoopStop):
        extra = policy.respace_steps - 1 if policy.finish == "respace" else 0
        return [InLoopStop(tol=1e9, steps=policy.steps, finish=policy.finish, respace_steps=policy.respace_steps,
                           min_calls=max(1, k - extra)) for k in same_mean_counts(calls)]
    if isinstance(policy, AdaptiveSkip):
        w, per = policy.warmup, policy.max_skips + 1
        return [AdaptiveSkip(threshold=1e9, steps=w + per * (k - w), max_skips=policy.max_skips, warmup=w)
                if k > w else FixedSteps(k) for k in same_mean_counts(calls)]
    return None


def policies_of(m) -> dict:
    """The measured in-loop policies at their calibrated values: InLoopStop with the finish the val
    calibration chose (the other one's val figures are in the calibration), AdaptiveSkip, and
    CombinedSteps — at its calibrated tol, or, where no tol reached the target on val, at the cheapest
    point within 0.001 of its best val SSIM."""
    from dynexport.runtime import AdaptiveSkip, CombinedSteps, InLoopStop
    if m.step_control is None:
        raise SystemExit("the artifact has no step-control calibration: run scripts/calibrate_step_control.py")
    comb = m.step_control.combined.get("tol")
    if comb is None:
        curve = m.step_control.calibration["searches"]["combined"]["curve"]
        top = max(p["ssim"] for p in curve)
        comb = min((p for p in curve if p["ssim"] >= top - 1e-3), key=lambda p: p["calls"])["value"]
    from dynexport.runtime.stepcontrol import fill
    pols = {f"stop-{m.step_control.stop['finish']}": InLoopStop(), "skip": AdaptiveSkip(),
            "combined": CombinedSteps(tol=comb, margin=m.step_predictor.margin)}
    return {k: fill(v, m.step_control.model_dump(), m.full_steps) for k, v in pols.items()}  # every field set


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=0, help="0 = every test-split caption")
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--scorer", type=Path, default=paths.committed("stepsaver") / "openmoji-scorer")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "stepsaver.json")
    args = ap.parse_args()
    from dynexport.models.sentence import caption_embeddings
    from dynexport.runtime import load
    from dynexport.train.scorer import load_scorer
    data = load_emoji(32)
    test = data.split("test")[: args.prompts or None]
    prompts = [data.captions[i] for i in test]
    pipes = {"fp32": load(ensure(ROOT / "exported_models" / "stepsaver", "fp32", "none"))}
    if not args.no_int8:
        pipes["int8"] = load(ensure(ROOT / "exported_models" / "stepsaver-int8", "fp32", "int8"))
    m = pipes["fp32"].manifest
    pols = {"predicted": "auto", **policies_of(m)}
    default = {"stop": f"stop-{m.step_control.stop.get('finish')}", "skip": "skip",
               "combined": "combined"}[m.step_control.default]
    configs = [("full", "fp32", m.full_steps), *((name, "fp32", pol) for name, pol in pols.items())]
    configs += [("predicted-int8", "int8", "auto")] if "int8" in pipes else []
    for _name, key, steps in configs:  # warm-up
        pipes[key].generate([prompts[0]], seed=0, steps=steps)
    res = run_configs(pipes, prompts, configs)  # phase 1: the timed comparison
    mixes = [(f"fixed-same-mean:{name}", "fp32", same_mean_counts(np.array(res[name]["calls"]))) for name in pols
             if np.mean(res[name]["calls"]) <= MIX_MAX_CALLS]
    twins = {name: twin(pol, np.array(res[name]["calls"])) for name, pol in pols.items()}
    mixes += [(f"twin:{name}", "fp32", t) for name, t in twins.items() if t is not None]
    res |= run_configs(pipes, prompts, mixes)  # phase 2: same-mean fixed mixes and twins (quality; timed apart)
    unique = sorted(set(data.captions))
    text = caption_embeddings(unique).numpy()
    fam_of = np.array([c.split(":")[0] for c in unique])
    caption_idx = np.array([unique.index(c) for c in prompts])
    q = quality(res, np.stack(res["full"]["images"]), load_scorer(args.scorer), text, caption_idx, fam_of,
                np.array([data.families[i] for i in test]))
    payload = {"env": environment(ROOT), "args": {k: str(v) for k, v in vars(args).items()},
               "manifest": {"scheduler": m.scheduler, "full_steps": m.full_steps, "guidance_scale": m.guidance_scale,
                            "margin": m.step_predictor.margin, "counts": m.step_predictor.counts,
                            "step_control": m.step_control.model_dump(exclude={"calibration"}),
                            "policies": {k: repr(v) for k, v in pols.items()}},
               "prompts": len(prompts), "split": "test (caption families held out from predictor training)",
               "results": q, "summary": summarize(q, m.full_steps, default, list(pols))}
    write_json(args.out, payload)
    plot(res, q, prompts, args.out.with_suffix(".png"), [c[0] for c in configs])
    print(json.dumps({k: v for k, v in payload["summary"].items() if k != "policies"}, indent=1))


if __name__ == "__main__":
    main()
