"""Train exit heads (and a LoRA delta of the encoder) for early exit, on CPU, with resume.

Two schemes, chosen in the recipe (`training.scheme`) and compared in the README:
- `deebert`: stage 1 fine-tunes the encoder (LoRA) with the final head only; stage 2 trains a head
  after every layer on the frozen encoder (pooled features cached once, so it takes seconds).
- `joint`: LoRA + every layer's head in one run, loss = layer-weighted mean of the heads' CE.
A checkpoint is a dir `<checkpoint_dir>/<name>-<key>` with the peft adapter, `heads.safetensors`
(one head per layer 1..L) and `train_info.json`; `key` hashes base weights, data split and config,
so a second export with the same recipe reuses it. Writes go to a temp dir renamed on completion.
Head pooling (`training.head_pooling`): mean heads train on cached pooled features; attention heads
on the real tokens' states, cached once on disk (fp16, ~1.4 GB per layer for the 29k tweets). A
deebert checkpoint asked for another pooling runs stage 2 only and adds `heads-<pooling>.safetensors`.
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
from ..models.encoder import (
    ExitHead,
    MultiExit,
    all_heads,
    extended_mask,
    heads_file,
    load_encoder,
    load_trained,
    run_layers,
    text_encoder,
)
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
                          "training": recipe.training.model_dump(exclude=_unkeyed(recipe.training))},
                         sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:12]
    return f"{Path(recipe.model.id).name}-{recipe.training.scheme}-{key}"


def _unkeyed(cfg) -> set[str]:
    """Training fields that do not change the checkpoint: where it is kept; the head pooling of a deebert
    one (stage 2 runs per pooling in the same dir) or a mean one (keys as before the option existed)."""
    return {"checkpoint_dir"} | ({"head_pooling"} if cfg.scheme == "deebert" or cfg.head_pooling == "mean" else set())


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


@torch.no_grad()
def token_states(base: nn.Module, family, layers: list[int], examples, enc, out_dir: Path,
                 batch_size: int = 64) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """One frozen-encoder pass: the real tokens' states after each of `layers` (ascending), fp16, in
    memmaps `out_dir/l<k>.npy` [tokens, H]; returns (offsets [n + 1], {layer: memmap}). A complete
    earlier pass over the same examples is reused."""
    texts = [e.text for e in examples]
    lens = np.concatenate([enc(texts[i:i + 1024]).attention_mask.sum(1) for i in range(0, len(texts), 1024)])
    off = np.concatenate([[0], np.cumsum(lens)])
    stamp = {"n": len(texts), "tokens": int(off[-1]), "layers": layers,
             "texts": hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]}
    done = out_dir / "complete.json"
    if done.is_file() and json.loads(done.read_text()) == stamp:
        return off, {k: np.load(out_dir / f"l{k}.npy", mmap_mode="r") for k in layers}
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = (int(off[-1]), base.config.hidden_size)
    states = {k: np.lib.format.open_memmap(out_dir / f"l{k}.npy", "w+", np.float16, shape) for k in layers}
    order = np.argsort(lens, kind="stable")  # similar lengths batch together
    for i in tqdm(range(0, len(order), batch_size), desc="token states (frozen encoder)", mininterval=5):
        idx = order[i:i + batch_size]
        b = enc([texts[j] for j in idx])
        mask = torch.from_numpy(b.attention_mask)
        h, ext, start = base.embeddings(input_ids=torch.from_numpy(b.input_ids)), extended_mask(mask), 0
        for k in layers:
            h, start = run_layers(base, family, h, ext, start, k), k  # [b, s, H]
            hk = h.numpy().astype(np.float16)
            for r, j in enumerate(idx):
                states[k][off[j]:off[j + 1]] = hk[r, : lens[j]]
    for m in states.values():
        m.flush()
    done.write_text(json.dumps(stamp))
    return off, states


def padded(states: np.ndarray, off: np.ndarray, idx) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples `idx` of one layer's token states → [b, s, H] float32 and mask [b, s] int64."""
    lens = off[idx + 1] - off[idx]
    h = np.zeros((len(idx), int(lens.max()), states.shape[1]), np.float32)
    m = np.zeros(h.shape[:2], np.int64)
    for r, j in enumerate(idx):
        h[r, : lens[r]], m[r, : lens[r]] = states[off[j]:off[j + 1]], 1
    return torch.from_numpy(h), torch.from_numpy(m)


def _fit_head(head: ExitHead, logits_of, y: torch.Tensor, cfg, g: torch.Generator) -> None:
    """AdamW over shuffled batches of 64 for `head_epochs`; logits_of(idx) → [b, classes]."""
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr_heads, weight_decay=0.01)
    for _ in range(cfg.head_epochs):
        for idx in torch.randperm(len(y), generator=g).split(64):
            loss = nn.functional.cross_entropy(logits_of(idx), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def _train_heads_frozen(model: MultiExit, layers: list[int], examples, cfg, enc, scratch: Path) -> None:
    """DeeBERT stage 2: heads of `layers` on the frozen encoder, from cached pooled features (mean
    pooling) or cached token states (attention pooling; `scratch` holds them and is removed after)."""
    y = torch.tensor([e.label for e in examples])
    g = torch.Generator().manual_seed(cfg.seed)
    if cfg.head_pooling == "mean":
        sub = MultiExit(model.base, model.family, {k: model.heads[str(k)] for k in layers})
        feats = collect_logits(sub, examples, enc, pooled=True)
        for k in tqdm(layers, desc="exit heads (frozen encoder)"):
            _fit_head(model.heads[str(k)], lambda idx, k=k: model.heads[str(k)].classify(feats[k][idx]), y, cfg, g)
        return
    off, states = token_states(model.base, model.family, layers, examples, enc, scratch)
    for k in tqdm(layers, desc="exit heads (frozen encoder, token states)"):
        rows = np.asarray(states[k])  # this layer's states in memory: [tokens, H] fp16
        _fit_head(model.heads[str(k)], lambda idx, rows=rows, k=k: model.heads[str(k)](*padded(rows, off, idx.numpy())),
                  y, cfg, g)
    shutil.rmtree(scratch)


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
    heads = all_heads(base, seqcls, model_hf, family, classes, cfg.head_width, cfg.head_pooling)
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
        _train_heads_frozen(model, list(range(1, num_layers)), examples, cfg, enc, _scratch(ckpt))
    info = {"scheme": cfg.scheme, "seqcls": seqcls, "family": family.name, "num_layers": num_layers,
            "train_examples": len(examples), "final_loss": float(np.mean(losses[-100:])) if losses else None,
            "model_sha": model_sha(model_dir), "split": splits.info, "labels": list(splits.labels),
            "recipe_training": cfg.model_dump(), "max_length": recipe.model.max_length}
    info |= _save_heads(model, list(heads), splits, enc, "heads.safetensors", tmp)
    info["train_seconds"] = round(time.time() - t0, 1)
    (tmp / "train_info.json").write_text(json.dumps(info, indent=1))
    (tmp / "resume.pt").unlink(missing_ok=True)
    if ckpt.exists():
        shutil.rmtree(ckpt)
    os.replace(tmp, ckpt)
    return info


def _scratch(ckpt: Path) -> Path:
    """Where stage 2 caches token states while it trains attention heads (removed after)."""
    return cache_dir() / "features" / f"{ckpt.name}-token-states"


def _save_heads(model: MultiExit, layers: list[int], splits: Splits, enc, name: str, dest: Path) -> dict:
    """Heads of `layers` → `dest/name` in fp16 (the heads are rounded first, so what is measured is what
    is stored); their validation logits beside it; returns their validation accuracy per layer."""
    state = {}
    for k in layers:
        head = model.heads[str(k)]
        if isinstance(head, ExitHead):
            for n, t in head.state_dict().items():
                t.copy_(t.half())
                state[f"{k}.{n}"] = t.half().contiguous()
    save_file(state, dest / name)
    logits = collect_logits(model, splits.val, enc)
    y = torch.tensor([e.label for e in splits.val])
    save_file({str(k): v.contiguous() for k, v in logits.items()}, dest / name.replace("heads", "val_logits"))
    return {"val_accuracy_per_layer": {k: round(float((v.argmax(-1) == y).float().mean()) * 100, 2)
                                       for k, v in logits.items()}}


def add_heads(recipe: EarlyExitRecipe, model_dir: Path, splits: Splits, ckpt: Path) -> dict:
    """Stage 2 again on a deebert (or classification) checkpoint for the recipe's head pooling: writes
    heads-<pooling>.safetensors (exits 1..L-1) and records its validation accuracy in train_info."""
    cfg, t0 = recipe.training, time.time()
    torch.manual_seed(cfg.seed)
    model_hf, family, base, heads, info = load_trained(model_dir, ckpt)
    if info["scheme"] != "deebert" and not info["seqcls"]:
        raise AssetError(f"{ckpt} trained its heads with the encoder ({info['scheme']}): "
                         f"its {cfg.head_pooling}-pooling heads need a checkpoint of their own")
    num_layers, width = info["num_layers"], info["recipe_training"]["head_width"]
    exits = all_heads(base, info["seqcls"], model_hf, family, len(info["labels"]), width, cfg.head_pooling)
    model = MultiExit(base, family, {**{k: exits[k] for k in range(1, num_layers)}, num_layers: heads[num_layers]})
    enc = text_encoder(model_dir, recipe.model.max_length)
    examples = splits.train[: info["train_examples"]]
    name = heads_file(cfg.head_pooling, info)
    tmp = ckpt / f".{name}.partial"
    tmp.mkdir(exist_ok=True)
    _train_heads_frozen(model, list(range(1, num_layers)), examples, cfg, enc, _scratch(ckpt))
    row = _save_heads(model, list(range(1, num_layers)), splits, enc, name, tmp)
    row["train_seconds"] = round(time.time() - t0, 1)
    for f in tmp.glob("*.safetensors"):
        os.replace(f, ckpt / f.name)
    info.setdefault("heads", {})[cfg.head_pooling] = row
    (tmp / "train_info.json").write_text(json.dumps(info, indent=1))
    os.replace(tmp / "train_info.json", ckpt / "train_info.json")
    shutil.rmtree(tmp)
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
    """The cached checkpoint for this recipe/model/split, training it (or, for another head pooling of
    a deebert one, its stage 2) first if absent."""
    ckpt = checkpoint_path(recipe, model_dir, splits)
    if not (ckpt / "train_info.json").is_file():
        train(recipe, model_dir, splits, ckpt)
    else:
        info = json.loads((ckpt / "train_info.json").read_text())
        if not (ckpt / heads_file(recipe.training.head_pooling, info)).is_file():
            add_heads(recipe, model_dir, splits, ckpt)
    return ckpt
