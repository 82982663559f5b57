"""Plain causal-LM export: one model → its KV-cached graph (stateful OpenVINO IR, explicit-KV ONNX),
tokenizer, manifest: what `optimum-cli export openvino --task text-generation-with-past` gives, in this
runtime's graph layout (the generator and reward model of the inference strategies).

The graph, tokenizer and parity check are the speculative export's (one `KVLlama` per model).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ..atomic import atomic_output_dir
from ..manifest import LMManifest, write_manifest
from ..models.lm_sources import resolve_lm, target_source
from ..recipe import FORMATS, LMRecipe
from .common import library_versions
from .speculative import lm_context, parity, parity_ids, write_lm, write_tokenizer


def export(recipe: LMRecipe, out: Path, *, overwrite: bool = False, formats: tuple[str, ...] = FORMATS) -> LMManifest:
    """Recipe (model, weight format) → an LM artifact at `out`."""
    from ..runtime.kv import LMSession
    model_dir = resolve_lm(recipe.model)
    src = target_source(model_dir)
    weight_format = recipe.quantization.weight_format
    with atomic_output_dir(out, overwrite) as tmp:
        tok = write_tokenizer(model_dir, tmp, lm_context(model_dir), "openvino" in formats)
        graph = write_lm(src, "model", tmp, weight_format, formats)
        manifest = LMManifest(method="lm", created_utc=dt.datetime.now(dt.UTC).isoformat(),
                              weight_format=weight_format, tokenizer=tok, model=graph,
                              source={"model": src.info, "model_sha256": src.sha256}, versions=library_versions())
        write_manifest(tmp, manifest)
        ids = parity_ids(tmp, tok)
        par = {f"model/{b}": parity(src, LMSession(tmp, graph, b), ids) for b in graph.files}
        manifest = write_manifest(tmp, manifest.model_copy(update={"parity": par}))
    return manifest
