"""Calibrate StepSaver's in-loop step policies on the val prompts →
dynexport/weights/stepsaver/openmoji-step-control/step_control.json (copied into the manifest at export).

    python scripts/calibrate_step_control.py [--target 0.955] [--prompts 0]

All val-split captions in one batch (seed 1000), through an artifact of the recipe's UNet (OpenVINO fp32);
quality is the SSIM to the full-step image of the same prompt and noise. For every policy and base
schedule the tolerance is bisected (dynexport/train/step_control.py) to the cheapest value whose val
mean SSIM reaches --target:
- InLoopStop (x̂₀ change) on the --stop-steps schedule, finish "jump" and "respace";
- AdaptiveSkip (AdaptiveDiffusion's third-order criterion) on each of --skip-steps;
- CombinedSteps (the predictor's count as the budget, stop or extend).
The two fixed counts around each choice's mean are measured too, so every choice is compared with the
fixed schedule of the same mean on val; "adaptive" (the default) is the policy with the fewest calls at
the target. Test prompts are untouched.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dynexport import paths
from dynexport.emoji_data import load_emoji
from dynexport.metrics import ssim
from dynexport.runtime.policies import AdaptiveSkip, CombinedSteps, InLoopStop
from dynexport.train.step_control import Point, calibrate, same_mean_fixed

ROOT = Path(__file__).resolve().parents[1]
SEED = 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, default=0.955, help="val mean SSIM each tolerance must reach")
    ap.add_argument("--prompts", type=int, default=0, help="0 = every val caption")
    ap.add_argument("--stop-steps", type=int, default=25)
    ap.add_argument("--skip-steps", default="30,50")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--only", default="", help="re-run only these searches (e.g. combined), keep the rest of --out")
    ap.add_argument("--artifact", type=Path, default=ROOT / "exported_models" / "stepsaver-calibrate")
    ap.add_argument("--out", type=Path, default=paths.committed("stepsaver") / "openmoji-step-control")
    args = ap.parse_args()
    from dynexport import methods
    from dynexport.manifest import read_manifest
    from dynexport.runtime import load
    recipe = methods.get("stepsaver").load_recipe(None, {"models.step_control": ""})
    if not (args.artifact / "manifest.json").is_file():
        methods.export("stepsaver", recipe, args.artifact, overwrite=True, formats=("openvino",))
    pipe, m = load(args.artifact), read_manifest(args.artifact)
    data = load_emoji(m.image_size)
    prompts = [data.captions[i] for i in data.split("val")[: args.prompts or None]]
    t0 = time.perf_counter()
    ref = pipe.generate(prompts, steps=m.full_steps, seed=SEED).images
    bar = tqdm(desc="val runs", unit="run")

    def run(policy) -> Point:
        r = pipe.generate(prompts, steps=policy, seed=SEED)
        s = ssim(r.images, ref)
        bar.update()
        bar.set_postfix_str(f"{r.stats.policy[:40]} calls {np.mean(r.stats.calls):.2f} ssim {s.mean():.4f}")
        return Point(0.0, float(np.mean(r.stats.calls)), float(s.mean()), float(np.percentile(s, 5)))

    def search(make, lo, hi):
        best, curve = calibrate(lambda v: dataclasses.replace(run(make(v)), value=v), lo, hi, args.target, args.iters)
        return {"chosen": dataclasses.asdict(best) if best else None, "curve": [dataclasses.asdict(p) for p in curve]}

    makers = {f"stop-{fin}": (lambda v, f=fin: InLoopStop(tol=v, steps=args.stop_steps, finish=f), 1e-3, 0.1)
              for fin in ("jump", "respace")}
    for n in (int(v) for v in args.skip_steps.split(",")):
        makers[f"skip-{n}"] = (lambda v, n=n: AdaptiveSkip(threshold=v, steps=n), 1e-2, 1.0)
    makers["combined"] = (lambda v: CombinedSteps(tol=v), 1e-4, 0.1)
    old = json.loads((args.out / "step_control.json").read_text())["calibration"] if args.only else {}
    only = set(args.only.split(",")) if args.only else set(makers)
    searches = {k: search(*mk) if k in only else old["searches"][k] for k, mk in makers.items()}
    calls = [s["chosen"]["calls"] for s in searches.values() if s["chosen"]]
    fixed = {int(k): v for k, v in old.get("fixed", {}).items()}
    fixed |= {n: run(n).ssim for n in sorted({int(f(c)) for c in calls for f in (np.floor, np.ceil)} - set(fixed))}
    bar.close()
    for s in searches.values():
        if s["chosen"]:
            s["fixed_same_mean_ssim"] = same_mean_fixed(fixed, s["chosen"]["calls"])
    payload = _payload(args, m, searches, fixed, len(prompts), time.perf_counter() - t0 + old.get("seconds", 0))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_control.json").write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps({k: v.get("chosen") for k, v in searches.items()}, indent=1))
    print(f"default (adaptive): {payload['default']}; wrote {args.out / 'step_control.json'}")


def _payload(args, m, searches: dict, fixed: dict, n: int, seconds: float) -> dict:
    """The StepControlInfo fields: each policy's cheapest calibrated setting and how it was found."""
    def best(prefix: str):
        ok = [(k, s) for k, s in searches.items() if k.startswith(prefix) and s["chosen"]]
        return min(ok, key=lambda kv: kv[1]["chosen"]["calls"]) if ok else (None, None)
    (stop_key, stop), (skip_key, skip), (_, comb) = best("stop"), best("skip"), best("combined")
    out = {"stop": {"tol": stop["chosen"]["value"], "steps": args.stop_steps, "finish": stop_key.split("-")[1]}
           if stop else {},
           "skip": {"threshold": skip["chosen"]["value"], "steps": int(skip_key.split("-")[1])} if skip else {},
           "combined": {"tol": comb["chosen"]["value"]} if comb else {}}
    ranked = sorted(((s["chosen"]["calls"], k) for k, s in (("stop", stop), ("skip", skip), ("combined", comb)) if s))
    out["default"] = ranked[0][1] if ranked else "stop"
    out["calibration"] = {"split": "val", "prompts": n, "seed": SEED, "target_mean_ssim": args.target,
                          "searches": searches, "fixed": {str(k): v for k, v in fixed.items()},
                          "seconds": round(seconds, 1)}
    out["training"] = {"unet_sha256": m.source["unet_sha256"], "scheduler": m.scheduler["kind"],
                       "full_steps": m.full_steps, "guidance": m.guidance_scale}
    return out


if __name__ == "__main__":
    main()
