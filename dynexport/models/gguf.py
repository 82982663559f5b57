"""GGUF causal LM → local HF checkpoint (fp32 safetensors + a tokenizer rebuilt from GGUF metadata),
and the embedded SmolLM2 converted once into the cache.

transformers' GGUF loader dequantizes the weights correctly but builds a wrong tokenizer for
SmolLM2 (eos `<|im_start|>`, a forced BOS, ids past the embedding table, no digit splitting), so
the tokenizer is rebuilt here from the GGUF's own `tokenizer.ggml.*` fields: byte-level BPE with
individual digits, no BOS added, eos = pad = `<|im_end|>`. Conversion is deterministic; the
output dir is written atomically and marked complete.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import assets
from ..atomic import atomic_output_dir
from ..errors import AssetError


def gguf_fields(path: Path) -> dict:
    """The GGUF key/value metadata as plain Python values (tokens/merges lists included)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def build_tokenizer(fields: dict):
    """A `PreTrainedTokenizerFast` (byte-level BPE) from GGUF `tokenizer.ggml.*` metadata."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if fields.get("tokenizer.ggml.model") != "gpt2":
        raise AssetError(f"only byte-level BPE (gpt2) GGUF tokenizers are supported, "
                         f"not {fields.get('tokenizer.ggml.model')!r}")
    tokens: list[str] = fields["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    special = [t for t, kind in zip(tokens, fields["tokenizer.ggml.token_type"]) if kind == 3]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(special)
    name = lambda key: tokens[int(fields[key])]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=name("tokenizer.ggml.bos_token_id"),
        eos_token=name("tokenizer.ggml.eos_token_id"), unk_token=name("tokenizer.ggml.unknown_token_id"),
        pad_token=name("tokenizer.ggml.padding_token_id"), chat_template=fields.get("tokenizer.chat_template"),
        add_bos_token=bool(fields.get("tokenizer.ggml.add_bos_token", False)), clean_up_tokenization_spaces=False,
    )


def convert_gguf(gguf_path: Path, out: Path, overwrite: bool = False) -> Path:
    """Dequantize `gguf_path` to an fp32 HF checkpoint in `out` (config, model.safetensors, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf_path = Path(gguf_path)
    fields = gguf_fields(gguf_path)
    tokenizer = build_tokenizer(fields)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=torch.float32)
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) != vocab:
        raise AssetError(f"rebuilt tokenizer has {len(tokenizer)} tokens but the embedding table {vocab}")
    cfg = model.config
    cfg.bos_token_id, cfg.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    cfg.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps({"gguf": gguf_path.name}, indent=1) + "\n")
        (tmp / ".complete").write_text("ok\n")
    return out


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a local fp32 HF checkpoint, converted from the GGUF once (cached)."""
    out = assets.cache_dir() / "assets" / assets.SMOLLM2_ID
    if (out / ".complete").is_file():
        return out
    return convert_gguf(assets.smollm2_gguf(), out, overwrite=True)
