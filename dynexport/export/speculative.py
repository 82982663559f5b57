"""Speculative-decoding export: target + draft causal LMs → KV-cached graphs, tokenizers, manifest.

Each model becomes one `KVLlama` program, written as stateful OpenVINO IR and explicit-KV ONNX by
`kv_graph.py`. NNCF weight compression applies per graph. The helpers here (graph, tokenizer,
parity) serve the EAGLE export too. The HF tokenizer is copied and converted to OpenVINO
tokenizer/detokenizer IR. Parity with the torch module is measured per graph and backend.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import paths
from ..atomic import atomic_output_dir
from ..errors import AssetError
from ..manifest import LMGraph, LMTokenizer, SpeculativeDefaults, SpeculativeManifest, sha256_file, write_manifest
from ..models.llama import KVLlama, causal_mask
from ..models.lm_sources import LMSource, draft_source, resolve_lm, target_source
from ..recipe import FORMATS, SpeculativeRecipe
from .common import library_versions
from .kv_graph import tensor_specs, write_kv_graphs

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def draft_dir(ref: str) -> Path:
    """A draft by embedded LM name (qwen2.5-coder-0.5b), committed draft name, or dir."""
    from .. import assets
    if ref in assets.PARTED_GGUFS:
        return resolve_lm(ref)
    return paths.resolve_weights(ref, "speculative", "draft")


def write_lm(src: LMSource, name: str, tmp: Path, weight_format: str, formats: tuple[str, ...]) -> LMGraph:
    module = src.module.sliced() if isinstance(src.module, KVLlama) else src.module
    files, kv, precision = write_kv_graphs(module, name, tmp, weight_format, formats)
    ins, outs = tensor_specs(module)
    vocab_file = None
    if src.vocab_ids is not None:
        vocab_file = f"{name}_vocab.npy"
        np.save(tmp / vocab_file, src.vocab_ids.numpy().astype(np.int64), allow_pickle=False)
    c = module.cfg
    return LMGraph(name=name, files=files, inputs=ins, outputs=outs, kv_cache=kv,
                   num_layers=len(module.layers), source_layers=module.source_layers, kv_heads=c.kv_heads,
                   head_dim=c.head_dim, vocab_file=vocab_file, precision=precision, model_sha256=src.sha256,
                   params=matmul_params(module), attention_dim=c.heads * c.head_dim)


def matmul_params(module) -> int:
    """Parameters a token multiplies through: the decoder layers and the LM head (the embedding lookup
    computes nothing), the N of FLOPs ≈ 2·N per token."""
    return int(sum(p.numel() for name, p in module.named_parameters() if name.split(".")[-1] != "embed"))


def write_tokenizer(tok_dir: Path, tmp: Path, max_context: int, with_openvino: bool) -> LMTokenizer:
    from transformers import AutoTokenizer

    out = tmp / "tokenizer"
    out.mkdir()
    for f in TOKENIZER_FILES:
        if (tok_dir / f).is_file():
            shutil.copy2(tok_dir / f, out / f)
    hf = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=False)
    extra = [f"tokenizer/{f}" for f in TOKENIZER_FILES[1:] if (out / f).is_file()]
    ov_tok = ov_detok = None
    if with_openvino:
        import openvino as ov
        from openvino_tokenizers import convert_tokenizer
        tok_model, detok_model = convert_tokenizer(hf, with_detokenizer=True)
        ov.save_model(tok_model, str(out / "openvino_tokenizer.xml"))
        ov.save_model(detok_model, str(out / "openvino_detokenizer.xml"))
        ov_tok, ov_detok = "tokenizer/openvino_tokenizer.xml", "tokenizer/openvino_detokenizer.xml"
        extra += [ov_tok, ov_detok]
    eos = stop_token_ids(tok_dir, hf)
    return LMTokenizer(file="tokenizer/tokenizer.json", extra_files=extra, openvino_tokenizer=ov_tok,
                       openvino_detokenizer=ov_detok, sha256=sha256_file(tok_dir / "tokenizer.json"),
                       vocab_size=len(hf), eos_ids=sorted(eos), max_context=max_context)


def stop_token_ids(tok_dir: Path, hf) -> list[int]:
    """The tokenizer's eos plus generation_config.json's eos_token_id (an int or a list): Qwen2.5 stops on
    both <|im_end|> and <|endoftext|>."""
    ids = {hf.eos_token_id} - {None}
    gen = tok_dir / "generation_config.json"
    if gen.is_file():
        extra = json.loads(gen.read_text()).get("eos_token_id")
        ids |= set(extra if isinstance(extra, list) else [extra]) - {None}
    return sorted(int(i) for i in ids)


def check_same_tokenizer(target_dir: Path, draft: LMSource) -> None:
    """AssetError naming the first differing token (or setting) unless both tokenizer.json files agree."""
    a, b = target_dir / "tokenizer.json", draft.tokenizer_dir / "tokenizer.json"
    if sha256_file(a) == sha256_file(b):
        return
    ta, tb = json.loads(a.read_text()), json.loads(b.read_text())
    va, vb = tokens_by_id(ta), tokens_by_id(tb)
    first = next((i for i in range(max(len(va), len(vb))) if va.get(i) != vb.get(i)), None)
    if first is not None:
        what = f"token id {first} is {va.get(first)!r} in the target, {vb.get(first)!r} in the draft"
    else:
        what = "same tokens; differing " + ", ".join(k for k in ta.keys() | tb.keys() if ta.get(k) != tb.get(k))
    raise AssetError(f"draft tokenizer ({b}) differs from the target's ({a}): {what}; speculative decoding "
                     "needs both models to share one tokenizer")


def tokens_by_id(tokenizer_json: dict) -> dict[int, str]:
    """id → token of a tokenizer.json: the model vocabulary and the added tokens."""
    ids = {int(i): t for t, i in tokenizer_json.get("model", {}).get("vocab", {}).items()}
    return ids | {int(t["id"]): t["content"] for t in tokenizer_json.get("added_tokens", [])}


@torch.no_grad()
def parity(src: LMSource, session, prompt_ids: list[int]) -> float:
    """Max |logits − torch| through prefill, a rejected 3-token chain (masked) and a 2-token chain."""
    session.reset()
    a, b, c = prompt_ids[:-4], prompt_ids[-4:-2], prompt_ids[-2:]
    got = [session.forward(a)]
    session.commit(len(a))
    session.forward([b[0], 7, 9])  # b₀ kept, two "rejected drafts" masked
    session.commit(1)
    got.append(session.forward([b[1], *c]))
    session.commit(3)
    got = np.concatenate(got)  # rows: positions of a, then b₁, c₀, c₁
    ids = torch.tensor([a + [b[0], b[1], *c]])
    t = ids.shape[1]
    ref = src.module(ids, torch.arange(t)[None], causal_mask(0, t), *src.module.empty_past(1, 0))[0][0].numpy()
    ref = np.concatenate([ref[: len(a)], ref[len(a) + 1:]])
    return float(np.abs(got - ref).max())


def lm_context(target_dir: Path) -> int:
    from transformers import AutoConfig
    return int(AutoConfig.from_pretrained(target_dir, trust_remote_code=False).max_position_embeddings)


def parity_ids(tmp: Path, tok: LMTokenizer) -> list[int]:
    """The prompt every LM graph's parity check runs on."""
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(tmp / tok.file)).encode(
        "The quick brown fox jumps over the lazy dog because it wanted to see the river.").ids


def export(recipe: SpeculativeRecipe, out: Path, *, overwrite: bool = False,
           formats: tuple[str, ...] = FORMATS) -> SpeculativeManifest:
    """Recipe (target, draft, default draft length, weight format) → a speculative artifact at `out`."""
    from ..runtime.costs import measure
    from ..runtime.kv import LMSession

    target_dir = resolve_lm(recipe.target)
    target = target_source(target_dir)
    shape = recipe.draft_shape
    draft = draft_source(draft_dir(recipe.draft), target_dir, shape.vocab_size, shape.layers)
    check_same_tokenizer(target_dir, draft)
    weight_format = recipe.quantization.weight_format
    with atomic_output_dir(out, overwrite) as tmp:
        tok = write_tokenizer(target_dir, tmp, lm_context(target_dir), "openvino" in formats)
        graphs = [write_lm(src, name, tmp, fmt, formats) for name, src, fmt in tqdm(
            [("target", target, weight_format), ("draft", draft, shape.weight_format or weight_format)],
            desc="export graphs")]
        manifest = SpeculativeManifest(
            method="speculative", created_utc=dt.datetime.now(dt.UTC).isoformat(),
            weight_format=weight_format, tokenizer=tok, target=graphs[0], draft=graphs[1],
            defaults=SpeculativeDefaults(num_draft_tokens=recipe.generation.num_draft_tokens),
            source={"target": target.info, "draft": draft.info, "target_sha256": target.sha256,
                    "draft_sha256": draft.sha256},
            versions=library_versions())
        write_manifest(tmp, manifest)
        ids = parity_ids(tmp, tok)
        par = {f"{g.name}/{b}": parity(src, LMSession(tmp, g, b), ids)
               for g, src in zip(graphs, (target, draft)) for b in g.files}
        update = {"parity": par} | (measure(tmp, manifest) if "openvino" in formats else {})
        manifest = write_manifest(tmp, manifest.model_copy(update=update))
    return manifest
