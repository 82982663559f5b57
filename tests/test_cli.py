"""The CLI through subprocess: export, classify, evaluate, and clear one-line errors (exit 2)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import write_recipe

EXE = [sys.executable, "-m", "dynexport"]


def run(*args, cwd=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_cli_export_classify_evaluate(tiny, tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", tiny["bert"], tiny["data"], tiny["ckpt"])
    out = tmp_path / "art"
    p = run("bert", out, "--recipe", recipe, "--exits", "1,3", "--formats", "openvino")
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stdout and "threshold" in p.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["exits"] == [1, 3] and [g["layers"] for g in m["graphs"]] == [[0, 1], [1, 3], [3, 4]]
    assert set(m["graphs"][0]["files"]) == {"openvino"}
    p = run("classify", out, "good day", "awful flight", "--policy", "full")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("exit@layer  4") == 2
    p = run("evaluate", out, "--limit", "20", "--repeats", "1")
    assert p.returncode == 0, p.stderr
    assert "full depth" in p.stdout and "early exit" in p.stdout and "speed-up" in p.stdout
    p = run("bert", out, "--recipe", recipe, "--exits", "1,3", "--formats", "openvino")
    assert p.returncode == 2 and "already exists; pass --overwrite" in p.stderr


@pytest.mark.parametrize("args,message", [
    (["--exits", "2,20"], "exits [20] are out of range: this model has 4 layers"),
    (["--exits", "3,2"], "strictly increasing"),
    (["--exits", "two"], "comma-separated layer numbers"),
    (["--formats", "tensorrt"], "--formats"),
])
def test_cli_bad_arguments(tiny, tmp_path, args, message):
    recipe = write_recipe(tmp_path / "r.toml", tiny["bert"], tiny["data"], tiny["ckpt"])
    p = run("bert", tmp_path / "out", "--recipe", recipe, *args)
    assert p.returncode == 2
    assert message in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()


def test_cli_unknown_model_type_and_missing_model(tiny, tmp_path):
    from transformers import GPT2Config
    gpt = tmp_path / "gpt2"
    GPT2Config(n_layer=2, n_embd=16, n_head=2).save_pretrained(gpt)
    recipe = write_recipe(tmp_path / "r.toml", gpt, tiny["data"], tiny["ckpt"])
    p = run("bert", tmp_path / "out", "--recipe", recipe)
    assert p.returncode == 2 and "model type 'gpt2' is not supported" in p.stderr
    p = run("bert", tmp_path / "out", "--recipe", recipe, "--model", tmp_path / "nothing")
    assert p.returncode == 2 and "neither an embedded asset" in p.stderr
    p = run("classify", tmp_path / "nothing", "hi")
    assert p.returncode == 2 and "does not exist" in p.stderr


def test_cli_bad_runtime_input(bert_artifact):
    p = run("classify", bert_artifact[0], "   ")
    assert p.returncode == 2 and "empty or whitespace" in p.stderr
    p = run("classify", bert_artifact[0], "hi", "--policy", "entropy")
    assert p.returncode == 2 and "--threshold" in p.stderr
