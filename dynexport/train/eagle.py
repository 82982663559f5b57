"""Train an EAGLE head (models/eagle_head.py) for a Llama target on CPU.

Data: the same token chunks the separate draft was distilled on (train/draft.py: real news,
Wikipedia and stdlib code, target continuations, and on-policy target generations, cached in the
draft's work dir), and the target's final-norm features at every position, computed once in
resumable shards (fp16, [chunks, L, H]) with the target's top-1 token. The target's distribution
at position i+1 is softmax(W' f_{i+1}): recomputed from the stored feature, no logits are stored.

Training-time test (EAGLE-3): pass 1 is teacher-forced, (f_i, x_{i+1}) → f̂_{i+1}; pass d feeds pass
d−1's prediction back, (f̂_i, x_{i+1}) → f̂_{i+1}, with the attention mask the runtime will see at
draft depth d: the true-feature keys up to position i−d+1, then the keys of passes 2..d on the
diagonal. Loss per pass: smooth-L1 to the target feature + `ce_weight` · cross-entropy to the
target's distribution over the draft vocabulary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.eagle_head import EagleHead
from ..models.llama import KVLlama, causal_mask
from .optim import adamw_cosine, resume, save

NEG = torch.finfo(torch.float32).min


@dataclass(frozen=True)
class EagleCfg:
    vocab_size: int = 8192  # draft vocabulary (0 = the target's full vocabulary)
    ffn: int = 0  # the head layer's MLP width (0 = the target's)
    depth: int = 3  # training-time-test passes
    ce_weight: float = 0.1
    steps: int = 800
    batch: int = 8
    seq_len: int = 256
    lr: float = 1e-3
    eval_chunks: int = 48  # real chunks held out (the draft's eval split), plus on-policy shard 0
    eval_every: int = 0  # log held-out acceptance every this many steps (0 = only before/after)
    seed: int = 0
    bf16: bool = False  # forward under CPU bf16 autocast (weights and optimizer state stay fp32)


@torch.no_grad()
def target_features(target: KVLlama, chunks: torch.Tensor, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """chunks [N, L] → (final-norm features fp16 [N, L, H], target top-1 int32 [N, L])."""
    assert target.features, "build the target with features=True"
    feats, top1 = [], []
    for i in range(0, len(chunks), batch):
        ids = chunks[i:i + batch]
        b, t = ids.shape
        logits, hidden, *_ = target(ids, torch.arange(t)[None].expand(b, -1), causal_mask(0, t, b),
                                    *target.empty_past(b, 0))
        feats.append(hidden.half()), top1.append(logits.argmax(-1).int())
    return torch.cat(feats), torch.cat(top1)


def cached_features(target: KVLlama, chunks: torch.Tensor, work: Path, tag: str, log=print, shard: int = 64):
    """Features + top-1 for every chunk, in resumable shards of `shard` chunks under work/."""
    from safetensors.torch import load_file, save_file
    work.mkdir(parents=True, exist_ok=True)
    feats, top1 = [], []
    t0 = time.time()
    for s in range(0, len(chunks), shard):
        path = work / f"features_{tag}_{s // shard:04d}.safetensors"
        if not path.is_file():
            f, t = target_features(target, chunks[s:s + shard])
            save_file({"f": f.contiguous(), "top1": t.contiguous()}, str(path.with_suffix(".tmp")))
            path.with_suffix(".tmp").replace(path)
            log(f"features {tag}: {min(s + shard, len(chunks))}/{len(chunks)} chunks, {time.time() - t0:.0f} s")
        d = load_file(str(path))
        feats.append(d["f"]), top1.append(d["top1"])
    return torch.cat(feats), torch.cat(top1)


def ttt_mask(length: int, depth: int, batch: int) -> torch.Tensor:
    """Additive mask [B, 1, L, d·L] of training pass `depth` (1-based): query i sees pass-1 keys j ≤ i−d+1
    and, for passes m = 2..d, only key i−d+m (the runtime's KV at draft depth d)."""
    i = torch.arange(length)[:, None]
    j = torch.arange(length)[None, :]
    blocks = [j <= i - depth + 1] + [j == i - depth + m for m in range(2, depth + 1)]
    allowed = torch.cat(blocks, 1)
    allowed[:, -length:] |= torch.eye(length, dtype=torch.bool)  # always attend to itself (rows i < d−1)
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, NEG)
    return mask[None, None].expand(batch, 1, -1, -1)


def unrolled(head: EagleHead, ids: torch.Tensor, feats: torch.Tensor, depth: int) -> list[torch.Tensor]:
    """ids [B, L], feats [B, L, H] (target features) → per pass d, predictions [B, L−1, H] where
    pass d row i predicts f_{i+1} (rows i < d−1 have no valid input and are ignored by the loss)."""
    b, n = ids.shape[0], ids.shape[1] - 1
    x_next, pos = ids[:, 1:], torch.arange(n)[None].expand(b, -1)  # x_{i+1}, position i
    past_k = past_v = torch.zeros(b, head.cfg.kv_heads, 0, head.cfg.head_dim)
    inp, outs = feats[:, :-1].float(), []
    for d in range(1, depth + 1):
        _, out, past_k, past_v = head(x_next, inp, pos, ttt_mask(n, d, b), past_k, past_v)
        outs.append(out)
        inp = torch.cat([out[:, :1], out[:, :-1]], 1)  # row i gets pass d's prediction of f_i (row i−1)
    return outs


def eagle_loss(head: EagleHead, outs: list[torch.Tensor], feats: torch.Tensor, ce_weight: float) -> tuple:
    """Mean over passes of smooth-L1(f̂, f) + ce_weight · CE(softmax(W' f), W' f̂); returns (loss, per-pass)."""
    target = feats[:, 1:].float()  # [B, L−1, H]
    p = torch.softmax(F.linear(target, head.head), -1)  # [B, L−1, V'] the target restricted to V'
    total, parts = 0.0, []
    for d, out in enumerate(outs):
        reg = F.smooth_l1_loss(out[:, d:], target[:, d:])
        ce = -(p[:, d:] * torch.log_softmax(F.linear(out[:, d:], head.head), -1)).sum(-1).mean()
        total = total + reg + ce_weight * ce
        parts.append((reg.item(), ce.item()))
    return total / len(outs), parts


@torch.no_grad()
def chain_acceptance(head: EagleHead, ids: torch.Tensor, feats: torch.Tensor, top1: torch.Tensor,
                     vocab_ids: torch.Tensor, depth: int, batch: int = 8) -> dict:
    """Greedy chain acceptance, teacher-forced: per depth d, P(the head's argmax == the target's top-1
    at every depth ≤ d) over start positions; tau = 1 + Σ_d of it (tokens per target call, chain of depth)."""
    hits = []
    for i in range(0, len(ids), batch):
        outs = unrolled(head, ids[i:i + batch], feats[i:i + batch], depth)
        ok = [vocab_ids[F.linear(o, head.head).argmax(-1)] == top1[i:i + batch, 1:] for o in outs]  # [B, L−1]
        n = ok[0].shape[1] - depth + 1  # start t: pass d checks row t + d − 1
        chain = torch.ones(ok[0].shape[0], n, dtype=torch.bool)
        per_depth = []
        for d in range(depth):
            chain &= ok[d][:, d:d + n]
            per_depth.append(chain.float().mean(1))
        hits.append(torch.stack(per_depth, 1))  # [B, depth]
    rate = torch.cat(hits).mean(0)
    return {"chain_acceptance": [round(float(r), 4) for r in rate], "tau": round(1 + float(rate.sum()), 4),
            "top1_agreement": round(float(rate[0]), 4)}


def train_head(head: EagleHead, data: tuple, cfg: EagleCfg, ckpt: Path, log=print, evaluate=None) -> None:
    """AdamW, warm-up + cosine over cfg.steps on (ids [N, L], feats [N, L, H]); checkpoint every 25 steps;
    every cfg.eval_every steps, log `evaluate()` (held-out acceptance)."""
    params = head.trainable()
    opt, sched = adamw_cosine(params, cfg.lr, cfg.steps)
    start = resume(ckpt, head, opt, sched, log)
    gen = torch.Generator().manual_seed(cfg.seed + start)
    t0 = time.time()
    for step in range(start, cfg.steps):
        rows = torch.randint(0, len(data[0]), (cfg.batch,), generator=gen)
        ids, feats = data[0][rows], data[1][rows]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss, parts = eagle_loss(head, unrolled(head, ids, feats, cfg.depth), feats, cfg.ce_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(), sched.step()
        if (step + 1) % 10 == 0:
            log(f"step {step + 1}/{cfg.steps} loss {loss.item():.4f} " + " ".join(
                f"d{d + 1} l1 {r:.4f} ce {c:.3f}" for d, (r, c) in enumerate(parts))
                + f" {(time.time() - t0) / (step + 1 - start):.2f} s/step")
        if (step + 1) % 25 == 0 or step + 1 == cfg.steps:
            trainable = {k: v for k, v in head.state_dict().items() if k.startswith(("fc.", "layer."))}
            save(ckpt, trainable, opt, sched, step + 1)
        if evaluate and cfg.eval_every and (step + 1) % cfg.eval_every == 0:
            head.eval()
            log(f"step {step + 1} held out: {evaluate()}")
            head.train()


def load_data(target_dir: Path, draft_work: Path, work: Path, onpolicy_prompts: int, log=print) -> dict:
    """Chunks and features: real + sampled (the draft's data), and on-policy target generations
    (first half greedy). Returns {"real": (ids, feats, top1), "onpolicy": (...), "target": checkpoint,
    "eos_ids": [...]} (cached; resumable)."""
    from transformers import AutoTokenizer

    from ..models.lm_sources import read_checkpoint
    from .draft import DraftCfg, build_data, onpolicy_data

    lcfg, sd, sha, n = read_checkpoint(target_dir)
    target = KVLlama(lcfg, sd, list(range(n)), features=True).eval()
    dcfg = DraftCfg(onpolicy_prompts=onpolicy_prompts)
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    chunks = build_data(tokenizer, target, dcfg, draft_work, log)
    on = onpolicy_data(target, chunks[dcfg.eval_chunks:][: onpolicy_prompts + 16, :32], dcfg, draft_work, log)[0]
    out = {"real": (chunks, *cached_features(target, chunks, work, "real", log)),
           "onpolicy": (on, *cached_features(target, on, work, "onpolicy", log))}
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return out | {"target": (lcfg, sd, sha, n), "eos_ids": eos}
