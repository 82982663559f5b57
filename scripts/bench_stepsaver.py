"""StepSaver benchmark → benchmarks/stepsaver.json + benchmarks/stepsaver.png (sample grid).

    python scripts/bench_stepsaver.py [--prompts 0] [--artifact exported_models/stepsaver]

On the held-out (test-split) OpenMoji captions, each prompt drawn alone (batch 1, seed 2000 + i),
configurations interleaved prompt by prompt, all through the dynexport runtime (OpenVINO):
- full: the full schedule (manifest full_steps);
- stepsaver: steps="auto" (the predictor, the manifest's margin);
- fixed-same-mean: one global count equal to StepSaver's mean (rounded), the honest baseline;
- stepsaver-int8: the same predictor with an INT8 (NNCF PTQ) UNet artifact.
Quality: SSIM to the full-step fp32 image of the same prompt and seed; scorer accuracy (the caption-
match scorer names the prompt's caption among all captions, and its skin-tone-free family); and, as
the scorer's graded verdict, the prompt caption's rank percentile among all captions (0.5 = chance,
1 = top) and its cosine match score.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dynexport import paths
from dynexport.bench.env import environment, write_json
from dynexport.emoji_data import load_emoji
from dynexport.metrics import ssim

ROOT = Path(__file__).resolve().parents[1]


def ensure(out: Path, weight_format: str, quant_mode: str) -> Path:
    """The artifact from the recipe's models, re-exported when the UNet or predictor changed."""
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
    m = out / "manifest.json"
    if not m.is_file() or any(json.loads(m.read_text())["source"][k] != v for k, v in shas.items()):
        methods.export("stepsaver", r, out, overwrite=True)
    return out


def run_configs(pipes: dict, prompts: list[str], configs: list[tuple]) -> dict:
    """Every prompt alone through every config (rotated order); images, steps and wall time per config."""
    res = {name: {"images": [], "steps": [], "wall_s": [], "unet_s": [], "predictor_s": []} for name, *_ in configs}
    for i, p in enumerate(prompts):
        order = configs[i % len(configs):] + configs[: i % len(configs)]
        for name, pipe_key, steps in order:
            t0 = time.perf_counter()
            r = pipes[pipe_key].generate([p], seed=2000 + i, steps=steps)
            wall = time.perf_counter() - t0
            d = res[name]
            d["images"].append(r.images[0]), d["steps"].append(r.stats.steps[0]), d["wall_s"].append(wall)
            d["unet_s"].append(r.stats.unet_s), d["predictor_s"].append(r.stats.predictor_s)
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{len(prompts)} prompts", flush=True)
    return res


def quality(res: dict, ref: np.ndarray, scorer, text: np.ndarray, caption_idx: np.ndarray, fam_of: np.ndarray,
            families: np.ndarray) -> dict:
    from dynexport.train.scorer import caption_scores
    out = {}
    for name, d in res.items():
        imgs = np.stack(d["images"])
        sim = ssim(imgs, ref)
        out[name] = {"mean_steps": float(np.mean(d["steps"])), "wall_s_total": float(np.sum(d["wall_s"])),
                     "wall_ms_median": 1e3 * float(np.median(d["wall_s"])),
                     "unet_s_total": float(np.sum(d["unet_s"])),
                     "predictor_ms_mean": 1e3 * float(np.mean(d["predictor_s"])),
                     "ssim_mean": float(sim.mean()), "ssim_min": float(sim.min()),
                     **caption_scores(scorer, imgs, text, caption_idx, fam_of, families),
                     "steps_histogram": {str(k): int(v) for k, v in zip(*np.unique(d["steps"], return_counts=True))}}
    return out


def plot(res: dict, prompts: list[str], path: Path, rows: int = 12) -> None:
    """Grid: one row per prompt, columns = configurations (labelled with their step counts)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(res)
    pick = np.linspace(0, len(prompts) - 1, min(rows, len(prompts))).astype(int)
    fig, axes = plt.subplots(len(pick), len(names), figsize=(1.9 * len(names), 1.5 * len(pick)), squeeze=False)
    for r, i in enumerate(pick):
        for c, name in enumerate(names):
            ax = axes[r][c]
            ax.imshow(res[name]["images"][i], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{name}: {res[name]['steps'][i]}", fontsize=7)
            if c == 0:
                ax.set_ylabel(prompts[i][:22], fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize(q: dict, full_steps: int) -> dict:
    s, f, fm = q["stepsaver"], q["full"], q["fixed-same-mean"]
    out = {"step_reduction": full_steps / s["mean_steps"], "wall_speedup": f["wall_s_total"] / s["wall_s_total"],
           "ssim_mean": s["ssim_mean"], "accuracy_drop_pt": 100 * (f["accuracy"] - s["accuracy"]),
           "family_accuracy_drop_pt": 100 * (f["family_accuracy"] - s["family_accuracy"]),
           "vs_fixed_same_mean_accuracy_gain_pt": 100 * (s["accuracy"] - fm["accuracy"]),
           "vs_fixed_same_mean_ssim_gain": s["ssim_mean"] - fm["ssim_mean"],
           "full_accuracy": f["accuracy"],
           "caption_rank_pct_drop_pt": 100 * (f["caption_rank_pct"] - s["caption_rank_pct"]),
           "vs_fixed_same_mean_rank_pct_gain_pt": 100 * (s["caption_rank_pct"] - fm["caption_rank_pct"]),
           "fixed_same_mean_steps": fm["mean_steps"],
           "targets": {"step_reduction": 3.0, "wall_speedup": 2.5, "ssim_mean": 0.95, "accuracy_drop_pt": 1.0}}
    if "stepsaver-int8" in q:
        i8 = q["stepsaver-int8"]
        out["int8"] = {"wall_speedup": f["wall_s_total"] / i8["wall_s_total"], "ssim_mean": i8["ssim_mean"],
                       "accuracy_drop_pt": 100 * (f["accuracy"] - i8["accuracy"]), "mean_steps": i8["mean_steps"]}
    return out


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
    predicted = pipes["fp32"].predict_steps(pipes["fp32"].embed(prompts))
    same_mean = int(round(float(predicted.mean())))
    configs = [("full", "fp32", m.full_steps), ("stepsaver", "fp32", "auto"), ("fixed-same-mean", "fp32", same_mean)]
    configs += [("stepsaver-int8", "int8", "auto")] if "int8" in pipes else []
    for _name, key, steps in configs:  # warm-up
        pipes[key].generate([prompts[0]], seed=0, steps=steps)
    print(f"{len(prompts)} held-out prompts; StepSaver mean {predicted.mean():.2f} steps -> fixed baseline {same_mean}",
          flush=True)
    res = run_configs(pipes, prompts, configs)
    unique = sorted(set(data.captions))
    text = caption_embeddings(unique).numpy()
    fam_of = np.array([c.split(":")[0] for c in unique])
    caption_idx = np.array([unique.index(c) for c in prompts])
    q = quality(res, np.stack(res["full"]["images"]), load_scorer(args.scorer), text, caption_idx, fam_of,
                np.array([data.families[i] for i in test]))
    payload = {"env": environment(ROOT), "args": {k: str(v) for k, v in vars(args).items()},
               "manifest": {"scheduler": m.scheduler, "full_steps": m.full_steps, "guidance_scale": m.guidance_scale,
                            "margin": m.step_predictor.margin, "counts": m.step_predictor.counts},
               "prompts": len(prompts), "split": "test (caption families held out from predictor training)",
               "results": q, "summary": summarize(q, m.full_steps)}
    write_json(args.out, payload)
    plot(res, prompts, args.out.with_suffix(".png"))
    print(json.dumps(payload["summary"], indent=1))


if __name__ == "__main__":
    main()
