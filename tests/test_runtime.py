"""Runtime vs torch: segment parity, full-depth predictions, exit rule, batch compaction, bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dynexport.calibration import LAMBDAS, RULES, RuleFit, exit_scores, fit_exit_model, replay
from dynexport.errors import InputError
from dynexport.models.encoder import ExitHead, MultiExit, load_trained, segments_for
from dynexport.runtime import EntropyPolicy, FullDepth, LearnedExit, PatiencePolicy, load
from dynexport.runtime.policies import entropy

TEXTS = ["good day and my phone is great", "awful flight", "blue table monday", "the paper was so sad",
         "love it", "a train", "my day was poor and bad and sad", "nice", "this is it", "happy happy"]


def _torch_model(art, tiny):
    m = json.loads((art / "manifest.json").read_text())
    _, family, base, heads, _ = load_trained(Path(m["source"]["model_id"]), tiny["ckpt"] / m["source"]["checkpoint"],
                                             m["source"]["training"].get("head_pooling"))
    return m, family, base, heads


@pytest.mark.parametrize("which", ["bert_artifact", "mpnet_artifact", "mpnet_mean_artifact"])
@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_segment_parity_and_full_depth_predictions(request, tiny, which, backend):
    art, _ = request.getfixturevalue(which)
    m, family, base, heads = _torch_model(art, tiny)
    pipe = load(art, backend)
    b = pipe.encoder(TEXTS)
    segs = segments_for(base, family, m["exits"], heads, m["source"]["num_layers"])
    x = b.input_ids
    with torch.no_grad():
        for seg, graph, names in zip(segs, pipe.graphs, pipe.input_names):
            h, logits = seg(torch.from_numpy(x), torch.from_numpy(b.attention_mask))
            out = graph(**dict(zip(names, (x, b.attention_mask))))
            np.testing.assert_allclose(out["logits"], logits.numpy(), atol=1e-4)
            np.testing.assert_allclose(out["hidden_states_out"], h.numpy(), atol=1e-4)
            x = out["hidden_states_out"]
        layers = sorted({*m["exits"], m["source"]["num_layers"]})
        ref = MultiExit(base, family, {k: heads[k] for k in layers})(
            torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask))
    res = pipe.run(TEXTS, FullDepth(), collect_all=True)
    np.testing.assert_array_equal(res.label_ids, ref[layers[-1]].argmax(-1).numpy())
    for k, logits in zip(layers, res.all_logits):
        np.testing.assert_allclose(logits, ref[k].numpy(), atol=1e-4)
    assert (res.exit_layers == layers[-1]).all()


def test_other_pooling_shares_the_checkpoint_and_its_final_head(tiny, mpnet_artifact, mpnet_mean_artifact):
    att, mean = _torch_model(mpnet_artifact[0], tiny), _torch_model(mpnet_mean_artifact[0], tiny)
    assert mean[0]["source"]["checkpoint"] == att[0]["source"]["checkpoint"]  # stage 1 reused, not retrained
    info = json.loads((tiny["ckpt"] / att[0]["source"]["checkpoint"] / "train_info.json").read_text())
    assert info["recipe_training"]["head_pooling"] == "attention"
    assert set(info["heads"]["mean"]["val_accuracy_per_layer"]) == {"1", "2", "3", "4"}
    final = att[0]["source"]["num_layers"]
    for k, h in mean[3].items():
        same = all(torch.equal(a, b) for a, b in zip(h.state_dict().values(), att[3][k].state_dict().values()))
        assert same == (k == final), k  # the trained final head is kept; every exit is new
        assert (h.score is None) == (k != final)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=4), st.integers(0, 5), st.integers(0, 2 ** 16))
def test_attention_pooling_ignores_padding(lengths, extra, seed):
    torch.manual_seed(seed)
    head = ExitHead(8, 3, width=4, pooling="attention").eval()
    s = max(lengths)
    h, mask = torch.randn(len(lengths), s + extra, 8), torch.zeros(len(lengths), s + extra, dtype=torch.int64)
    for r, n in enumerate(lengths):
        mask[r, :n] = 1
    with torch.no_grad():
        batch = head(h, mask)
        for r, n in enumerate(lengths):
            alone = head(h[r:r + 1, :n], mask[r:r + 1, :n])
            torch.testing.assert_close(batch[r:r + 1], alone, atol=1e-5, rtol=0)


def test_unknown_head_pooling_is_refused():
    with pytest.raises(ValueError, match="unknown head pooling"):
        ExitHead(8, 3, pooling="max")


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_exit_decisions_follow_the_entropy_rule(bert_artifact, backend):
    pipe = load(bert_artifact[0], backend)
    every = pipe.run(TEXTS, FullDepth(), collect_all=True).all_logits
    ent0 = entropy(every[0])
    t = float(np.median(ent0))  # about half leave at the first exit
    res = pipe.run(TEXTS, EntropyPolicy(t), batch_size=4)
    for i in range(len(TEXTS)):
        ents = [entropy(seg[i:i + 1])[0] for seg in every[:-1]]
        first = next((j for j, e in enumerate(ents) if e < t), len(every) - 1)
        assert res.exit_layers[i] == pipe.exit_layers[first]
        assert res.label_ids[i] == every[first][i].argmax()
    assert 0 < (res.exit_layers == pipe.exit_layers[0]).sum() < len(TEXTS)
    pred, seg = replay(EntropyPolicy(t), every)  # calibration replays the same rule
    np.testing.assert_array_equal(pred, res.label_ids)
    np.testing.assert_array_equal(np.array(pipe.exit_layers)[seg], res.exit_layers)
    assert res.stats.segment_samples[0] == len(TEXTS) and sum(res.stats.exit_counts) == len(TEXTS)
    assert res.stats.segment_samples[1] == len(TEXTS) - res.stats.exit_counts[0]


def test_batch_compaction_keeps_order(bert_artifact):
    pipe = load(bert_artifact[0])
    every = pipe.run(TEXTS, FullDepth(), collect_all=True).all_logits
    policy = EntropyPolicy(float(np.median(entropy(every[0]))))
    one_by_one = [pipe.run([t], policy) for t in TEXTS]
    batched = pipe.run(TEXTS, policy, batch_size=len(TEXTS))
    rev = pipe.run(TEXTS[::-1], policy, batch_size=3)
    unsorted = pipe.run(TEXTS, policy, batch_size=3, sort_by_length=False)
    assert unsorted.labels == batched.labels and list(unsorted.exit_layers) == list(batched.exit_layers)
    assert [r.labels[0] for r in one_by_one] == batched.labels == rev.labels[::-1]
    assert [r.exit_layers[0] for r in one_by_one] == list(batched.exit_layers) == list(rev.exit_layers[::-1])
    np.testing.assert_allclose(np.concatenate([r.probabilities for r in one_by_one]), batched.probabilities,
                               atol=1e-5)


def test_patience_policy(bert_artifact):
    pipe = load(bert_artifact[0])
    every = pipe.run(TEXTS, FullDepth(), collect_all=True).all_logits
    res = pipe.run(TEXTS, PatiencePolicy(1))
    agree = every[0].argmax(-1) == every[1].argmax(-1)
    np.testing.assert_array_equal(res.exit_layers == pipe.exit_layers[1], agree)


def test_default_policy_is_the_best_cross_validated_rule(bert_artifact):
    pipe = load(bert_artifact[0])
    p, cal = pipe.manifest.policy, pipe.manifest.policy.calibration
    assert [c.kind for c in p.candidates] == list(RULES)
    budget = cal.max_accuracy_drop_pt
    ok = [c for c in p.candidates if c.cv_accuracy_drop_pt <= budget]
    best = max(ok, key=lambda c: c.cv_expected_speedup)
    assert pipe.default_policy == RuleFit(**best.model_dump()).policy()
    assert p.threshold == p.candidates[0].thresholds[0] == cal.chosen.threshold  # the global rule, kept
    assert len(cal.segment_cost_ms) == 3 and all(c > 0 for c in cal.segment_cost_ms)
    assert all(len(c.thresholds) == 2 and len(c.curve) == len(LAMBDAS) for c in p.candidates)


def test_manifest_with_one_global_threshold_still_loads(bert_artifact, tmp_path):
    """Artifacts written before per-exit rules: policy {kind: entropy, threshold, calibration} only."""
    art = tmp_path / "old"
    shutil.copytree(bert_artifact[0], art)
    m = json.loads((art / "manifest.json").read_text())
    m["policy"] = {k: m["policy"][k] for k in ("kind", "threshold", "calibration")}
    m["policy"]["kind"] = "entropy"
    (art / "manifest.json").write_text(json.dumps(m))
    pipe = load(art)
    assert pipe.default_policy == EntropyPolicy(m["policy"]["threshold"])
    assert len(pipe.run(TEXTS).labels) == len(TEXTS)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_per_exit_and_learned_rules_run_as_calibration_replays_them(bert_artifact, backend):
    pipe = load(bert_artifact[0], backend)
    every = pipe.run(TEXTS, FullDepth(), collect_all=True).all_logits
    ents = [entropy(e) for e in every[:-1]]
    per_exit = EntropyPolicy((float(np.median(ents[0])), float(np.max(ents[1])) + 1))  # exit 2 takes the rest
    res = pipe.run(TEXTS, per_exit, batch_size=3)
    np.testing.assert_array_equal(res.exit_layers == pipe.exit_layers[0], ents[0] < per_exit.threshold[0])
    assert (res.exit_layers <= pipe.exit_layers[1]).all()
    weights = tuple(tuple(float(x) for x in w) for w in fit_exit_model(every))
    scores = exit_scores("learned", every, weights)  # [exits, n]
    learned = LearnedExit(weights, (float(np.median(scores[0])), float(np.median(scores[1]))))
    for policy in (per_exit, learned):
        live = pipe.run(TEXTS, policy, batch_size=4)
        pred, seg = replay(policy, every)
        np.testing.assert_array_equal(pred, live.label_ids)
        np.testing.assert_array_equal(np.array(pipe.exit_layers)[seg], live.exit_layers)
    with pytest.raises(InputError, match="settings for 3 exits; this artifact has 2"):
        pipe.run(TEXTS, EntropyPolicy((0.1, 0.2, 0.3)))


@pytest.mark.parametrize("bad,match", [([], "empty"), ([""], "empty"), (["  "], "whitespace"),
                                       ("just a string", "list"), ([3], "int"), (None, "list")])
def test_bad_texts(bert_artifact, bad, match):
    with pytest.raises(InputError, match=match):
        load(bert_artifact[0]).run(bad)


def test_long_text_is_truncated_with_a_warning(bert_artifact):
    pipe = load(bert_artifact[0])
    with pytest.warns(UserWarning, match="1 of 2 texts were longer than 24 tokens"):
        res = pipe.run(["good " * 100, "bad"])
    assert res.stats.truncated == 1 and len(res.labels) == 2


def test_bad_policy_backend_device(bert_artifact):
    with pytest.raises(InputError, match="threshold"):
        EntropyPolicy(-1)
    with pytest.raises(InputError, match="patience"):
        PatiencePolicy(0)
    with pytest.raises(InputError, match="threshold"):
        EntropyPolicy(())
    with pytest.raises(InputError, match="threshold"):
        EntropyPolicy((0.1, float("nan")))
    with pytest.raises(InputError, match="weights"):
        LearnedExit(((1.0, 2.0),), 0.5)
    with pytest.raises(InputError, match="weight rows"):
        LearnedExit(((0.0,) * 6,), (0.5, 0.5))
    with pytest.raises(InputError, match="threshold"):
        LearnedExit(((0.0,) * 6,), 1.5)
    with pytest.raises(InputError, match="backend"):
        load(bert_artifact[0], "tensorrt")
    with pytest.raises(InputError, match="device"):
        load(bert_artifact[0], "openvino", device="NPU7")
    with pytest.raises(InputError, match="policy"):
        load(bert_artifact[0]).run(["x"], policy="fast")
    with pytest.raises(InputError, match="config must be a ClassifyConfig or EntropyPolicy"):
        load(bert_artifact[0]).run(["x"], "fast")
    with pytest.raises(InputError, match="unknown settings"):
        load(bert_artifact[0]).run(["x"], speed=3)
    with pytest.raises(InputError, match="batch_size"):
        load(bert_artifact[0]).run(["x"], batch_size=0)


def test_config_object_and_policy_shorthand_agree(bert_artifact):
    from dynexport.runtime import ClassifyConfig
    pipe = load(bert_artifact[0])
    a = pipe.run(TEXTS, ClassifyConfig(policy=PatiencePolicy(1), batch_size=3))
    b = pipe.run(TEXTS, PatiencePolicy(1), batch_size=3)
    assert a.labels == b.labels and a.exit_layers.tolist() == b.exit_layers.tolist()
