"""Slow tier: the real SmolLM2-135M target with the committed trained EAGLE head — greedy EAGLE (chain,
fixed tree, dynamic tree) equals the target's greedy decoding token for token, fp32 and int8, and the
head is really trained (it gets accepted)."""

from __future__ import annotations

import pytest

from dynexport import methods
from dynexport.runtime import TreeCfg, load

pytestmark = pytest.mark.slow
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
           "The city council met on Tuesday to discuss"]
SETTINGS = [{"draft": 3}, {"draft": TreeCfg(depth=4, topk=4, max_tokens=10, dynamic=False)},
            {"draft": "tree"}, {}]  # "tree": the artifact's dynamic tree; {}: the default chain


@pytest.fixture(scope="module", params=["fp32", "int8"])
def real_eagle(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("eagle") / f"smollm2-eagle-{request.param}"
    recipe = methods.get("eagle").load_recipe(None, {"quantization.weight_format": request.param})
    methods.export("eagle", recipe, out, formats=("openvino",))
    return load(out, "openvino")


def test_real_greedy_eagle_equals_target(real_eagle):
    tau = []
    for prompt in PROMPTS:
        ref = real_eagle.generate(prompt, max_new_tokens=40, draft=0, ignore_eos=True)
        for kw in SETTINGS:
            got = real_eagle.generate(prompt, max_new_tokens=40, ignore_eos=True, **kw)
            assert got.tokens == ref.tokens, (prompt, kw)
            tau.append(got.stats.mean_accepted_length)
    # an untrained head (random layer, fc passing the feature through) agrees with the target's top-1 on
    # 4% of held-out positions (τ ≈ 1.05); the trained one reaches τ 1.5-1.9 on these settings in
    # benchmarks/eagle.json
    assert sum(tau) / len(tau) > 1.3, tau
