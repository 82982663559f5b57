"""The one generate loop and its config: GenerationConfig validates and normalises every input (a
property test: any value either builds a config or raises InputError), stop ids and stop strings end
generation, a list of prompts gives one completion each, a streamer can stop it, and the policy
objects and their shorthands give the same tokens."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynexport.errors import InputError
from dynexport.runtime import AdaptiveDraft, FixedDraft, GenerationConfig, TreeCfg, load

PROMPT = "the cat sat"
ANY = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=True, allow_infinity=True),
                st.text(max_size=8), st.lists(st.integers(-3, 300), max_size=3), st.lists(st.text(max_size=3), max_size=2))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "seed",
                                        "ignore_eos", "stop_token_ids", "stop_strings", "draft"]), ANY))
def test_config_builds_or_says_what_is_wrong(fields):
    try:
        cfg = GenerationConfig(**fields)
    except InputError:
        return
    assert cfg.max_new_tokens >= 1 and cfg.seed >= 0 and cfg.top_k >= 0 and 0 < cfg.top_p <= 1
    assert np.isfinite(cfg.temperature) and cfg.temperature >= 0
    assert isinstance(cfg.stop_token_ids, tuple) and isinstance(cfg.stop_strings, tuple)
    assert cfg.draft is None or cfg.draft == "tree" or isinstance(cfg.draft, (FixedDraft, AdaptiveDraft, TreeCfg))
    cfg.sampling  # noqa: B018


def test_shorthands_normalise_to_policy_objects():
    assert GenerationConfig(draft=3).draft == FixedDraft(3)
    assert GenerationConfig(draft="adaptive").draft == AdaptiveDraft()
    assert GenerationConfig(stop_strings="\n").stop_strings == ("\n",)
    assert GenerationConfig(stop_token_ids=[5, 6]).stop_token_ids == (5, 6)
    with pytest.raises(InputError, match="temperature 0 means greedy"):
        GenerationConfig(do_sample=True, temperature=0.0)


@pytest.fixture(scope="module")
def pipe(tiny_lm):
    return load(tiny_lm["artifact"], "onnxruntime")


def test_config_object_and_overrides_give_the_same_tokens(pipe):
    cfg = GenerationConfig(max_new_tokens=20, do_sample=True, temperature=0.8, seed=3, draft=FixedDraft(2))
    a = pipe.generate(PROMPT, cfg)
    b = pipe.generate(PROMPT, max_new_tokens=20, do_sample=True, temperature=0.8, seed=3, draft=2)
    c = pipe.generate(PROMPT, GenerationConfig(max_new_tokens=5), max_new_tokens=20, do_sample=True,
                      temperature=0.8, seed=3, draft=2)  # overrides win over the config
    assert a.tokens == b.tokens == c.tokens and len(a.tokens[0]) == 20
    with pytest.raises(InputError, match="config must be a GenerationConfig"):
        pipe.generate(PROMPT, 20)


def test_stop_token_ids_and_stop_strings(pipe):
    ref = pipe.generate(PROMPT, max_new_tokens=30, draft=0, ignore_eos=True)
    toks, text = ref.tokens[0], ref.text
    stop_id = toks[5]
    got = pipe.generate(PROMPT, max_new_tokens=30, draft=3, stop_token_ids=[stop_id], ignore_eos=False)
    assert got.tokens[0] == toks[: toks.index(stop_id)]  # the stop id ends it and is not in the output
    assert pipe.generate(PROMPT, max_new_tokens=30, draft=3, stop_token_ids=[stop_id],
                         ignore_eos=True).tokens[0] == toks  # ignore_eos ignores every stop id
    stop = text[len(text) // 2: len(text) // 2 + 3]
    assert stop.strip()
    pieces = []
    got = pipe.generate(PROMPT, max_new_tokens=30, draft=3, stop_strings=[stop], ignore_eos=True, streamer=pieces.append)
    assert got.text == text[: text.index(stop)] and stop not in got.text
    assert "".join(pieces) == got.text  # the stop string was never streamed, not even in part
    assert len(got.tokens[0]) < 30


def test_list_of_prompts_and_streamer_stop(pipe):
    prompts = [PROMPT, "the dog ran", "1 2 3"]
    many = pipe.generate(prompts, max_new_tokens=12, draft=2, ignore_eos=True)
    one = [pipe.generate(p, max_new_tokens=12, draft=2, ignore_eos=True) for p in prompts]
    assert many.texts == [r.text for r in one] and many.tokens == [r.tokens[0] for r in one]
    assert many.stats.new_tokens == 36 and len(many.per_prompt) == 3
    assert many.stats.prompt_tokens == sum(r.stats.prompt_tokens for r in one)
    with pytest.raises(InputError, match="this result holds 3 completions"):
        many.text  # noqa: B018
    with pytest.raises(InputError, match="streams one prompt"):
        pipe.generate(prompts, max_new_tokens=4, streamer=print)
    seen = []
    got = pipe.generate(PROMPT, max_new_tokens=30, draft=0, ignore_eos=True,
                        streamer=lambda piece: seen.append(piece) or len(seen) >= 3)
    assert len(seen) == 3 and len(got.tokens[0]) < 30  # the streamer's True stopped it


@pytest.mark.parametrize("bad", [[], [""], [PROMPT, 3], None, {"prompt": PROMPT}])
def test_bad_prompts(pipe, bad):
    with pytest.raises(InputError):
        pipe.generate(bad, max_new_tokens=4)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["seed", "steps", "scheduler", "guidance_scale"]), ANY),
       st.dictionaries(st.sampled_from(["policy", "batch_size", "sort_by_length"]), ANY))
def test_image_and_classify_configs_build_or_say_what_is_wrong(image, classify):
    from dynexport.runtime import ClassifyConfig, FixedSteps, ImageConfig, PredictedSteps
    try:
        cfg = ImageConfig(**image)
        assert isinstance(cfg.steps, (FixedSteps, PredictedSteps)) and cfg.seed >= 0
    except InputError:
        pass
    try:
        cfg = ClassifyConfig(**classify)
        assert cfg.batch_size >= 1 and cfg.policy is None
    except InputError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12))
def test_cli_flag_parsers_return_a_value_or_a_usage_error(text):
    from dynexport.cli import _int_or, _tree_option, parse_exits
    from dynexport.errors import UsageError
    for parse in (parse_exits, lambda v: _int_or("--steps", v, "auto"), _tree_option):
        try:
            parse(text)
        except (UsageError, InputError):
            pass
