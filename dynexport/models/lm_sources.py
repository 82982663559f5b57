"""Build the torch `KVLlama` modules that get exported: a target checkpoint dir, or a draft.

A draft is either a full HF Llama checkpoint that shares the target's tokenizer, or a *draft delta*
made by `scripts/train_draft.py` on top of the target (small enough to commit):

    draft.json         {"format": "dynexport-draft", "version": 1, "target_sha256": ..., "layers": [...],
                        "lora_scale": s, "training": {...}}
    draft.safetensors  vocab_ids [V'] int64 (optional: truncated output vocabulary),
                       layers.{j}.{attr}.lora_A [r, in] / .lora_B [out, r] (optional low-rank deltas),
                       layers.{j}.ln1 / ln2, norm (optional replacements)

The draft keeps `layers` of the target (its embedding and tied LM head are the target's, frozen).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import AssetError, ModelTypeError
from ..manifest import sha256_file
from .llama import FAMILIES, MATRICES, KVLlama, LlamaCfg

DRAFT_FORMAT, DRAFT_VERSION = "dynexport-draft", 1


@dataclass(frozen=True)
class LMSource:
    module: KVLlama
    sha256: str  # of the weights file(s) it was built from
    tokenizer_dir: Path
    vocab_ids: torch.Tensor | None  # [V'] full id of each output column, None = full vocabulary
    info: dict


def resolve_lm(model: str | Path) -> Path:
    """A causal LM by embedded id (SmolLM2-135M-Instruct, qwen2.5-coder-1.5b / -0.5b: converted from
    their GGUFs once) or a local checkpoint dir."""
    from .. import assets
    from .gguf import parted_gguf_dir, smollm2_dir
    if str(model) == assets.SMOLLM2_ID:
        return smollm2_dir()
    if str(model) in assets.PARTED_GGUFS:
        return parted_gguf_dir(assets.PARTED_GGUFS[str(model)])
    path = Path(model)
    if not path.is_dir():
        names = ", ".join([assets.SMOLLM2_ID, *assets.PARTED_GGUFS])
        raise AssetError(f"model {str(model)!r} is neither an embedded LM ({names}) nor a local checkpoint dir")
    return path


def read_checkpoint(path: Path) -> tuple[LlamaCfg, dict[str, torch.Tensor], str, int]:
    """A local HF Llama checkpoint dir → (cfg, fp32 state dict, sha256 of model.safetensors, num layers)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    path = Path(path)
    weights = path / "model.safetensors"
    if not (path / "config.json").is_file() or not weights.is_file():
        raise AssetError(f"{path} is not a checkpoint dir with config.json and model.safetensors")
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    if config.model_type not in FAMILIES:
        raise ModelTypeError(f"{path}: model type {config.model_type!r} is not supported for speculative "
                             f"decoding; only Llama-layout causal LMs ({', '.join(FAMILIES)}: SmolLM2, Qwen2.5)")
    if not (path / "tokenizer.json").is_file():
        raise AssetError(f"{path} has no tokenizer.json (a fast tokenizer is required)")
    sd = {k: v.float() for k, v in load_file(str(weights)).items()}
    return LlamaCfg.from_hf(config), sd, sha256_file(weights), int(config.num_hidden_layers)


def target_source(path: Path, features: bool = False) -> LMSource:
    """The target checkpoint as a KVLlama; features=True also outputs its final-norm features (EAGLE)."""
    cfg, sd, sha, n = read_checkpoint(path)
    return LMSource(KVLlama(cfg, sd, list(range(n)), features=features, copy=False).eval(), sha, Path(path), None,
                    {"kind": "checkpoint", "path": str(path), "layers": n})


def draft_source(path: Path, target_dir: Path, vocab_size: int = 0, layers: list[int] | None = None) -> LMSource:
    """A draft delta dir (draft.json) applied to the target, or a full checkpoint dir of its own; a
    checkpoint may be cut to `layers` and its `vocab_size` most frequent code tokens."""
    path = Path(path)
    if (path / "draft.json").is_file():
        if vocab_size or layers is not None:
            raise AssetError(f"{path} is a draft delta: its layers and vocabulary were fixed in training; "
                             "draft_shape applies to draft checkpoints only")
        cfg, sd, sha, _ = read_checkpoint(target_dir)
        return apply_draft_delta(path, cfg, sd, sha, Path(target_dir))
    cfg, sd, sha, n = read_checkpoint(path)
    keep = list(range(n)) if layers is None else list(layers)
    if not keep or any(not 0 <= i < n for i in keep) or len(set(keep)) != len(keep):
        raise AssetError(f"draft layers {layers} must be distinct indices of the draft's {n} layers")
    vocab = frequent_tokens(path, vocab_size, int(sd["model.embed_tokens.weight"].shape[0])) if vocab_size else None
    info = {"kind": "checkpoint", "path": str(path), "layers": keep} | ({"vocab_size": vocab_size} if vocab_size else {})
    return LMSource(KVLlama(cfg, sd, keep, vocab_ids=vocab, copy=False).eval(), sha, path, vocab, info)


def frequent_tokens(tok_dir: Path, n: int, vocab: int) -> torch.Tensor:
    """The n most frequent token ids over real code (the non-held-out stdlib modules) and English prose
    (Lee background news), stop tokens always included, ascending [n]."""
    from transformers import AutoTokenizer

    from .. import lm_data
    if not 0 < n <= vocab:
        raise AssetError(f"draft vocab_size must be in 1..{vocab}, got {n}")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    counts = torch.zeros(vocab, dtype=torch.int64)
    for text in lm_data.stdlib_files(heldout=False) + lm_data.lee_docs(test=False):
        counts += torch.bincount(torch.tensor(tok.encode(text, add_special_tokens=False)), minlength=vocab)[:vocab]
    stops = [i for i in {tok.eos_token_id, tok.pad_token_id} if i is not None]
    counts[stops] = counts.max() + 1
    return torch.sort(torch.argsort(counts, descending=True, stable=True)[:n]).values


def read_spec(file: Path, fmt: str, version: int, target_sha: str, what: str) -> dict:
    """A trained add-on's JSON spec (draft delta, EAGLE head): right format and version, and trained for
    this target (its sha256), else AssetError."""
    spec = json.loads(file.read_text())
    if spec.get("format") != fmt or spec.get("version") != version:
        raise AssetError(f"{file} is not a {fmt} v{version} file")
    if spec["target_sha256"] != target_sha:
        raise AssetError(f"{what} was trained for another target (sha256 {spec['target_sha256'][:12]}…, "
                         f"this target is {target_sha[:12]}…)")
    return spec


def apply_draft_delta(path: Path, cfg: LlamaCfg, target_sd: dict, target_sha: str, target_dir: Path) -> LMSource:
    from safetensors.torch import load_file

    spec = read_spec(path / "draft.json", DRAFT_FORMAT, DRAFT_VERSION, target_sha, f"draft {path}")
    delta = load_file(str(path / "draft.safetensors"))
    vocab = delta.get("vocab_ids")
    module = KVLlama(cfg, target_sd, spec["layers"], vocab_ids=vocab).eval()
    merge_delta(module, delta, float(spec.get("lora_scale", 1.0)))
    sha = sha256_file(path / "draft.safetensors")
    return LMSource(module, sha, target_dir, vocab, {"kind": "delta", "path": str(path), **spec})


@torch.no_grad()
def merge_delta(module: KVLlama, delta: dict[str, torch.Tensor], scale: float) -> None:
    """Fold LoRA deltas (W += scale·B@A) and norm replacements into the module's weights."""
    for j, layer in enumerate(module.layers):
        for attr in MATRICES:
            a, b = delta.get(f"layers.{j}.{attr}.lora_A"), delta.get(f"layers.{j}.{attr}.lora_B")
            if a is not None:
                getattr(layer, attr).add_(scale * (b.float() @ a.float()))
        for attr in ("ln1", "ln2"):
            if f"layers.{j}.{attr}" in delta:
                getattr(layer, attr).copy_(delta[f"layers.{j}.{attr}"].float())
    if "norm" in delta:
        module.norm.copy_(delta["norm"].float())


def save_hf_checkpoint(module: KVLlama, target_dir: Path, out: Path) -> Path:
    """A KVLlama as a plain transformers Llama checkpoint (full tied vocabulary) + the target's tokenizer,
    so other runtimes (openvino_genai's draft_model) can load the same draft layers and weights."""
    import shutil

    from safetensors.torch import save_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(target_dir)
    config.num_hidden_layers = len(module.layers)
    config.tie_word_embeddings = True
    sd = {"model.embed_tokens.weight": module.embed, "model.norm.weight": module.norm}
    for j, layer in enumerate(module.layers):
        p = f"model.layers.{j}."
        sd[p + "input_layernorm.weight"], sd[p + "post_attention_layernorm.weight"] = layer.ln1, layer.ln2
        for attr, name in MATRICES.items():
            sd[p + name] = getattr(layer, attr)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (target_dir / f).is_file():
            shutil.copy2(target_dir / f, out / f)
    return out
