"""The CLI through subprocess: export, classify, evaluate, and clear one-line errors (exit 2); its
defaults are the config models' own."""

import json

import pytest
from helpers import run_cli as run
from helpers import write_recipe


def test_cli_export_classify_evaluate(tiny, tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", tiny["bert"], tiny["data"], tiny["ckpt"])
    out = tmp_path / "art"
    p = run("bert", out, "--recipe", recipe, "--exits", "1,3", "--formats", "openvino")
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stdout and "exit rule" in p.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["exits"] == [1, 3] and [g["layers"] for g in m["graphs"]] == [[0, 1], [1, 3], [3, 4]]
    assert set(m["graphs"][0]["files"]) == {"openvino"}
    p = run("classify", out, "good day", "awful flight", "--policy", "full")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("exit@layer  4") == 2
    for rule in ("calibrated-entropy", "calibrated-per-exit", "calibrated-learned"):
        p = run("classify", out, "good day", "awful flight", "--policy", rule)
        assert p.returncode == 0 and p.stdout.count("exit@layer") == 2, p.stderr
    p = run("evaluate", out, "--limit", "20", "--repeats", "1")
    assert p.returncode == 0, p.stderr
    assert "full depth" in p.stdout and "early exit" in p.stdout and "speed-up" in p.stdout
    p = run("bert", out, "--recipe", recipe, "--exits", "1,3", "--formats", "openvino")
    assert p.returncode == 2 and "already exists; pass --overwrite" in p.stderr
    p = run("export", "early-exit", "--recipe", recipe, "--exits", "1,3", "--formats", "openvino", "--overwrite",
            "--head-pooling", "mean", out)
    m = json.loads((out / "manifest.json").read_text())
    assert p.returncode == 0 and m["exits"] == [1, 3] and m["source"]["training"]["head_pooling"] == "mean", p.stderr
    p = run("generate", out, "hello")
    assert p.returncode == 2 and "was exported for early-exit; `generate` does not run it" in p.stderr
    assert "`dynexport classify` or `dynexport evaluate`" in p.stderr


@pytest.mark.parametrize("args,message", [
    (["--exits", "2,20"], "exits [20] are out of range: this model has 4 layers"),
    (["--exits", "3,2"], "strictly increasing"),
    (["--exits", "two"], "comma-separated layer numbers"),
    (["--formats", "tensorrt"], "--formats"),
    (["--weight-format", "int3"], "'int3' is not one of"),
    (["--no-such-flag"], "No such option"),
    (["--head-pooling", "max"], "head_pooling"),
    (["--budget-reference", "int8"], "budget_reference"),
])
def test_cli_bad_arguments(tiny, tmp_path, args, message):
    recipe = write_recipe(tmp_path / "r.toml", tiny["bert"], tiny["data"], tiny["ckpt"])
    p = run("bert", tmp_path / "out", "--recipe", recipe, *args)
    assert p.returncode == 2
    assert message in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
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


def test_cli_defaults_are_the_config_models_defaults():
    """Every flag left out means the recipe's or the runtime config's value, and --help shows that value."""
    from dynexport import methods
    from dynexport.cli import generation_config
    from dynexport.runtime import GenerationConfig
    assert generation_config() == GenerationConfig()
    assert generation_config(num_draft_tokens="adaptive").draft == GenerationConfig(draft="adaptive").draft
    gen = GenerationConfig()
    p = run("generate", "--help")
    text = " ".join(p.stdout.split())
    for value in (gen.max_new_tokens, gen.temperature, gen.top_k, gen.top_p, gen.seed):
        assert f"[default: {value}]" in text
    for name, value in (("speculative", lambda r: r.draft), ("eagle", lambda r: r.head),
                        ("stepsaver", lambda r: r.sampling.scheduler),
                        ("early-exit", lambda r: ",".join(map(str, r.exits.layers)))):
        p = run("export", name, "--help")
        assert p.returncode == 0 and f"[default: {value(methods.get(name).recipe())}]" in " ".join(p.stdout.split())


def test_cli_warnings_of_every_category_reach_the_user(bert_artifact, tmp_path):
    """Warnings raised while a command runs are printed (a library's deprecations as one counted line)."""
    code = ("import warnings\nfrom dynexport.runtime import early_exit as ee\nrun = ee.EarlyExitPipeline.run\n"
            "def noisy(self, *a, **k):\n    warnings.warn('a future change', FutureWarning)\n"
            "    warnings.warn_explicit('an old api', DeprecationWarning, '/elsewhere/lib.py', 1)\n"
            "    return run(self, *a, **k)\nee.EarlyExitPipeline.run = noisy\n")
    p = run("classify", bert_artifact[0], "good day", "good " * 40, code_prefix=code)
    assert p.returncode == 0, p.stderr
    assert "warning (FutureWarning): a future change" in p.stderr
    assert "warning: 1 of 2 texts were longer than 24 tokens" in p.stderr  # the runtime's own UserWarning
    assert "1 deprecation warning(s) inside libraries" in p.stderr  # counted, not dropped
