"""Slow tier: the real SmolLM2-135M target with the committed trained draft — greedy speculative decoding
equals the target's greedy decoding token for token (and transformers'), and the draft is really trained."""

from __future__ import annotations

import pytest

from dynexport import methods
from dynexport.models.gguf import smollm2_dir
from dynexport.runtime import load

pytestmark = pytest.mark.slow
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
           "The city council met on Tuesday to discuss"]


@pytest.fixture(scope="module")
def real_pipe(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "smollm2-spec"
    recipe = methods.get("speculative").load_recipe(None, {"quantization.weight_format": "fp32"})
    methods.export("speculative", recipe, out, formats=("openvino",))
    return load(out, "openvino")


@pytest.fixture(scope="module")
def real_int8_pipe(tmp_path_factory):
    out = tmp_path_factory.mktemp("real8") / "smollm2-spec-int8"
    recipe = methods.get("speculative").load_recipe(None, {"quantization.weight_format": "int8"})
    methods.export("speculative", recipe, out, formats=("openvino",))
    return load(out, "openvino")


def test_real_greedy_speculative_equals_target(real_pipe):
    drafted = accepted = 0
    for prompt in PROMPTS:
        ref = real_pipe.generate(prompt, max_new_tokens=40, draft=0, ignore_eos=True)
        for k in (1, 3, "adaptive"):
            got = real_pipe.generate(prompt, max_new_tokens=40, draft=k, ignore_eos=True)
            assert got.tokens == ref.tokens, (prompt, k)
            if k == 1:  # per-token acceptance α is exactly the k = 1 acceptance rate
                drafted, accepted = drafted + got.stats.drafted, accepted + got.stats.accepted
    # untrained (layers 0-3 of the target + truncated head) the draft agrees 3.5% on the target's greedy
    # continuations; the committed trained draft α ≈ 0.29 at k = 1 (benchmark prompts)
    assert accepted / drafted > 0.15, accepted / drafted


def test_real_target_matches_transformers_greedy(real_pipe):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([tok(PROMPTS[0])["input_ids"]])
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    got = real_pipe.generate(PROMPTS[0], max_new_tokens=8, draft=3)
    assert got.tokens[0] == ref[0, ids.shape[1]:].tolist()[: len(got.tokens[0])]
    assert "Paris" in got.text


def test_real_int8_greedy_speculative_equals_int8_target(real_int8_pipe):
    """With int8 weights the CPU plugin's dynamic activation quantization made a k-token verify call
    disagree with one-token calls (greedy diverged on half the prompts); the runtime turns it off."""
    for prompt in PROMPTS:
        ref = real_int8_pipe.generate(prompt, max_new_tokens=40, draft=0, ignore_eos=True)
        for k in (3, 6):
            got = real_int8_pipe.generate(prompt, max_new_tokens=40, draft=k, ignore_eos=True)
            assert got.tokens == ref.tokens, (prompt, k)
