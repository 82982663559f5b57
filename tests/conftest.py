"""Fixtures: tiny random BERT / MPNet checkpoints with a WordPiece tokenizer, a synthetic labelled
CSV, tiny Llama targets with a draft and an EAGLE head, and artifacts exported once per session
(seconds, not minutes). The builders are in helpers.py."""

from __future__ import annotations

import pytest
from helpers import (
    CHAT_TEMPLATE,
    export_diffusion,
    export_lm,
    export_tiny,
    make_dataset,
    make_draft_delta,
    make_tiny_diffusion,
    make_tiny_eagle_head,
    make_tiny_llama,
    make_tiny_model,
)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Dict of paths: bert / mpnet model dirs, dataset CSV, checkpoint dir, work dir."""
    root = tmp_path_factory.mktemp("tiny")
    return {"bert": make_tiny_model(root / "bert", "bert"), "mpnet": make_tiny_model(root / "mpnet", "mpnet"),
            "data": make_dataset(root / "data.csv"), "ckpt": root / "ckpt", "root": root}


@pytest.fixture(scope="session")
def bert_artifact(tiny):
    return export_tiny(tiny, "bert", "bert-fp32")


@pytest.fixture(scope="session")
def mpnet_artifact(tiny):
    return export_tiny(tiny, "mpnet", "mpnet-fp32")


@pytest.fixture(scope="session")
def mpnet_mean_artifact(tiny, mpnet_artifact):
    """The (attention-pooling) mpnet checkpoint's exits retrained with mean pooling (its stage 2 only)."""
    return export_tiny(tiny, "mpnet", "mpnet-mean", overrides={"training.head_pooling": "mean"})


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """Paths: target (3-layer random Llama), draft (delta: its layer 0, 200-token vocab), artifact."""
    root = tmp_path_factory.mktemp("tiny_lm")
    target = make_tiny_llama(root / "target")
    draft = make_draft_delta(root / "draft", target)
    art = root / "artifacts" / "spec"
    export_lm("speculative", art, target, draft)
    return {"target": target, "draft": draft, "artifact": art, "root": root}


@pytest.fixture(scope="session")
def tiny_plain_lm(tiny_lm):
    """The tiny target of tiny_lm as a plain lm artifact (both backends), and a second one from a 1-layer
    model with the same tokenizer (a "small" generator next to it)."""
    from dynexport import methods
    from dynexport.recipe import LMRecipe
    root = tiny_lm["root"]
    small = make_tiny_llama(root / "small", layers=1, seed=7)
    arts = {}
    for name, model in (("lm", tiny_lm["target"]), ("small", small)):
        arts[name] = root / "artifacts" / f"plain-{name}"
        methods.export("lm", LMRecipe(model=str(model), quantization={"weight_format": "fp32"}), arts[name])
    return {"artifact": arts["lm"], "small": arts["small"], "target": tiny_lm["target"], "root": root}


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory):
    """Paths: target (3-layer random Qwen2: q/k/v biases, untied head), draft (a 1-layer Qwen2 checkpoint
    of its own with the same tokenizer, as the 0.5B is for the 1.5B), artifact."""
    root = tmp_path_factory.mktemp("tiny_qwen")
    target = make_tiny_llama(root / "target", family="qwen2")
    draft = make_tiny_llama(root / "draft", layers=1, seed=5, family="qwen2")
    art = root / "artifacts" / "spec"
    export_lm("speculative", art, target, draft)
    return {"target": target, "draft": draft, "artifact": art, "root": root}


@pytest.fixture(scope="session")
def tiny_eagle(tiny_lm):
    """The tiny target of tiny_lm + a briefly trained EAGLE head, exported (fp32)."""
    root = tiny_lm["root"]
    head = make_tiny_eagle_head(root / "eagle_head", tiny_lm["target"], train_steps=120)
    art = root / "artifacts" / "eagle"
    export_lm("eagle", art, tiny_lm["target"], head)
    return {"target": tiny_lm["target"], "head": head, "artifact": art, "root": root}


@pytest.fixture(scope="session")
def arts(tiny, bert_artifact, tiny_lm, tmp_path_factory):
    """Served models (tests/test_serve*.py), name → artifact dir: a classifier, a chat LM (CHAT_TEMPLATE),
    the same LM without a template, a speculative LM, a StepSaver image model."""
    import shutil

    from dynexport import methods
    from dynexport.recipe import LMRecipe
    root = tmp_path_factory.mktemp("serve")
    src = root / "chat-src"
    shutil.copytree(tiny_lm["target"], src)
    (src / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    out = {"clf": bert_artifact[0], "spec": tiny_lm["artifact"], "chat": root / "chat", "plain": root / "plain"}
    methods.export("lm", LMRecipe(model=str(src), quantization={"weight_format": "fp32"}), out["chat"],
                   formats=("openvino",))
    methods.export("lm", LMRecipe(model=str(tiny_lm["target"]), quantization={"weight_format": "fp32"}),
                   out["plain"], formats=("openvino",))
    d = make_tiny_diffusion(root / "diffusion")
    export_diffusion(root / "img", d["unet"], d["pred"], sampling={"scheduler": "ddim", "full_steps": 8})
    out["img"] = root / "img"
    return out
