"""What decides how many steps an image needs: the prompt, the starting noise, or neither alone?
→ benchmarks/stepsaver_label_variance.json

    python scripts/analyze_step_labels.py [--labels benchmarks/stepsaver_labels.json] [--chunk 128]

Reads the step labels and runs the labels' UNet once per record (its first call only; no image is drawn).
For the log label and the SSIM at each count:
- prompt: ridge regression from the prompt's MiniLM embedding, fit on the train split, R² on val;
- noise: the runtime draws row r of a batch from rng([seed, r]), and the label script draws its prompts
  in chunks of --chunk, so prompts at the same position of their chunks share one starting noise.
  The share of variance between those groups (R² of the group means) is compared with its
  permutation null (2,000 shuffles); `share` is the excess over the null, rescaled to [0, 1].
Records carry their noise row where the label script wrote it (`noise_row`); older label files
have it re-derived from the chunking.

`first_call`: can a predictor that also sees the (prompt, noise) pair beat one global count? Every
step count's schedule starts at the same timestep, so the UNet's first call is shared by all counts
and free to a predictor. Features: the first call's x₀ direction (x − ε̂, 8×8 average-pooled) and
7 summary statistics, with or without the prompt embedding. Per-count SSIM is ridge-regressed;
a policy runs the smallest count whose predicted SSIM ≥ τ. Folds hold out val-split prompts *and*
a quarter of the noise rows (train never saw the test noise), predictions are cross-fitted over the
4 folds, and the τ sweep is compared with the fixed-count frontier (linearly interpolated between
candidate counts: a random mix of two fixed counts reaches it) at the same mean SSIM.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dynexport import paths
from dynexport.bench.env import environment, write_json
from dynexport.metrics import group_share

ROOT = Path(__file__).resolve().parents[1]
FOLDS = 4


def noise_rows(records: list[dict], chunk: int) -> np.ndarray:
    if all("noise_row" in r for r in records):
        return np.array([r["noise_row"] for r in records])
    order = {row: i % chunk for i, row in enumerate(sorted(r["row"] for r in records))}
    return np.array([order[r["row"]] for r in records])


def ridge_predict(x: np.ndarray, y: np.ndarray, train: np.ndarray, lam: float) -> np.ndarray:
    """Standardised ridge fit on rows `train`, prediction for every row. x [N, D], y [N] or [N, K]."""
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    xs, ym = (x - mu) / sd, y[train].mean(0)
    a = xs[train]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y[train] - ym))
    return xs @ w + ym


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def first_call_features(unet_dir: Path, records: list[dict], noise: np.ndarray, emb: np.ndarray,
                        t_first: int) -> np.ndarray:
    """The UNet's first call on each record's starting noise → [N, 199] features of x − ε̂."""
    import torch

    from dynexport.models.unet import load_unet
    unet, ucfg = load_unet(unet_dir)
    s = ucfg.size
    x = np.stack([np.random.default_rng([r["seed"], int(j)]).standard_normal((3, s, s))
                  for r, j in zip(records, noise)])
    x = torch.from_numpy(x.astype(np.float32))  # [N, 3, S, S], as the runtime draws it
    with torch.no_grad():
        eps = torch.cat([unet(x[i:i + 128], t_first, torch.from_numpy(emb[i:i + 128, None])).sample
                         for i in range(0, len(x), 128)])
    u = (x - eps).numpy()  # [N, 3, S, S] ∝ the predicted x₀ (σ ≈ 1 at the first timestep)
    pool = lambda a, k: a.reshape(len(a), 3, s // k, k, s // k, k).mean((3, 5)).reshape(len(a), -1)
    stats = [u.std((1, 2, 3)), np.abs(u).mean((1, 2, 3)), u.mean((1, 2, 3)), np.abs(np.diff(u, axis=2)).mean((1, 2, 3)),
             np.abs(np.diff(u, axis=3)).mean((1, 2, 3)), pool(u, s // 8).std(1), pool(u, s // 4).std(1)]
    return np.concatenate([pool(u, s // 8), np.stack(stats, 1)], 1)


def fixed_steps_for(ssim_mean: np.ndarray, counts: np.ndarray, target: float) -> float:
    """Mean step count a mix of two neighbouring fixed counts needs to reach mean SSIM `target`."""
    i = int(np.argmax(ssim_mean >= target))
    if i == 0:
        return float(counts[0])
    s0, s1 = ssim_mean[i - 1], ssim_mean[i]
    return float(counts[i - 1] + (target - s0) / (s1 - s0) * (counts[i] - counts[i - 1]))


def policy_frontier(features: np.ndarray, ssim_at: np.ndarray, counts: np.ndarray, val: np.ndarray,
                    noise: np.ndarray, lam: float) -> np.ndarray:
    """Cross-fitted per-count SSIM prediction → [(mean steps, mean SSIM)] of the τ policy on val rows.
    ssim_at [N, C] with the full count last (SSIM 1)."""
    pred = np.ones_like(ssim_at)
    for fold in range(FOLDS):
        hold = noise % FOLDS == fold
        test = val & hold
        pred[test, :-1] = ridge_predict(features, ssim_at[:, :-1], ~val & ~hold, lam)[test]
    rows = []
    for tau in np.arange(0.8, 1.0001, 0.0025):
        ok = pred[val] >= tau
        ok[:, -1] = True
        idx = ok.argmax(1)  # the smallest count predicted to converge
        rows.append((float(counts[idx].mean()), float(ssim_at[val][np.arange(len(idx)), idx].mean())))
    return np.array(rows)


def first_call_study(feats: dict[str, np.ndarray], ssim_at: np.ndarray, counts: np.ndarray, val: np.ndarray,
                     noise: np.ndarray, targets=(0.94, 0.95, 0.96, 0.97)) -> dict:
    fixed_mean = ssim_at[val].mean(0)
    out = {"fixed": {str(t): fixed_steps_for(fixed_mean, counts, t) for t in targets}}
    for name, f in feats.items():
        best = None
        for lam in (300.0, 1000.0, 3000.0, 10000.0):
            fr = policy_frontier(f, ssim_at, counts, val, noise, lam)
            need = {str(t): float(fr[fr[:, 1] >= t, 0].min()) for t in targets}
            if best is None or need["0.95"] < best["steps_for_mean_ssim"]["0.95"]:
                best = {"lambda": lam, "steps_for_mean_ssim": need}
        best["vs_fixed_step_ratio"] = {t: out["fixed"][t] / best["steps_for_mean_ssim"][t] for t in out["fixed"]}
        out[name] = best
        print(f"first_call {name:14s}", "  ".join(f"SSIM {t}: {best['steps_for_mean_ssim'][t]:5.1f} steps "
                                                   f"(fixed {out['fixed'][t]:5.1f})" for t in out["fixed"]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=Path, default=ROOT / "benchmarks" / "stepsaver_labels.json")
    ap.add_argument("--unet", type=Path, default=paths.committed("stepsaver") / "openmoji-unet32",
                    help="the UNet the labels were made with")
    ap.add_argument("--chunk", type=int, default=128, help="the label script's --chunk (for files without noise_row)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "stepsaver_label_variance.json")
    args = ap.parse_args()
    from dynexport.manifest import sha256_file
    from dynexport.models.sentence import caption_embeddings
    from dynexport.models.unet import load_unet
    from dynexport.runtime.schedulers import make_scheduler, timesteps
    d = json.loads(args.labels.read_text())
    if sha256_file(args.unet / "unet.safetensors") != d["unet_sha256"]:
        raise SystemExit(f"{args.unet} is not the UNet {args.labels} was labelled with "
                         f"(sha256 {d['unet_sha256'][:12]}…)")
    recs = d["records"]
    groups = noise_rows(recs, args.chunk)
    emb = caption_embeddings([r["caption"] for r in recs]).numpy()  # [N, 384]
    tr = np.array([r["split"] == "train" for r in recs])
    targets = {"log_label": np.log([r["label"] for r in recs])}
    targets |= {f"ssim_at_{c}": np.array([r["ssim"][j] for r in recs]) for j, c in enumerate(d["counts"])}
    out = {}
    for name, y in targets.items():
        best = max(r2(y[~tr], ridge_predict(emb, y, tr, lam)[~tr]) for lam in (10.0, 100.0, 1000.0, 3000.0))
        out[name] = {"prompt_ridge_val_r2": best, "noise": group_share(y, groups)}
        print(f"{name:12s} prompt val R² {best:6.3f}   noise share {out[name]['noise']['share']:.3f} "
              f"(p {out[name]['noise']['p']:.4f})", flush=True)
    ucfg = load_unet(args.unet)[1]
    sched = make_scheduler({"train_timesteps": ucfg.train_timesteps, "beta_schedule": ucfg.beta_schedule},
                           d["scheduler"])
    firsts = {int(timesteps(sched, n)[0]) for n in [*d["counts"], d["full_steps"]]}
    assert len(firsts) == 1, f"the schedules do not share their first timestep: {firsts}"
    first = first_call_features(args.unet, recs, groups, emb, firsts.pop())
    counts = np.array([*d["counts"], d["full_steps"]])
    ssim_at = np.concatenate([np.array([r["ssim"] for r in recs]), np.ones((len(recs), 1))], 1)  # [N, C + 1]
    study = first_call_study({"prompt": emb, "first_call": first, "prompt+first_call": np.concatenate([emb, first], 1)},
                             ssim_at, counts, ~tr, groups)
    write_json(args.out, {"env": environment(ROOT), "labels": str(args.labels.relative_to(ROOT)),
                          "unet_sha256": d["unet_sha256"], "records": len(recs),
                          "noise_groups": int(len(np.unique(groups))), "results": out, "first_call": study,
                          "note": "ridge lambda picked on val (best of 10, 100, 1000, 3000): an optimistic prompt "
                                  "R²; first_call: steps each policy needs for a mean SSIM on val prompts with "
                                  "unseen noise"})


if __name__ == "__main__":
    main()
