"""`dynexport speculative`: target + draft causal LMs → KV-cached graphs, tokenizers, manifest.

Each model becomes one `KVLlama` program, written as stateful OpenVINO IR and explicit-KV ONNX by
`kv_graph.py`. NNCF weight compression applies per graph. The HF tokenizer is copied and converted to OpenVINO
tokenizer/detokenizer IR. Parity with the torch module is measured per graph and backend.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import AssetError, InputError
from ..manifest import LMGraph, LMTokenizer, SpeculativeManifest, sha256_file, write_manifest
from ..quantize import compress_graph
from .common import atomic_output_dir, library_versions
from .kv_graph import tensor_specs, write_kv_graphs
from .lm_sources import LMSource, draft_source, target_source

WEIGHT_FORMATS = ("fp32", "fp16", "int8", "int4")
DEFAULT_DRAFT = Path(__file__).resolve().parents[2] / "drafts" / "smollm2-135m-draft"  # committed delta
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def write_lm(src: LMSource, name: str, tmp: Path, weight_format: str, formats: tuple[str, ...]) -> LMGraph:
    module = src.module
    files, kv = write_kv_graphs(module, name, tmp, weight_format, formats)
    ins, outs = tensor_specs(module)
    vocab_file = None
    if src.vocab_ids is not None:
        vocab_file = f"{name}_vocab.npy"
        np.save(tmp / vocab_file, src.vocab_ids.numpy().astype(np.int64), allow_pickle=False)
    precision = {b: compress_graph(tmp / f, b, weight_format, "none") for b, f in files.items()}
    c = module.cfg
    return LMGraph(name=name, files=files, inputs=ins, outputs=outs, kv_cache=kv,
                   num_layers=len(module.layers), source_layers=module.source_layers, kv_heads=c.kv_heads,
                   head_dim=c.head_dim, vocab_file=vocab_file, precision=precision, model_sha256=src.sha256)


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
    eos = [hf.eos_token_id] if hf.eos_token_id is not None else []
    return LMTokenizer(file="tokenizer/tokenizer.json", extra_files=extra, openvino_tokenizer=ov_tok,
                       openvino_detokenizer=ov_detok, sha256=sha256_file(tok_dir / "tokenizer.json"),
                       vocab_size=len(hf), eos_ids=sorted(eos), max_context=max_context)


def check_same_tokenizer(target_dir: Path, draft: LMSource) -> None:
    a, b = target_dir / "tokenizer.json", draft.tokenizer_dir / "tokenizer.json"
    if sha256_file(a) != sha256_file(b):
        raise AssetError(f"draft tokenizer ({b}) differs from the target's ({a}); speculative decoding needs "
                         "both models to share one tokenizer")


@torch.no_grad()
def parity(src: LMSource, session, prompt_ids: list[int]) -> float:
    """Max |logits − torch| through prefill, a rejected 3-token chain (masked) and a 2-token chain."""
    from .llama import causal_mask

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


def measure_costs(root: Path, manifest: SpeculativeManifest, steps: int = 20) -> dict[str, float]:
    """Draft / target time of a one-token call (c), and the target's extra time per verified token
    relative to a one-token call (verify slope, from a 5-token call): the adaptive policy's cost model."""
    from ..runtime.kv import LMSession, median_call_ms, prime

    target, draft = (LMSession(root, spec, "openvino") for spec in (manifest.target, manifest.draft))
    prime(target), prime(draft)
    t1, d1 = median_call_ms(target, 1, steps), median_call_ms(draft, 1, steps)
    t5 = median_call_ms(target, 5, steps)
    return {"draft_cost_ratio": round(d1 / t1, 4), "verify_slope": round(max(t5 / t1 - 1, 0) / 4, 4)}


def export(target_dir: Path, draft_dir: Path, out: Path, weight_format: str = "fp16",
           num_draft_tokens: int | str = 4, overwrite: bool = False,
           formats: tuple[str, ...] = ("openvino", "onnxruntime")) -> SpeculativeManifest:
    from ..runtime.kv import LMSession

    if weight_format not in WEIGHT_FORMATS:
        raise InputError(f"--weight-format must be one of {', '.join(WEIGHT_FORMATS)}, not {weight_format!r}")
    target_dir = Path(target_dir)
    if not Path(draft_dir).is_dir():
        raise AssetError(f"draft dir {draft_dir} does not exist (train one with scripts/train_draft.py)")
    target = target_source(target_dir)
    draft = draft_source(Path(draft_dir), target_dir)
    check_same_tokenizer(target_dir, draft)
    from transformers import AutoConfig
    max_context = int(AutoConfig.from_pretrained(target_dir).max_position_embeddings)
    with atomic_output_dir(out, overwrite) as tmp:
        tok = write_tokenizer(target_dir, tmp, max_context, "openvino" in formats)
        graphs = [write_lm(src, name, tmp, weight_format, formats)
                  for name, src in tqdm([("target", target), ("draft", draft)], desc="export graphs")]
        manifest = SpeculativeManifest(
            method="speculative", created_utc=dt.datetime.now(dt.timezone.utc).isoformat(),
            weight_format=weight_format, tokenizer=tok, target=graphs[0], draft=graphs[1],
            defaults={"num_draft_tokens": num_draft_tokens},
            source={"target": target.info, "draft": draft.info, "target_sha256": target.sha256,
                    "draft_sha256": draft.sha256},
            versions=library_versions())
        write_manifest(tmp, manifest)
        from tokenizers import Tokenizer
        ids = Tokenizer.from_file(str(tmp / tok.file)).encode(
            "The quick brown fox jumps over the lazy dog because it wanted to see the river.").ids
        par = {f"{g.name}/{b}": parity(src, LMSession(tmp, g, b), ids)
               for g, src in zip(graphs, (target, draft)) for b in g.files}
        defaults = dict(manifest.defaults)
        if "openvino" in formats:
            defaults.update(measure_costs(tmp, manifest))
        manifest = write_manifest(tmp, manifest.model_copy(update={"parity": par, "defaults": defaults}))
    return manifest
