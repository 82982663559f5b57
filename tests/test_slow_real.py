"""Slow tier: real models on the real tweet data (minutes). Still part of `make test` and CI.

- all-MiniLM-L6-v2 (6-layer BERT): trained on a small subsample here, exported, parity vs torch.
- all-mpnet-base-v2 (12-layer MPNet): the default recipe with the committed checkpoint (no
  training), exits 4,8 — parity vs torch, accuracy and early-exit behaviour on real test tweets.
"""

import json

import numpy as np
import pytest
import torch

from dynexport import assets, methods
from dynexport.evaluate import artifact_split
from dynexport.models.encoder import MultiExit, load_trained, text_encoder
from dynexport.recipe import load_recipe
from dynexport.runtime import FullDepth, load
from dynexport.train.bert_exits import checkpoint_path

pytestmark = pytest.mark.slow


def _torch_predictions(model_dir, ckpt, layers, texts, max_length, pooling):
    _, family, base, heads, _ = load_trained(model_dir, ckpt, pooling)
    b = text_encoder(model_dir, max_length)(texts)
    with torch.no_grad():
        out = MultiExit(base, family, {k: heads[k] for k in layers})(
            torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask))
    return {k: v.numpy() for k, v in out.items()}


def _check_against_torch(art, recipe, model_dir, texts):
    m = load(art).manifest
    from dynexport import data
    d = recipe.dataset
    splits = data.load_splits(assets.resolve_dataset(d.id), d.text_column, d.label_column, d.labels,
                              d.val_size, d.test_size, d.seed)
    ckpt = checkpoint_path(recipe, model_dir, splits)
    layers = [g.exit_layer for g in m.graphs]
    ref = _torch_predictions(model_dir, ckpt, layers, texts, recipe.model.max_length, recipe.training.head_pooling)
    for backend in ("openvino", "onnxruntime"):
        res = load(art, backend).run(texts, FullDepth(), batch_size=16, collect_all=True)
        for k, logits in zip(layers, res.all_logits):
            np.testing.assert_allclose(logits, ref[k], atol=1e-4, err_msg=f"{backend} exit {k}")
        np.testing.assert_array_equal(res.label_ids, ref[layers[-1]].argmax(-1))
    assert max(m.parity.values()) < 1e-4


def test_real_minilm_bert(tmp_path):
    recipe = load_recipe(None, {"model.id": "all-MiniLM-L6-v2", "exits.layers": [2, 4],
                                "training.max_train_examples": 400, "dataset.val_size": 300,
                                "training.checkpoint_dir": str(tmp_path / "ckpt"),
                                "calibration.timing_samples": 30})
    art = tmp_path / "minilm"
    m = methods.export("early-exit", recipe, art)
    assert [g.layers for g in m.graphs] == [(0, 2), (2, 4), (4, 6)] and m.source.model_type == "bert"
    texts, _ = artifact_split(m, "test")
    _check_against_torch(art, recipe, assets.minilm_dir(), texts[:48])


def test_real_mpnet_default_recipe(tmp_path):
    recipe = load_recipe()
    model_dir = assets.mpnet_dir()
    from dynexport import data
    d = recipe.dataset
    splits = data.load_splits(assets.resolve_dataset(d.id), d.text_column, d.label_column, d.labels,
                              d.val_size, d.test_size, d.seed)
    ckpt = checkpoint_path(recipe, model_dir, splits)
    assert (ckpt / "train_info.json").is_file(), f"committed checkpoint {ckpt.name} is missing (would retrain)"
    art = tmp_path / "mpnet"
    m = methods.export("early-exit", recipe, art, formats=("openvino", "onnxruntime"))
    assert m.exits == [4, 8] and m.source.num_layers == 12 and m.source.model_type == "mpnet"
    texts, labels = artifact_split(m, "test")
    _check_against_torch(art, recipe, model_dir, texts[:32])
    pipe = load(art)
    n = 400
    full = pipe.run(texts[:n], FullDepth())
    early = pipe.run(texts[:n])  # calibrated threshold from the manifest
    acc_full = (full.label_ids == labels[:n]).mean() * 100
    acc_early = (early.label_ids == labels[:n]).mean() * 100
    info = json.loads((ckpt / "train_info.json").read_text())
    assert acc_full >= 74.0, (acc_full, info["val_accuracy_per_layer"])
    assert acc_full - acc_early <= 2.5  # 1 pt on val; 400 test tweets are noisier
    assert early.stats.segment_samples[1] < 0.8 * n  # a real share leaves at layer 4
    assert (early.exit_layers < 12).mean() > 0.3
