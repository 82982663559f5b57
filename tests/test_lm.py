"""The plain lm method: export (parity, FLOPs fields), greedy == the same model as a speculative target
alone, sampling is seeded, the CLI exports and generates through a subprocess."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli

from dynexport.runtime import LMPipeline, load

BACKENDS = ["openvino", "onnxruntime"]


def test_manifest_has_parity_and_compute_fields(tiny_plain_lm):
    m = json.loads((tiny_plain_lm["artifact"] / "manifest.json").read_text())
    assert m["method"] == "lm" and max(m["parity"].values()) < 1e-4
    g = m["model"]
    assert g["params"] > 0 and g["attention_dim"] == 64  # 4 heads × 16
    from safetensors.numpy import load_file
    sd = load_file(str(tiny_plain_lm["target"] / "model.safetensors"))
    layers = sum(v.size for k, v in sd.items() if ".layers." in k)
    embed = sd["model.embed_tokens.weight"]
    assert g["params"] == layers + embed.size + sd["model.norm.weight"].size  # tied head counted once, as the head


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_equals_the_speculative_target_alone(tiny_plain_lm, tiny_lm, backend):
    pipe = load(tiny_plain_lm["artifact"], backend)
    assert isinstance(pipe, LMPipeline)
    ref = load(tiny_lm["artifact"], backend).generate("the cat sat", max_new_tokens=20, draft=0, ignore_eos=True)
    got = pipe.generate("the cat sat", max_new_tokens=20, ignore_eos=True)
    assert got.tokens == ref.tokens and got.stats.target_calls == 20 and got.stats.draft_calls == 0


def test_sampling_is_seeded_and_drafts_are_refused(tiny_plain_lm):
    from dynexport.errors import InputError
    pipe = load(tiny_plain_lm["artifact"], "openvino")
    a = pipe.generate("the cat", max_new_tokens=15, do_sample=True, seed=4, ignore_eos=True)
    b = pipe.generate("the cat", max_new_tokens=15, do_sample=True, seed=4, ignore_eos=True)
    assert a.tokens == b.tokens
    with pytest.raises(InputError, match="no draft"):
        pipe.generate("the cat", max_new_tokens=4, draft=2)


def test_cli_exports_and_generates(tiny_lm, tmp_path):
    out = tmp_path / "lm-art"
    r = run_cli("export", "lm", "-m", str(tiny_lm["target"]), str(out), "--weight-format", "fp32",
                "--formats", "openvino")
    assert r.returncode == 0, r.stderr
    assert "matmul parameters" in r.stdout and (out / "manifest.json").is_file()
    r = run_cli("generate", str(out), "the cat", "--max-new-tokens", "5")
    assert r.returncode == 0 and "5 tokens" in r.stdout, r.stdout + r.stderr


def test_cli_solve_refuses_bad_input_in_one_line(tiny_plain_lm):
    art = tiny_plain_lm["artifact"]
    for args, msg in ((["--strategy", "mcts"], "--strategy must be one of"), (["--budget", "0"], "budget must be"),
                      (["--problems", "500:"], "--problems"), (["--task", "gsm8k"], "task must be one of"),
                      ([], "exceeds the context")):  # the tiny model's 128-token context vs a HumanEval prompt
        r = run_cli("solve", str(art), "--problems", "0:1", *args)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
