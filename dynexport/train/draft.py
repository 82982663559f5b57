"""Train a small draft for speculative decoding by distilling the target on real text (CPU).

The draft keeps a few of the target's decoder layers (`layers`), shares its frozen embedding and
tied LM head restricted to the `vocab_size` tokens the target predicts most often on the training
text, and learns LoRA deltas on every kept weight matrix plus the norms. Data: real news, Wikipedia
and stdlib code (`lm_data`) plus the target's own sampled continuations of training prompts; the
signal is the target's teacher-forced top-k distribution at every position, computed once and
cached on disk. Everything resumes from `work_dir` after an interruption.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..models.llama import MATRICES, KVLlama, causal_mask
from ..models.lm_sources import DRAFT_FORMAT, DRAFT_VERSION
from .optim import adamw_cosine, resume, save


@dataclass(frozen=True)
class DraftCfg:
    layers: tuple[int, ...] = (0, 1, 2, 3)
    vocab_size: int = 8192
    lora_rank: int = 64
    lora_alpha: float = 64.0
    seq_len: int = 256
    topk: int = 32
    text_chars: int = 1_500_000  # real text/code characters for teacher forcing
    gen_prompts: int = 96  # target continuations (on-policy data)
    gen_tokens: int = 160
    gen_temperature: float = 0.7
    onpolicy_prompts: int = 0  # extra target continuations whose top-k is recorded while generating
    onpolicy_greedy_share: float = 0.5  # of those, the share decoded greedily (the rest at gen_temperature)
    onpolicy_batch_share: float = 0.5  # share of every training batch drawn from the on-policy chunks
    eval_chunks: int = 48
    steps: int = 600
    batch: int = 8
    lr: float = 1e-3
    seed: int = 0


class LoRA(nn.Module):
    """Parametrization W → W + (alpha/r)·B·A with B initialised to zero (starts as the identity map)."""

    def __init__(self, out_f: int, in_f: int, rank: int, scale: float):
        super().__init__()
        self.a = nn.Parameter(torch.randn(rank, in_f) / math.sqrt(in_f))
        self.b = nn.Parameter(torch.zeros(out_f, rank))
        self.scale = scale

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.scale * (self.b @ self.a)


def attach_lora(model: KVLlama, rank: int, alpha: float) -> list[nn.Parameter]:
    """LoRA on every kept matrix; norms trainable too. Returns the trainable parameters."""
    params = []
    for layer in model.layers:
        for attr in MATRICES:
            w = getattr(layer, attr)
            parametrize.register_parametrization(layer, attr, LoRA(w.shape[0], w.shape[1], rank, alpha / rank))
            params += list(layer.parametrizations[attr].parameters())
        for attr in ("ln1", "ln2"):
            getattr(layer, attr).requires_grad_(True)
            params.append(getattr(layer, attr))
    model.norm.requires_grad_(True)
    return params + [model.norm]


def delta_tensors(model: KVLlama, vocab_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The committed delta: LoRA A/B (fp16), norms, vocabulary (see models/lm_sources.py)."""
    out = {"vocab_ids": vocab_ids.to(torch.int64), "norm": model.norm.detach().clone()}
    for j, layer in enumerate(model.layers):
        for attr in MATRICES:
            lora = layer.parametrizations[attr][0]
            out[f"layers.{j}.{attr}.lora_A"] = lora.a.detach().half()
            out[f"layers.{j}.{attr}.lora_B"] = (lora.b.detach() * lora.scale).half()
        out[f"layers.{j}.ln1"], out[f"layers.{j}.ln2"] = layer.ln1.detach().clone(), layer.ln2.detach().clone()
    return out


def save_delta(out: Path, model: KVLlama, vocab_ids: torch.Tensor, target_sha: str, training: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in delta_tensors(model, vocab_ids).items()}, str(out / "draft.safetensors"))
    spec = {"format": DRAFT_FORMAT, "version": DRAFT_VERSION, "target_sha256": target_sha,
            "layers": list(model.source_layers), "lora_scale": 1.0, "training": training}
    (out / "draft.json").write_text(json.dumps(spec, indent=1) + "\n")


def full_logits(model: KVLlama, ids: torch.Tensor) -> torch.Tensor:
    """Teacher-forced logits [B, L, V'] of a KVLlama on full sequences (no cache)."""
    b, t = ids.shape
    pos = torch.arange(t)[None].expand(b, -1)
    return model(ids, pos, causal_mask(0, t, b), *model.empty_past(b, 0))[0]


@torch.no_grad()
def generate_with_teacher(target: KVLlama, prompts: torch.Tensor, n_new: int, temperature: float, k: int,
                          gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """prompts [B, P] → (seq [B, P+n_new], top-k values fp16 [B, P+n_new, k], indices int32): the target
    continues each prompt (greedy when temperature == 0) and its logits at every position are kept, so
    the chunk needs no separate teacher pass. The last position's logits come from one extra call."""
    b, p = prompts.shape
    logits, *past = target(prompts, torch.arange(p)[None].expand(b, -1), causal_mask(0, p, b),
                           *target.empty_past(b, 0))  # [B, P, V]
    seq, vals, idx = prompts, [], []
    for i in range(n_new + 1):
        v, j = logits.topk(k, dim=-1)
        vals.append(v.half()), idx.append(j.int())
        if i == n_new:
            break
        last = logits[:, -1]  # [B, V]
        nxt = (last.argmax(-1, keepdim=True) if temperature == 0
               else torch.multinomial(torch.softmax(last / temperature, -1), 1, generator=gen))  # [B, 1]
        seq = torch.cat([seq, nxt], 1)
        logits, *past = target(nxt, torch.full((b, 1), p + i), causal_mask(p + i, 1, b), *past)
    return seq, torch.cat(vals, 1)[:, : p + n_new], torch.cat(idx, 1)[:, : p + n_new]


def onpolicy_data(target: KVLlama, prompts: torch.Tensor, cfg: DraftCfg, work: Path, log=print):
    """(chunks, top-k values, top-k indices) of target continuations of `prompts` [N, 32], in resumable
    shards of 16; the first onpolicy_greedy_share of them greedy, the rest sampled."""
    from safetensors.torch import load_file, save_file

    parts = []
    n_greedy = round(len(prompts) * cfg.onpolicy_greedy_share)
    for s in range(0, len(prompts), 16):
        shard = work / f"onpolicy_{s // 16:04d}.safetensors"
        if not shard.is_file():
            temp = 0.0 if s < n_greedy else cfg.gen_temperature
            gen = torch.Generator().manual_seed(cfg.seed + 1 + s)
            seq, v, i = generate_with_teacher(target, prompts[s:s + 16], cfg.seq_len - prompts.shape[1],
                                              temp, cfg.topk, gen)
            save_file({"chunks": seq.contiguous(), "v": v.contiguous(), "i": i.contiguous()},
                      str(shard.with_suffix(".tmp")))
            shard.with_suffix(".tmp").replace(shard)
            log(f"on-policy {min(s + 16, len(prompts))}/{len(prompts)} continuations (T = {temp})")
        parts.append(load_file(str(shard)))
    return tuple(torch.cat([d[key] for d in parts]) for key in ("chunks", "v", "i"))


@torch.no_grad()
def teacher_topk(target: KVLlama, chunks: torch.Tensor, k: int, batch: int = 4, log=print):
    """Target's top-k logits per position: (values fp16 [N, L, k], indices int32 [N, L, k])."""
    vals, idx = [], []
    t0 = time.time()
    for i in range(0, len(chunks), batch):
        lg = full_logits(target, chunks[i:i + batch])
        v, j = lg.topk(k, dim=-1)
        vals.append(v.half()), idx.append(j.int())
        if (i // batch) % 20 == 0:
            log(f"teacher {i + len(lg)}/{len(chunks)} chunks, {time.time() - t0:.0f} s")
    return torch.cat(vals), torch.cat(idx)


def text_chunks(tokenizer, texts: list[str], seq_len: int, eos: int) -> torch.Tensor:
    """Documents joined with EOS, cut into [N, seq_len] token chunks (the tail is dropped)."""
    ids: list[int] = []
    for t in texts:
        ids += tokenizer.encode(t, add_special_tokens=False) + [eos]
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.int64).view(n, seq_len)


def choose_vocab(top1: torch.Tensor, size: int, always: list[int]) -> torch.Tensor:
    """The `size` ids the target predicts most often (plus `always`), sorted."""
    counts = torch.bincount(top1.flatten().long(), minlength=int(top1.max()) + 1)
    order = torch.argsort(counts, descending=True, stable=True)
    keep = [i for i in always] + [int(i) for i in order[: size] if int(i) not in always]
    return torch.tensor(sorted(keep[:size]), dtype=torch.int64)


def vocab_coverage(top1: torch.Tensor, ids: torch.Tensor) -> float:
    """Share of the target's top-1 predictions that fall inside the draft vocabulary `ids`."""
    return float(torch.isin(top1.flatten().long(), ids).float().mean())


def distill_loss(logits: torch.Tensor, t_vals: torch.Tensor, t_idx: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of draft logits [B, L, V'] against the teacher's top-k distribution, restricted to
    the draft vocabulary (`col`: full id → draft column or −1) and renormalised there."""
    cols = col[t_idx.long()]  # [B, L, k]
    inside = cols >= 0
    p = torch.softmax(t_vals.float(), -1).masked_fill(~inside, 0)  # [B, L, k]
    p = p / p.sum(-1, keepdim=True).clamp(min=1e-9)  # a position with no in-vocabulary token weighs 0
    logq = torch.log_softmax(logits, -1).gather(-1, cols.clamp(min=0))  # [B, L, k]
    return -(p * logq).sum(-1).mean()


@torch.no_grad()
def agreement(model: KVLlama, chunks: torch.Tensor, t_vals, t_idx, col: torch.Tensor, batch: int = 8) -> dict:
    """Greedy agreement (draft argmax == target argmax) and mean Σ min(p, q) at temperature 1."""
    agree, overlap, n = 0.0, 0.0, 0
    vocab = (col >= 0).nonzero().flatten()
    for i in range(0, len(chunks), batch):
        lg = full_logits(model, chunks[i:i + batch])  # [B, L, V']
        top1 = vocab[lg.argmax(-1)]
        agree += float((top1 == t_idx[i:i + batch, :, 0]).sum())
        q = torch.softmax(lg, -1)
        cols = col[t_idx[i:i + batch].long()]
        p = torch.softmax(t_vals[i:i + batch].float(), -1)
        qk = q.gather(-1, cols.clamp(min=0)).masked_fill(cols < 0, 0)
        overlap += float(torch.minimum(p, qk).sum())
        n += top1.numel()
    return {"greedy_agreement": agree / n, "sampling_overlap": overlap / n}


def train(model: KVLlama, params, data: tuple, col: torch.Tensor, cfg: DraftCfg, ckpt: Path, log=print,
          onpolicy: tuple | None = None) -> None:
    """AdamW with warm-up + cosine decay over cfg.steps; checkpoints (LoRA + optimizer) every 50 steps.
    With `onpolicy` (chunks, values, indices), cfg.onpolicy_batch_share of every batch comes from it."""
    n_on = round(cfg.batch * cfg.onpolicy_batch_share) if onpolicy is not None else 0
    opt, sched = adamw_cosine(params, cfg.lr, cfg.steps)
    start = resume(ckpt, model, opt, sched, log)
    gen = torch.Generator().manual_seed(cfg.seed + start)
    t0 = time.time()
    for step in range(start, cfg.steps):
        batch = [_pick(data, cfg.batch - n_on, gen)] + ([_pick(onpolicy, n_on, gen)] if n_on else [])
        chunks, t_vals, t_idx = (torch.cat(parts) for parts in zip(*batch))  # [B, L], [B, L, k], [B, L, k]
        loss = distill_loss(full_logits(model, chunks), t_vals, t_idx, col)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(), sched.step()
        if (step + 1) % 10 == 0:
            log(f"step {step + 1}/{cfg.steps} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.2e} "
                f"{(time.time() - t0) / (step + 1 - start):.2f} s/step")
        if (step + 1) % 50 == 0 or step + 1 == cfg.steps:
            trainable = {k: v for k, v in model.state_dict().items() if "parametrizations" in k or "ln" in k
                         or k == "norm"}
            save(ckpt, trainable, opt, sched, step + 1)


def _pick(data: tuple, n: int, gen: torch.Generator) -> tuple:
    rows = torch.randint(0, len(data[0]), (n,), generator=gen)
    return tuple(t[rows] for t in data)


def _take(docs: list[str], chars: int) -> list[str]:
    out, total = [], 0
    for d in docs:
        if total >= chars:
            break
        out.append(d)
        total += len(d)
    return out


def build_data(tokenizer, target: KVLlama, cfg: DraftCfg, work: Path, log=print) -> torch.Tensor:
    """Token chunks [N, seq_len]: real text/code, then target continuations of 32-token prompts (cached)."""
    from safetensors.torch import load_file, save_file

    from .. import lm_data

    path = work / "chunks.safetensors"
    if path.is_file():
        return load_file(str(path))["chunks"]
    prose = lm_data.lee_docs(test=False) + lm_data.wiki_paragraphs()  # 2/3 prose, 1/3 code
    texts = _take(prose, 2 * cfg.text_chars // 3) + _take(lm_data.stdlib_files(heldout=False), cfg.text_chars // 3)
    eos = tokenizer.eos_token_id
    real = text_chunks(tokenizer, texts, cfg.seq_len, eos)
    gen = torch.Generator().manual_seed(cfg.seed)
    real = real[torch.randperm(len(real), generator=gen)]
    prompts = real[: cfg.gen_prompts, :32]
    log(f"{len(real)} real chunks; sampling {cfg.gen_prompts} target continuations")
    outs = []
    for i in range(0, len(prompts), 16):
        outs.append(generate_with_teacher(target, prompts[i:i + 16], cfg.seq_len - 32, cfg.gen_temperature,
                                          cfg.topk, gen)[0])
        log(f"continuations {i + len(outs[-1])}/{len(prompts)}")
    chunks = torch.cat([torch.cat(outs), real])
    chunks = chunks[torch.randperm(len(chunks), generator=gen)]
    save_file({"chunks": chunks.contiguous()}, str(path))
    return chunks


def cached_teacher(target: KVLlama, chunks: torch.Tensor, cfg: DraftCfg, work: Path, log=print):
    """Teacher top-k for every chunk, computed in resumable shards of 64 chunks."""
    from safetensors.torch import load_file, save_file

    vals, idx = [], []
    for s in range(0, len(chunks), 64):
        shard = work / f"teacher_{s // 64:04d}.safetensors"
        if not shard.is_file():
            v, i = teacher_topk(target, chunks[s:s + 64], cfg.topk, log=log)
            save_file({"v": v, "i": i}, str(shard.with_suffix(".tmp")))
            shard.with_suffix(".tmp").replace(shard)
            log(f"teacher shard {s // 64 + 1}/{math.ceil(len(chunks) / 64)} done")
        d = load_file(str(shard))
        vals.append(d["v"]), idx.append(d["i"])
    return torch.cat(vals), torch.cat(idx)


@torch.no_grad()
def warm_start(model: KVLlama, delta_dir: Path) -> None:
    """Load a saved draft delta (same layers, rank and vocabulary) into the LoRA parametrizations."""
    from safetensors.torch import load_file

    delta = load_file(str(delta_dir / "draft.safetensors"))
    for j, layer in enumerate(model.layers):
        for attr in MATRICES:
            lora = layer.parametrizations[attr][0]
            lora.a.copy_(delta[f"layers.{j}.{attr}.lora_A"].float())
            lora.b.copy_(delta[f"layers.{j}.{attr}.lora_B"].float() / lora.scale)
        layer.ln1.copy_(delta[f"layers.{j}.ln1"]), layer.ln2.copy_(delta[f"layers.{j}.ln2"])
    model.norm.copy_(delta["norm"])


def run(target_dir: Path, out: Path, work: Path, cfg: DraftCfg, log=print, run_dir: Path | None = None,
        init: Path | None = None) -> dict:
    """Data → teacher → vocabulary → LoRA distillation → draft delta in `out`; returns the summary.
    `work` caches data + teacher (shared by runs with the same data settings), `run_dir` the training;
    `init`: a draft delta to start from (its vocabulary is kept)."""
    from transformers import AutoTokenizer

    from ..models.lm_sources import read_checkpoint

    torch.manual_seed(cfg.seed)
    work.mkdir(parents=True, exist_ok=True)
    lcfg, sd, sha, n = read_checkpoint(target_dir)
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    target = KVLlama(lcfg, sd, list(range(n))).eval()
    chunks = build_data(tokenizer, target, cfg, work, log)
    t_vals, t_idx = cached_teacher(target, chunks, cfg, work, log)
    ev, tr = slice(0, cfg.eval_chunks), slice(cfg.eval_chunks, None)
    onpolicy = None
    if cfg.onpolicy_prompts:  # prompts: the first 32 tokens of training chunks; shard 0 (16) held out for eval
        onpolicy = onpolicy_data(target, chunks[tr][: cfg.onpolicy_prompts + 16, :32], cfg, work, log)
    del target
    if init is not None:
        from safetensors.torch import load_file
        vocab_ids = load_file(str(init / "draft.safetensors"))["vocab_ids"]
    else:
        vocab_ids = choose_vocab(t_idx[tr, :, 0], cfg.vocab_size, [tokenizer.eos_token_id])
    coverage = vocab_coverage(t_idx[tr, :, 0], vocab_ids)
    col = torch.full((len(tokenizer),), -1, dtype=torch.int64)
    col[vocab_ids] = torch.arange(len(vocab_ids))
    draft = KVLlama(lcfg, sd, list(cfg.layers), vocab_ids=vocab_ids)
    params = attach_lora(draft, cfg.lora_rank, cfg.lora_alpha)
    if init is not None:
        warm_start(draft, init)

    def evaluate() -> dict:
        res = agreement(draft, chunks[ev], t_vals[ev], t_idx[ev], col)
        if onpolicy is not None:  # held-out greedy continuations: greedy agreement = greedy acceptance
            on = agreement(draft, *(t[:16] for t in onpolicy), col)
            res.update({f"onpolicy_greedy_{key}": v for key, v in on.items()})
        return res

    before = evaluate()
    log(f"vocab {len(vocab_ids)} covers {coverage:.3f} of target top-1; before training {before}")
    train(draft, params, (chunks[tr], t_vals[tr], t_idx[tr]), col, cfg, (run_dir or work) / "train.pt", log,
          onpolicy=None if onpolicy is None else tuple(t[16:] for t in onpolicy))
    after = evaluate()
    log(f"after training {after}")
    summary = {"cfg": asdict(cfg), "train_chunks": len(chunks) - cfg.eval_chunks, "eval_chunks": cfg.eval_chunks,
               "onpolicy_train_chunks": 0 if onpolicy is None else len(onpolicy[0]) - 16,
               "init": None if init is None else str(init), "vocab_coverage": coverage, "before": before,
               "after": after}
    save_delta(out, draft, vocab_ids, sha, summary)
    return summary
