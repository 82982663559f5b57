"""NNCF: INT8 PTQ and INT8/INT4 weight compression put quantized nodes into both backends' graphs."""

import numpy as np
import onnx
import openvino as ov
import pytest

from conftest import export_tiny
from dynexport.runtime import FullDepth, load


def ov_op_counts(xml):
    counts = {}
    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
    return counts


def ov_low_precision_constants(xml):
    return sum(op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() in ("u8", "i8", "u4", "i4")
               for op in ov.Core().read_model(str(xml)).get_ordered_ops())


def onnx_op_counts(path):
    counts = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


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
    for backend in ("openvino", "onnxruntime"):
        res = load(ptq_artifact, backend).run(["good day", "awful flight"], FullDepth())
        assert np.isfinite(res.probabilities).all()


@pytest.mark.parametrize("fmt,label", [("int8", "int8-weights"), ("int4", "int4-weights")])
def test_weight_compression(tiny, fmt, label):
    art = export_tiny(tiny, "bert", f"bert-w{fmt}", overrides={"quantization.weight_format": fmt})[0]
    pipe = load(art)
    for g in pipe.manifest.graphs:
        assert g.precision == {"openvino": label, "onnxruntime": label}
        assert ov_low_precision_constants(art / g.files["openvino"]) >= 4
        ops = onnx_op_counts(art / g.files["onnxruntime"])
        assert ops.get("DequantizeLinear", 0) + ops.get("MatMulNBits", 0) >= 4, ops
    res = load(art, "onnxruntime").run(["good day"], FullDepth())
    assert np.isfinite(res.probabilities).all()
