"""EAGLE training data for a large target (Qwen2.5-Coder-1.5B), made with its exported OpenVINO graph.

The torch feature pass (train/eagle.py) costs ~3 h of CPU per 0.5 M tokens at 1.5B; the int8
OpenVINO graph with a `hidden` output (the one the EAGLE artifact ships) prefills ~10x faster, and a
head trained on its features sees at training what it sees deployed. Data, all cached in resumable
shards under `work/`:
- real code: Python stdlib modules (the non-held-out 9 in 10 of `lm_data.stdlib_files`) joined with
  EOS, cut into [N, L] chunks;
- on-policy: the target's own greedy continuations of 32-token code prompts (function openings of the
  same files; HumanEval is never used), generated in batches (a batch of 8 costs about one decode step);
- per chunk: the target's final-norm features fp16 [L, H] and its top-1 token int32 [L].
Same layout as `train.eagle.load_data`, so `scripts/train_eagle.py` trains on either.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import torch

NEG = np.float32(np.finfo(np.float32).min)


def code_chunks(tokenizer, seq_len: int, max_chunks: int, eos: int) -> torch.Tensor:
    """Real code chunks [N, seq_len] (N ≤ max_chunks) from the non-held-out stdlib modules."""
    from .. import lm_data
    ids: list[int] = []
    for text in lm_data.stdlib_files(heldout=False, max_chars=40_000):
        ids += tokenizer.encode(text, add_special_tokens=False) + [eos]
        if len(ids) >= seq_len * max_chunks:
            break
    n = min(len(ids) // seq_len, max_chunks)
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


def code_prompts(tokenizer, n: int, length: int = 32) -> torch.Tensor:
    """[n, length] prompts: the first `length` tokens from each `def` of the non-held-out stdlib modules
    (every 7th one, so they spread over many modules)."""
    from .. import lm_data
    out: list[list[int]] = []
    count = 0
    for text in lm_data.stdlib_files(heldout=False, max_chars=40_000):
        for m in re.finditer(r"(?m)^[ \t]*def [A-Za-z_]\w*\(", text):
            count += 1
            if count % 7:
                continue
            ids = tokenizer.encode(text[m.start():], add_special_tokens=False)[:length]
            if len(ids) == length:
                out.append(ids)
            if len(out) == n:
                return torch.tensor(out)
    return torch.tensor(out)


def causal(batch: int, past: int, t: int) -> np.ndarray:
    """Additive mask [B, 1, T, P+T] for T new tokens after P cached ones (every row the same)."""
    allowed = np.arange(past + t)[None, :] <= (np.arange(t)[:, None] + past)
    return np.broadcast_to(np.where(allowed, 0.0, NEG).astype(np.float32), (batch, 1, t, past + t)).copy()


def call(request, ids: np.ndarray, past: int, logits_rows: np.ndarray) -> dict[str, np.ndarray]:
    """One stateful call of T = ids.shape[1] tokens per row after `past` cached ones."""
    b, t = ids.shape
    res = request.infer({"input_ids": ids, "position_ids": np.broadcast_to(np.arange(past, past + t), (b, t)).copy(),
                         "attention_mask": causal(b, past, t), "logits_index": logits_rows,
                         "beam_idx": np.arange(b, dtype=np.int32)})
    return {port.get_any_name(): value for port, value in res.items()}


def greedy_batch(request, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
    """Greedy continuations [B, P + new_tokens] of prompts [B, P] (no EOS stop: fixed-length chunks)."""
    request.reset_state()
    b, p = prompts.shape
    seq = [prompts]
    nxt = call(request, prompts, 0, np.array([p - 1]))["logits"][:, -1].argmax(-1)  # [B]
    for i in range(new_tokens):
        seq.append(nxt[:, None])
        if i + 1 < new_tokens:
            nxt = call(request, nxt[:, None].astype(np.int64), p + i, np.array([0]))["logits"][:, -1].argmax(-1)
    return np.concatenate(seq, axis=1)


def chunk_features(request, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """chunk [L] → (features fp16 [L, H], target top-1 int32 [L]) in one prefill."""
    request.reset_state()
    out = call(request, chunk[None].astype(np.int64), 0, np.arange(len(chunk)))
    return out["hidden"][0].astype(np.float16), out["logits"][0].argmax(-1).astype(np.int32)


def cached(work: Path, name: str, make, log=print) -> dict[str, torch.Tensor]:
    """safetensors shard work/name, made by make() → dict of tensors once (atomic)."""
    from safetensors.torch import load_file, save_file
    path = work / name
    if not path.is_file():
        t0 = time.time()
        save_file({k: v.contiguous() for k, v in make().items()}, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)
        log(f"{name}: {time.time() - t0:.0f} s")
    return load_file(str(path))


def features(request, chunks: torch.Tensor, work: Path, tag: str, log=print, shard: int = 32):
    """(features fp16 [N, L, H], top-1 int32 [N, L]) of every chunk, in resumable shards."""
    feats, top1 = [], []
    for s in range(0, len(chunks), shard):
        def make(part=chunks[s:s + shard]):
            pairs = [chunk_features(request, c.numpy()) for c in part]
            return {"f": torch.from_numpy(np.stack([f for f, _ in pairs])),
                    "top1": torch.from_numpy(np.stack([t for _, t in pairs]))}
        d = cached(work, f"features_{tag}_{s // shard:04d}.safetensors", make, log)
        feats.append(d["f"]), top1.append(d["top1"])
        log(f"features {tag}: {min(s + shard, len(chunks))}/{len(chunks)} chunks")
    return torch.cat(feats), torch.cat(top1)


def onpolicy(request, prompts: torch.Tensor, seq_len: int, work: Path, log=print, batch: int = 8) -> torch.Tensor:
    """Greedy target continuations [N, seq_len] of prompts [N, 32], in resumable shards of `batch`."""
    parts = []
    for s in range(0, len(prompts), batch):
        def make(part=prompts[s:s + batch]):
            return {"chunks": torch.from_numpy(greedy_batch(request, part.numpy(), seq_len - part.shape[1]))}
        parts.append(cached(work, f"onpolicy_{s // batch:04d}.safetensors", make, log)["chunks"])
        log(f"on-policy: {min(s + batch, len(prompts))}/{len(prompts)} continuations")
    return torch.cat(parts)


def openvino_data(target_dir: Path, graph_xml: Path, work: Path, real_chunks: int, onpolicy_prompts: int,
                  seq_len: int = 256, threads: int | None = None, log=print) -> dict:
    """The `train.eagle.load_data` dict, made with the stateful OpenVINO target graph `graph_xml`
    (outputs logits, hidden; inputs include logits_index)."""
    import openvino as ov
    from transformers import AutoTokenizer

    from ..models.lm_sources import read_checkpoint
    from ..runtime.kv import CPU_EXACT
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    eos = tokenizer.eos_token_id
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", **CPU_EXACT}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = ov.Core().compile_model(str(graph_xml), "CPU", config).create_infer_request()
    real = cached(work, "real_chunks.safetensors",
                  lambda: {"chunks": code_chunks(tokenizer, seq_len, real_chunks, eos)}, log)["chunks"]
    real = real[:real_chunks]  # a cache made for more chunks holds these as its prefix
    log(f"real code: {len(real)} chunks of {seq_len} tokens")
    prompts = cached(work, "prompts.safetensors", lambda: {"prompts": code_prompts(tokenizer, onpolicy_prompts)},
                     log)["prompts"]
    on = onpolicy(request, prompts, seq_len, work, log)
    out = {"onpolicy": (on, *features(request, on, work, "onpolicy", log)),
           "real": (real, *features(request, real, work, "real", log))}
    return out | {"target": read_checkpoint(target_dir), "eos_ids": [eos]}
