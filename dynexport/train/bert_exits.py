"""Train exit heads (and a LoRA delta of the encoder) for early exit, on CPU, with resume.

Two schemes, chosen in the recipe (`training.scheme`) and compared in the README:
- `deebert`: stage 1 fine-tunes the encoder (LoRA) with the final head only; stage 2 trains a head
  after every layer on the frozen encoder (pooled features cached once, so it takes seconds).
- `joint`: LoRA + every layer's head in one run, loss = layer-weighted mean of the heads' CE.
A checkpoint is a dir `<checkpoint_dir>/<name>-<key>` with the peft adapter, `heads.safetensors`
(one head per layer 1..L) and `train_info.json`; `key` hashes base weights, data split and config,
so a second export with the same recipe reuses it. Writes go to a temp dir renamed on completion.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from .. import paths
from ..assets import cache_dir
from ..data import Example, Splits
from ..errors import AssetError
from ..manifest import sha256_file
from ..models.encoder import ExitHead, MultiExit, all_heads, load_encoder, text_encoder
from ..recipe import EarlyExitRecipe


def model_sha(model_dir: Path) -> str:
    files = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin"))
    if not files:
        raise AssetError(f"{model_dir} holds no *.safetensors weights")
    return "-".join(sha256_file(f)[:16] for f in files)


def checkpoint_name(recipe: EarlyExitRecipe, model_dir: Path, splits: Splits) -> str:
    """`<model>-<scheme>-<key>`: the key hashes base weights, data split, labels, max length and the
    training config (not where checkpoints are kept)."""
    key_src = json.dumps({"model": model_sha(model_dir), "split": splits.info["key_sha256"],
                          "labels": splits.labels, "max_length": recipe.model.max_length,
                          "training": recipe.training.model_dump(exclude={"checkpoint_dir"})}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:12]
    return f"{Path(recipe.model.id).name}-{recipe.training.scheme}-{key}"


def checkpoint_path(recipe: EarlyExitRecipe, model_dir: Path, splits: Splits) -> Path:
    """Where this recipe's checkpoint is (or is to be written): in `training.checkpoint_dir` if set, else
    the committed one (dynexport/weights/early_exit) if it exists, else the cache."""
    name = checkpoint_name(recipe, model_dir, splits)
    if recipe.training.checkpoint_dir:
        return Path(recipe.training.checkpoint_dir) / name
    committed = paths.committed("early_exit") / name
    return committed if (committed / "train_info.json").is_file() else cache_dir() / "checkpoints" / name


def batches(examples: tuple[Example, ...], size: int, seed: int | None, group: int = 32):
    """Batches of (texts, labels). With a seed: shuffled, then within windows of `group` batches
    sorted by text length (less padding per batch), and the batches of a window shuffled again."""
    order = list(range(len(examples)))
    chunks = [order[i:i + size] for i in range(0, len(order), size)]
    if seed is not None:
        rng = random.Random(seed)
        rng.shuffle(order)
        chunks = []
        for w in range(0, len(order), size * group):
            window = sorted(order[w:w + size * group], key=lambda j: len(examples[j].text))
            part = [window[i:i + size] for i in range(0, len(window), size)]
            rng.shuffle(part)
            chunks += part
    for chunk in chunks:
        yield [examples[j].text for j in chunk], torch.tensor([examples[j].label for j in chunk])


def exit_loss(out: dict[int, torch.Tensor], y: torch.Tensor, weights: dict[int, float]) -> torch.Tensor:
    """Weighted mean over the trained heads of their cross-entropy to the labels."""
    return sum(w * nn.functional.cross_entropy(out[k], y) for k, w in weights.items()) / sum(weights.values())


def _lora(base: nn.Module, family, cfg):
    from peft import LoraConfig, get_peft_model
    targets = [n for n, m in base.named_modules() if isinstance(m, nn.Linear)
               and any(n.endswith(t) for t in family.lora_targets) and ".layer." in f".{n}"]
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.1, target_modules=targets)
    return get_peft_model(base, lcfg)


def _train_loop(model: MultiExit, params: list[dict], examples, cfg, enc, weights: dict[int, float],
                desc: str, ckpt: Path) -> list[float]:
    """AdamW + linear warm-up/decay; resumable from `ckpt/resume.pt` (weights_only load)."""
    from transformers import get_linear_schedule_with_warmup
    steps_per_epoch = (len(examples) + cfg.batch_size - 1) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(params, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * total), total)
    resume, done, losses = ckpt / "resume.pt", 0, []
    trainable = [p for g in params for p in g["params"]]
    if resume.is_file():
        state = torch.load(resume, weights_only=True)
        for p, v in zip(trainable, state["params"]):
            p.data.copy_(v)
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        done, losses = state["step"], list(state["losses"])
    model.train()
    bar = tqdm(total=total, initial=done, desc=desc, unit="step", mininterval=5)
    step = 0
    for epoch in range(cfg.epochs):
        for texts, y in batches(examples, cfg.batch_size, cfg.seed + epoch):
            step += 1
            if step <= done:
                continue
            b = enc(texts)
            out = model(torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask))
            loss = exit_loss(out, y, weights)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            if step % 200 == 0 or step == total:
                torch.save({"params": [p.detach() for p in trainable], "opt": opt.state_dict(),
                            "sched": sched.state_dict(), "step": step, "losses": losses}, resume)
    bar.close()
    return losses


@torch.no_grad()
def collect_logits(model: MultiExit, examples, enc, batch_size: int = 64, pooled: bool = False):
    """{layer: [n, classes]} (or pooled features) for every head of `model`, in example order."""
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].text))  # similar lengths batch together
    out: dict[int, list] = {}
    for i in tqdm(range(0, len(order), batch_size), desc="forward", mininterval=5):
        b = enc([examples[j].text for j in order[i:i + batch_size]])
        for k, v in model(torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask),
                          pooled_only=pooled).items():
            out.setdefault(k, []).append(v)
    inverse = torch.argsort(torch.tensor(order))
    return {k: torch.cat(v)[inverse] for k, v in out.items()}


def _train_heads_frozen(model: MultiExit, layers: list[int], examples, cfg, enc) -> None:
    """DeeBERT stage 2: heads of `layers` on cached pooled features of the frozen encoder."""
    sub = MultiExit(model.base, model.family, {k: model.heads[str(k)] for k in layers})
    feats = collect_logits(sub, examples, enc, pooled=True)
    y = torch.tensor([e.label for e in examples])
    g = torch.Generator().manual_seed(cfg.seed)
    for k in tqdm(layers, desc="exit heads (frozen encoder)"):
        head = model.heads[str(k)]
        head.train()
        opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr_heads, weight_decay=0.01)
        for _ in range(cfg.head_epochs):
            for idx in torch.randperm(len(y), generator=g).split(64):
                loss = nn.functional.cross_entropy(head.classify(feats[k][idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()


def _check_seqcls_labels(config, labels: tuple[str, ...], model_dir: Path) -> None:
    """A classification checkpoint must predict exactly the dataset's labels, in the same order."""
    names = [config.id2label[i] for i in range(config.num_labels)]
    generic = all(n == f"LABEL_{i}" for i, n in enumerate(names))
    if config.num_labels != len(labels) or not (generic or [n.lower() for n in names] == [x.lower() for x in labels]):
        raise AssetError(f"{model_dir} classifies {names}, but the dataset's labels are {list(labels)}; "
                         "set dataset.labels in the recipe to the checkpoint's label order")


def train(recipe: EarlyExitRecipe, model_dir: Path, splits: Splits, ckpt: Path) -> dict:
    """Train per `recipe.training` and write the checkpoint dir `ckpt` atomically; returns train_info."""
    cfg, t0 = recipe.training, time.time()
    torch.manual_seed(cfg.seed)
    model_hf, family, base, seqcls = load_encoder(model_dir)
    num_layers, classes = base.config.num_hidden_layers, len(splits.labels)
    if seqcls:
        _check_seqcls_labels(model_hf.config, splits.labels, model_dir)
    enc = text_encoder(model_dir, recipe.model.max_length)
    examples = splits.train[: cfg.max_train_examples or None]
    heads = all_heads(base, seqcls, model_hf, family, classes, cfg.head_width)
    tmp = ckpt.with_name(ckpt.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    model = MultiExit(base, family, heads)
    losses: list[float] = []
    if not seqcls:  # stage 1 (deebert) or the single joint stage: LoRA + heads
        peft_model = _lora(base, family, cfg)
        trained = list(heads) if cfg.scheme == "joint" else [num_layers]
        params = [{"params": [p for p in base.parameters() if p.requires_grad], "lr": cfg.lr_lora},
                  {"params": [p for k in trained for p in heads[k].parameters()], "lr": cfg.lr_heads}]
        weights = {k: float(k) for k in trained}
        losses = _train_loop(model, params, examples, cfg, enc, weights, f"train {cfg.scheme}", tmp)
        peft_model.save_pretrained(tmp / "adapter")
    if seqcls or cfg.scheme == "deebert":
        _train_heads_frozen(model, list(range(1, num_layers)), examples, cfg, enc)
    save_file({f"{k}.{n}": t.contiguous() for k, h in heads.items() if isinstance(h, ExitHead)
               for n, t in h.state_dict().items()}, tmp / "heads.safetensors")
    logits = collect_logits(model, splits.val, enc)
    y = torch.tensor([e.label for e in splits.val])
    info = {"scheme": cfg.scheme, "seqcls": seqcls, "family": family.name, "num_layers": num_layers,
            "train_examples": len(examples), "train_seconds": round(time.time() - t0, 1),
            "final_loss": float(np.mean(losses[-100:])) if losses else None,
            "val_accuracy_per_layer": {k: round(float((v.argmax(-1) == y).float().mean()) * 100, 2)
                                       for k, v in logits.items()},
            "model_sha": model_sha(model_dir), "split": splits.info, "labels": list(splits.labels),
            "recipe_training": cfg.model_dump(), "max_length": recipe.model.max_length}
    save_file({str(k): v.contiguous() for k, v in logits.items()}, tmp / "val_logits.safetensors")
    (tmp / "train_info.json").write_text(json.dumps(info, indent=1))
    (tmp / "resume.pt").unlink(missing_ok=True)
    if ckpt.exists():
        shutil.rmtree(ckpt)
    os.replace(tmp, ckpt)
    return info


@dataclass(frozen=True)
class Frozen:
    """A trained checkpoint's encoder (LoRA merged) and heads with the default recipe's data: what the
    head-exploration scripts start from."""
    recipe: EarlyExitRecipe
    splits: Splits
    family: Any
    base: nn.Module
    heads: dict
    enc: Any  # TextEncoder
    num_layers: int


def frozen_encoder(checkpoint: Path) -> Frozen:
    from .. import assets, data
    from ..models.encoder import load_trained
    from ..recipe import load_recipe
    recipe = load_recipe()
    d = recipe.dataset
    splits = data.load_splits(assets.resolve_dataset(d.id), d.text_column, d.label_column, d.labels,
                              d.val_size, d.test_size, d.seed)
    model_dir = assets.resolve_model(recipe.model.id)
    _, family, base, heads, info = load_trained(model_dir, checkpoint)
    return Frozen(recipe, splits, family, base, heads, text_encoder(model_dir, recipe.model.max_length),
                  info["num_layers"])


def ensure_trained(recipe: EarlyExitRecipe, model_dir: Path, splits: Splits) -> Path:
    """The cached checkpoint for this recipe/model/split, training it first if absent."""
    ckpt = checkpoint_path(recipe, model_dir, splits)
    if not (ckpt / "train_info.json").is_file():
        train(recipe, model_dir, splits, ckpt)
    return ckpt
