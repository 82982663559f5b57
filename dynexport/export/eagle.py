"""EAGLE export: a Llama target + a trained EAGLE head → KV-cached graphs, tokenizer, manifest.

Graphs (each stateful OpenVINO IR and explicit-KV ONNX, `kv_graph.py`):
- `target`: the target `KVLlama` with its final-norm features as a second output (`hidden`), positions
  and attention mask as inputs, so a draft tree is verified in one call;
- `head`: the EAGLE head (`models/eagle_head.py`), with its own one-layer KV cache and the draft vocabulary
  (`head_vocab.npy`, full ids of its output columns).
The manifest records the target's sha256 (the head's was checked against it), parity per graph and
backend, and the measured target call time for n = 1..64 positions (`verify_ms`), from which the
runtime sizes each draft tree.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import paths
from ..atomic import atomic_output_dir
from ..errors import AssetError
from ..manifest import EagleDefaults, EagleManifest, sha256_file, write_manifest
from ..models.eagle_head import EagleHead, load_head
from ..models.llama import causal_mask
from ..models.lm_sources import LMSource, read_checkpoint, resolve_lm, target_source
from ..recipe import FORMATS, EagleRecipe
from .common import library_versions
from .speculative import lm_context, parity, parity_ids, write_lm, write_tokenizer


def head_source(head_dir: Path, target_dir: Path) -> LMSource:
    cfg, sd, sha, _ = read_checkpoint(target_dir)
    if not Path(head_dir).is_dir():
        raise AssetError(f"EAGLE head dir {head_dir} does not exist (train one with scripts/train_eagle.py)")
    head, spec = load_head(Path(head_dir), cfg, sd, sha)
    return LMSource(head, sha256_file(Path(head_dir) / "eagle.safetensors"), Path(target_dir), spec["vocab_ids"],
                    {"kind": "eagle", "path": str(head_dir), "training": spec.get("training", {})})


@torch.no_grad()
def head_parity(head: EagleHead, session, ids: list[int]) -> float:
    """Max |output − torch| (logits and features) over a prefix call and a one-token call."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(1, len(ids), head.cfg.hidden, generator=gen)
    a = len(ids) - 1
    session.reset()
    first = session.run(ids[:a], hidden=feats[:, :a].numpy())
    session.commit(a)
    second = session.run(ids[a:], hidden=feats[:, a:].numpy())
    session.commit(1)
    t = len(ids)
    ref_logits, ref_feat, *_ = head(torch.tensor([ids]), feats, torch.arange(t)[None], causal_mask(0, t),
                                    *head.empty_past(1, 0))
    got_logits = np.concatenate([first["logits"], second["logits"]])
    got_feat = np.concatenate([first["hidden_out"], second["hidden_out"]])
    return float(max(np.abs(got_logits - ref_logits[0].numpy()).max(), np.abs(got_feat - ref_feat[0].numpy()).max()))


def export(recipe: EagleRecipe, out: Path, *, overwrite: bool = False,
           formats: tuple[str, ...] = FORMATS) -> EagleManifest:
    """Recipe (target, head, default chain and tree, weight format) → an EAGLE artifact at `out`."""
    from ..runtime.costs import measure
    from ..runtime.kv import LMSession
    target_dir = resolve_lm(recipe.target)
    target = target_source(target_dir, features=True)
    head = head_source(paths.resolve_weights(recipe.head, "eagle", "EAGLE head"), target_dir)
    weight_format, gen = recipe.quantization.weight_format, recipe.generation
    defaults = EagleDefaults(num_draft_tokens=gen.num_draft_tokens, tree_depth=gen.tree.depth,
                             tree_topk=gen.tree.topk, tree_max_tokens=gen.tree.max_tokens,
                             tree_dynamic=gen.tree.dynamic)
    with atomic_output_dir(out, overwrite) as tmp:
        tok = write_tokenizer(target_dir, tmp, lm_context(target_dir), "openvino" in formats)
        graphs = [write_lm(src, name, tmp, weight_format, formats)
                  for name, src in tqdm([("target", target), ("head", head)], desc="export graphs")]
        manifest = EagleManifest(
            method="eagle", created_utc=dt.datetime.now(dt.UTC).isoformat(), weight_format=weight_format,
            tokenizer=tok, target=graphs[0], head=graphs[1], defaults=defaults,
            source={"target": target.info, "head": head.info, "target_sha256": target.sha256,
                    "head_sha256": head.sha256}, versions=library_versions())
        write_manifest(tmp, manifest)
        ids = parity_ids(tmp, tok)
        par = {f"target/{b}": parity(target, LMSession(tmp, graphs[0], b), ids) for b in graphs[0].files}
        par |= {f"head/{b}": head_parity(head.module, LMSession(tmp, graphs[1], b), ids) for b in graphs[1].files}
        update = {"parity": par} | (measure(tmp, manifest) if "openvino" in formats else {})
        manifest = write_manifest(tmp, manifest.model_copy(update=update))
    return manifest
