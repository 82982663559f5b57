"""Does a second image per caption in another style (Twemoji) make StepSaver's UNet draw recognisable
emoji? An equal-budget experiment → benchmarks/twemoji_experiment.json + .png

    python scripts/twemoji_experiment.py finetune --arm openmoji   # resumable; both arms may run at once
    python scripts/twemoji_experiment.py finetune --arm both
    python scripts/twemoji_experiment.py scorer                    # the two-style judge
    python scripts/twemoji_experiment.py eval
    python scripts/twemoji_experiment.py guidance                  # how much the caption steers the image

Arms: both start from the shipped UNet (dynexport/weights/stepsaver/openmoji-unet32) and train the same
number of steps at the same batch, learning rate, schedule and seed; `openmoji` on the 4,019 OpenMoji
images, `both` on those plus the 3,899 captioned Twemoji (the same caption for the same code points).
Work dirs, checkpoints and the fine-tuned UNets live under $DYNEXPORT_CACHE/twemoji-experiment/.

The judge: the shipped scorer knows OpenMoji renderings only (real Twemoji 0.8%: twemoji_scorer.json),
so a new scorer of the same design is trained on both styles with images held out per style: the
OpenMoji images of the test-split families and the Twemoji images of the val-split families. Its
accuracy on those held-out images says whether it recognises an emoji in a rendering it never saw,
which is what a generated image is. `eval` draws every UNet's 50-step images (DPM-Solver++, guidance 1,
seed 0) for 406 training captions, all val and all test captions and reports the judge's caption
accuracy and caption rank; the arms are compared per prompt with a paired bootstrap CI. The rule,
fixed before the run: Twemoji pays if `both` beats `openmoji` on training-caption accuracy with a CI
that excludes 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dynexport import paths
from dynexport.assets import cache_dir
from dynexport.bench.env import environment, write_json
from dynexport.bench.stats import paired_bootstrap
from dynexport.emoji_data import ATTRIBUTION, TWEMOJI_ATTRIBUTION, EmojiSet, load_emoji, load_twemoji
from dynexport.models.sentence import caption_embeddings
from dynexport.models.unet import load_unet, save_unet, to_unit
from dynexport.train.diffusion import TrainCfg, sample_dpm, train
from dynexport.train.scorer import caption_hits, load_scorer, save_scorer, train_scorer

ROOT = Path(__file__).resolve().parents[1]
BASE = paths.committed("stepsaver") / "openmoji-unet32"
ARMS = ("openmoji", "both")
SPLITS = ("train", "val", "test")


def work_dir() -> Path:
    return cache_dir() / "twemoji-experiment"


def arm_set(arm: str, data: EmojiSet, tw: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """The arm's training images [N, S, S, 3] and their captions."""
    if arm == "openmoji":
        return data.images, list(data.captions)
    rows = [i for i, c in enumerate(data.codes) if c in tw]
    return (np.concatenate([data.images, np.stack([tw[data.codes[i]] for i in rows])]),
            list(data.captions) + [data.captions[i] for i in rows])


def cached_embeddings(captions: list[str], path: Path) -> torch.Tensor:
    """Caption embeddings [N, D], computed once into `path` (safetensors)."""
    from safetensors.torch import load_file, save_file
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"emb": caption_embeddings(captions).contiguous()}, str(path))
    return load_file(str(path))["emb"]


def cmd_finetune(args) -> None:
    torch.set_num_threads(args.threads)
    data, tw = load_emoji(32), load_twemoji(32)
    images, captions = arm_set(args.arm, data, tw)
    work = work_dir() / args.arm
    emb = cached_embeddings(captions, work / "caption_emb.safetensors")
    base, ucfg = load_unet(BASE)
    tcfg = TrainCfg(steps=args.steps, batch=args.batch, lr=args.lr, warmup=args.warmup, bf16=True, ckpt_every=50)
    print(f"arm {args.arm}: {len(captions)} images; fine-tune {tcfg.steps} steps from {BASE}", flush=True)
    t0 = time.time()
    unet, tcfg = train(images, emb, ucfg, tcfg, work, log=lambda m: print(m, flush=True), init=base.state_dict())
    save_unet(unet, ucfg, work / "unet", {
        "fine_tuned_from": str(BASE.relative_to(ROOT)), "steps": tcfg.steps, "batch": tcfg.batch, "lr": tcfg.lr,
        "warmup": tcfg.warmup, "bf16": tcfg.bf16, "seed": tcfg.seed, "images": len(captions), "arm": args.arm,
        "attribution": ATTRIBUTION + ("; " + TWEMOJI_ATTRIBUTION if args.arm == "both" else ""),
        "last_run_wall_s": round(time.time() - t0, 1), "threads": args.threads})
    print(f"saved {work / 'unet'}", flush=True)


def scorer_rows(data: EmojiSet, tw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Row sets of the two-style judge: OpenMoji rows it trains on / holds out (test families), and the rows
    whose Twemoji it trains on / holds out (val families)."""
    has_tw = np.array([c in tw for c in data.codes])
    split = {s: np.isin(np.arange(len(data.codes)), data.split(s)) for s in SPLITS}
    return {"openmoji_train": np.flatnonzero(~split["test"]), "openmoji_held": np.flatnonzero(split["test"]),
            "twemoji_train": np.flatnonzero(has_tw & ~split["val"]), "twemoji_held": np.flatnonzero(has_tw & split["val"])}


def cmd_scorer(args) -> None:
    torch.set_num_threads(args.threads)
    data, tw = load_emoji(32), load_twemoji(32)
    rows = scorer_rows(data, tw)
    text = caption_embeddings(list(data.captions))  # [U, D]: captions are unique, row i = emoji i
    tw_img = lambda r: np.stack([tw[data.codes[i]] for i in r])
    x = np.concatenate([data.images[rows["openmoji_train"]], tw_img(rows["twemoji_train"])])
    cls = torch.from_numpy(np.concatenate([rows["openmoji_train"], rows["twemoji_train"]]))
    t0 = time.time()
    model = train_scorer(to_unit(x), cls, text, epochs=args.epochs)
    text = text.numpy()
    info = {"epochs": args.epochs, "images": len(x), "captions": len(text), "wall_s": round(time.time() - t0, 1),
            "attribution": ATTRIBUTION + "; " + TWEMOJI_ATTRIBUTION}
    for name, r in rows.items():
        imgs = data.images[r] if name.startswith("openmoji") else tw_img(r)
        h = caption_hits(model, imgs, text, r)
        info[name] = {"images": len(r), "accuracy": float(h["hit"].mean()), "caption_rank_pct": float(h["rank_pct"].mean())}
    save_scorer(model, work_dir() / "scorer", info)
    print(json.dumps(info, indent=1), flush=True)


def prompt_rows(data: EmojiSet, split: str, n_train: int, seed: int = 0) -> np.ndarray:
    rows = data.split(split)
    return np.sort(np.random.default_rng(seed).choice(rows, n_train, replace=False)) if split == "train" else rows


def judge(scorer, images: np.ndarray, rows: np.ndarray, text: np.ndarray, fam_of: np.ndarray) -> dict:
    """The judge's per-prompt hits and ranks, and their means."""
    h = caption_hits(scorer, images, text, rows)
    fam_hit = fam_of[h["pred"]] == fam_of[rows]
    return {"accuracy": float(h["hit"].mean()), "family_accuracy": float(fam_hit.mean()),
            "caption_rank_pct": float(h["rank_pct"].mean()), "_hit": h["hit"].astype(float), "_rank": h["rank_pct"]}


def cmd_eval(args) -> None:
    torch.set_num_threads(args.threads)
    data, tw = load_emoji(32), load_twemoji(32)
    scorer = load_scorer(work_dir() / "scorer")
    text = caption_embeddings(list(data.captions)).numpy()  # [U, D]
    fam_of = np.array(data.families)
    unets = {"shipped": BASE, **{a: work_dir() / a / "unet" for a in ARMS}}
    results, grids = {}, {}
    for split in SPLITS:
        rows = prompt_rows(data, split, args.train_prompts)
        ctx = torch.from_numpy(text[rows])
        both = np.array([data.codes[i] in tw for i in rows])
        r = {"prompts": len(rows), "real_openmoji": judge(scorer, data.images[rows], rows, text, fam_of),
             "real_twemoji": judge(scorer, np.stack([tw[data.codes[i]] for i in rows[both]]), rows[both], text, fam_of)}
        for name, src in unets.items():
            unet, ucfg = load_unet(src)
            t0 = time.time()
            images = sample_dpm(unet, ucfg, ctx, 50, args.seed)
            r[name] = {**judge(scorer, images, rows, text, fam_of), "sample_wall_s": round(time.time() - t0, 1)}
            grids.setdefault(split, {})[name] = images[:8]
            print(split, name, {k: v for k, v in r[name].items() if not k.startswith("_")}, flush=True)
        r["both_minus_openmoji"] = {"accuracy": paired_bootstrap(r["both"]["_hit"], r["openmoji"]["_hit"]),
                                    "caption_rank_pct": paired_bootstrap(r["both"]["_rank"], r["openmoji"]["_rank"])}
        grids[split]["real"] = data.images[rows[:8]]
        results[split] = {k: ({kk: vv for kk, vv in v.items() if not kk.startswith("_")} if isinstance(v, dict) else v)
                          for k, v in r.items()}
    write_outputs(args, results, grids, unets)


def write_outputs(args, results: dict, grids: dict, unets: dict) -> None:
    acc = results["train"]["both_minus_openmoji"]["accuracy"]
    summary = {"pays": bool(acc["separated"] and acc["diff_pt"] > 0),
               **{f"{s}_accuracy_{n}": results[s][n]["accuracy"] for s in SPLITS for n in unets},
               **{f"{s}_both_minus_openmoji_accuracy_pt": results[s]["both_minus_openmoji"]["accuracy"] for s in SPLITS},
               "judge_held_out": {k: v for k, v in json.loads((work_dir() / "scorer" / "scorer.json").read_text()).items()
                                  if k.endswith("held")}}
    training = {n: json.loads((src / "unet.json").read_text())["training"] for n, src in unets.items()}
    write_json(args.out, {"env": environment(ROOT), "summary": summary, "results": results, "training": training,
                          "seed": args.seed})
    plot_grid(grids, args.out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))


def plot_grid(grids: dict, path: Path) -> None:
    """Rows: per split, the real OpenMoji image then each UNet's; 8 prompts per row, 3x nearest upscale."""
    from PIL import Image
    rows = [np.concatenate(list(g[name]), 1) for g in grids.values() for name in ("real", "shipped", *ARMS)]
    grid = np.concatenate(rows, 0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)


def cmd_guidance(args) -> None:
    """The shipped UNet under classifier-free guidance (DDIM 50, `preview`'s sampler): the judge's accuracy and
    caption rank at each scale, and how much of the image the caption decides: the mean SSIM of two captions'
    images from the same noise against one caption's images from two noises."""
    from dynexport.metrics import ssim
    from dynexport.train.diffusion import preview
    torch.set_num_threads(args.threads)
    data = load_emoji(32)
    scorer = load_scorer(work_dir() / "scorer")
    text = caption_embeddings(list(data.captions)).numpy()  # [U, D]
    rows = prompt_rows(data, "train", args.prompts)
    unet, ucfg = load_unet(BASE)
    out = {"prompts": len(rows), "sampler": "DDIM 50 (trailing), one noise batch per seed", "scales": {}}
    emb = torch.from_numpy(text[rows])  # [N, D]
    for g in args.scales:
        a, b = (preview(unet, ucfg, emb, guidance=g, seed=s) for s in (0, 1))  # row i: caption i, noise i of seed s
        c = preview(unet, ucfg, emb.roll(1, 0), guidance=g, seed=0)  # row i: caption i - 1, noise i of seed 0
        out["scales"][str(g)] = {**{k: v for k, v in judge(scorer, a, rows, text, np.array(data.families)).items()
                                    if not k.startswith("_")},
                                 "ssim_same_caption_other_noise": float(ssim(a, b).mean()),
                                 "ssim_same_noise_other_caption": float(ssim(a, c).mean()),
                                 "ssim_other_caption_other_noise": float(ssim(a, np.roll(b, 1, 0)).mean())}
        print(g, out["scales"][str(g)], flush=True)
    write_json(args.out, {"env": environment(ROOT), **out})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ft = sub.add_parser("finetune")
    ft.add_argument("--arm", choices=ARMS, required=True)
    ft.add_argument("--steps", type=int, default=600)
    ft.add_argument("--batch", type=int, default=TrainCfg.batch)
    ft.add_argument("--lr", type=float, default=3e-4)
    ft.add_argument("--warmup", type=int, default=50)
    sc = sub.add_parser("scorer")
    sc.add_argument("--epochs", type=int, default=30)
    ev = sub.add_parser("eval")
    ev.add_argument("--train-prompts", type=int, default=406)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "twemoji_experiment.json")
    gd = sub.add_parser("guidance")
    gd.add_argument("--prompts", type=int, default=128)
    gd.add_argument("--scales", type=float, nargs="+", default=[1.0, 3.0, 6.0])
    gd.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "twemoji_guidance.json")
    for p in (ft, sc, ev, gd):
        p.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    {"finetune": cmd_finetune, "scorer": cmd_scorer, "eval": cmd_eval, "guidance": cmd_guidance}[args.cmd](args)


if __name__ == "__main__":
    main()
