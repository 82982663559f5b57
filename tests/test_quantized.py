"""NNCF: INT8 PTQ and INT8/INT4 weight compression put quantized nodes into both backends' graphs, and
their outputs stay within a stated bound of the fp32 graphs' (same checkpoint, same texts).

Bounds, max |p − p_fp32| over the class probabilities of every exit (measured on the tiny random model:
PTQ 0.113, int8 weights 0.0046, int4 0.0156, shallow exits the worst): PTQ 0.25, int8 weights 0.02,
int4 weights 0.05; every final prediction the same."""

import numpy as np
import pytest
from helpers import export_tiny, onnx_op_counts, ov_low_precision_constants, ov_op_counts

from dynexport.runtime import FullDepth, load

TEXTS = ["good day and my phone is great", "awful flight", "blue table monday", "the paper was so sad",
         "love it", "a train", "my day was poor and bad and sad", "nice", "this is it", "happy happy"]
BOUND = {"int8": 0.25, "int8-weights": 0.02, "int4-weights": 0.05}


def _within_bound_of_fp32(art, fp32_art, label):
    for backend in ("openvino", "onnxruntime"):
        got = load(art, backend).run(TEXTS, FullDepth(), collect_all=True)
        ref = load(fp32_art, backend).run(TEXTS, FullDepth(), collect_all=True)
        for q, r in zip(got.all_logits, ref.all_logits):
            pq, pr = (np.exp(x) / np.exp(x).sum(-1, keepdims=True) for x in (q, r))
            assert np.abs(pq - pr).max() <= BOUND[label], (label, backend, np.abs(pq - pr).max())
        assert got.label_ids.tolist() == ref.label_ids.tolist()


@pytest.fixture(scope="session")
def ptq_artifact(tiny):
    return export_tiny(tiny, "bert", "bert-ptq", overrides={"quantization.quant_mode": "int8"})[0]


def test_int8_ptq_graphs_have_quantize_nodes(ptq_artifact, bert_artifact):
    pipe = load(ptq_artifact)
    for g in pipe.manifest.graphs:
        assert g.precision == {"openvino": "int8", "onnxruntime": "int8"}
        fq = ov_op_counts(ptq_artifact / g.files["openvino"]).get("FakeQuantize", 0)
        assert fq >= 4, f"{g.name}: {fq} FakeQuantize nodes"
        q = onnx_op_counts(ptq_artifact / g.files["onnxruntime"])
        assert q.get("QuantizeLinear", 0) >= 4 and q.get("DequantizeLinear", 0) >= 4
    fp32 = bert_artifact[0] / "seg1.xml"
    assert ov_op_counts(fp32).get("FakeQuantize", 0) == 0
    _within_bound_of_fp32(ptq_artifact, bert_artifact[0], "int8")


@pytest.mark.parametrize("fmt,label", [("int8", "int8-weights"), ("int4", "int4-weights")])
def test_weight_compression(tiny, bert_artifact, fmt, label):
    art = export_tiny(tiny, "bert", f"bert-w{fmt}", overrides={"quantization.weight_format": fmt})[0]
    pipe = load(art)
    for g in pipe.manifest.graphs:
        assert g.precision == {"openvino": label, "onnxruntime": label}
        assert ov_low_precision_constants(art / g.files["openvino"]) >= 4
        ops = onnx_op_counts(art / g.files["onnxruntime"])
        assert ops.get("DequantizeLinear", 0) + ops.get("MatMulNBits", 0) >= 4, ops
    _within_bound_of_fp32(art, bert_artifact[0], label)


def test_budget_against_fp32_pays_the_quantization_drop_first(tiny, bert_artifact):
    art = export_tiny(tiny, "bert", "bert-ptq-vs-fp32", overrides={
        "quantization.quant_mode": "int8", "calibration.budget_reference": "fp32",
        "calibration.max_accuracy_drop_pt": 5.0})[0]
    cal = load(art).manifest.policy.calibration
    fp32 = load(bert_artifact[0]).manifest.policy.calibration
    assert cal.accuracy_reference == pytest.approx(fp32.accuracy_full, abs=1e-3)  # the fp32 graphs, same split
    gap = cal.accuracy_reference - cal.accuracy_full
    assert cal.max_accuracy_drop_pt == pytest.approx(max(0.0, min(5.0, 5.0 - gap)), abs=1e-3)
    chosen = load(art).manifest.policy.calibration.chosen
    assert chosen.accuracy_drop_pt <= cal.max_accuracy_drop_pt + 1e-9
    assert fp32.accuracy_reference is None
