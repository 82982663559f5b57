"""The GGUF → HF conversion of the real SmolLM2-135M-Instruct: tokenizer rebuilt from GGUF metadata
(checked on the real GGUF without dequantizing), and the full conversion in the slow tier."""

from __future__ import annotations

import pytest

from dynexport import assets
from dynexport.models.gguf import build_tokenizer, gguf_fields

SAMPLES = ["The capital of France is", "x = 12345 + 6.7\n\tdef f():  return 'é€😀'",
           "<|im_start|>user\nhi<|im_end|>", "  leading spaces and\ttabs\n\nnew paragraphs"]


@pytest.fixture(scope="module")
def fields():
    return gguf_fields(assets.smollm2_gguf())


def test_gguf_metadata_is_the_expected_model(fields):
    assert fields["general.architecture"] == "llama"
    assert (fields["llama.block_count"], fields["llama.embedding_length"], fields["llama.attention.head_count"],
            fields["llama.attention.head_count_kv"]) == (30, 576, 9, 3)
    assert len(fields["tokenizer.ggml.tokens"]) == 49152 and fields["tokenizer.ggml.add_bos_token"] is False


def test_rebuilt_tokenizer_round_trips(fields, tmp_path):
    from transformers import AutoTokenizer
    tok = build_tokenizer(fields)
    assert len(tok) == 49152 and (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (1, 2, 2, 0)
    assert tok("The capital of France is")["input_ids"] == [504, 3575, 282, 4649, 314]  # no BOS prepended
    assert tok("2024")["input_ids"] == [tok.convert_tokens_to_ids(d) for d in "2024"]  # digits split
    assert tok("<|im_start|>user")["input_ids"][0] == 1  # special tokens stay atomic
    for s in SAMPLES:
        assert tok.decode(tok(s)["input_ids"]) == s
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert all(again(s)["input_ids"] == tok(s)["input_ids"] for s in SAMPLES)


@pytest.mark.slow
def test_full_conversion_generates_sensibly(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dynexport.models.gguf import convert_gguf
    out = convert_gguf(assets.smollm2_gguf(), tmp_path / "smollm2")
    assert (out / ".complete").is_file() and (out / "model.safetensors").stat().st_size > 500e6
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    new = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(new[0, ids.shape[1]:])
