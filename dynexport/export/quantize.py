"""NNCF compression of one saved graph, for either backend: weight-only INT8/INT4, or INT8 PTQ.

`compress_graph(path, backend, weight_format, quant_mode, calibration)` rewrites the graph file in
place (through a temp name) and returns the precision label recorded in the manifest;
`compress_weights(model, weight_format)` compresses an OpenVINO model before it is first saved.
Calibration items are dicts of input name → numpy array, produced by the caller from real data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import nncf

from ..errors import DynexportError


def precision_label(weight_format: str, quant_mode: str, backend: str) -> str:
    if quant_mode == "int8":
        return "int8"
    if weight_format in ("int8", "int4"):
        return f"{weight_format}-weights"
    if weight_format == "fp16" and backend == "openvino":
        return "fp16"
    return "fp32"  # fp16 ONNX graphs are not written: CPU execution providers compute in fp32


def _weight_mode(weight_format: str):
    return {"int8": nncf.CompressWeightsMode.INT8_ASYM, "int4": nncf.CompressWeightsMode.INT4_SYM}[weight_format]


def _compress(model, weight_format: str, quant_mode: str, calibration: list[dict] | None, transformer: bool,
              onnx_graph: bool = False):
    if quant_mode == "int8":
        if not calibration:
            raise DynexportError("--quant-mode int8 needs calibration samples (calibration_samples > 0)")
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
        return nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration),
                             model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                             advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE))
    kwargs = {}
    if onnx_graph:  # NNCF writes Conv weight scales ORT rejects ("scale must be 1D"): compress MatMul/Gemm only
        kwargs["ignored_scope"] = nncf.IgnoredScope(types=["Conv", "ConvTranspose"], validate=False)
    if weight_format == "int4":  # small layers fall back to INT8 rather than failing on group size
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode
        kwargs.update(group_size=64, ratio=1.0, advanced_parameters=AdvancedCompressionParameters(
            group_size_fallback_mode=GroupSizeFallbackMode.IGNORE))
    return nncf.compress_weights(model, mode=_weight_mode(weight_format), **kwargs)


def compress_weights(model, weight_format: str):
    """Weight-only compression of an in-memory OpenVINO model (int8 / int4; anything else is returned
    as is): the export compresses before its first save, so a 1.5B graph never lands on disk in fp32."""
    if weight_format not in ("int8", "int4"):
        return model
    return _compress(model, weight_format, "none", None, True)


def compress_graph(path: Path, backend: str, weight_format: str, quant_mode: str,
                   calibration: Iterable[dict] | None = None, transformer: bool = True) -> str:
    """Compress the graph at `path` (.xml for openvino, .onnx for onnxruntime) in place. `transformer`
    selects NNCF's transformer PTQ scheme (SmoothQuant, attention-aware ignores); False for conv nets."""
    label = precision_label(weight_format, quant_mode, backend)
    if label in ("fp32", "fp16"):
        return label
    calibration = list(calibration) if calibration is not None else None
    tmp = path.with_name(path.stem + ".q" + path.suffix)
    if backend == "openvino":
        import openvino as ov
        model = ov.Core().read_model(str(path))
        compressed = _compress(model, weight_format, quant_mode, calibration, transformer)
        ov.save_model(compressed, str(tmp), compress_to_fp16=False)
        del model
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
    else:
        import onnx
        model = onnx.load(str(path))
        onnx.save(_compress(model, weight_format, quant_mode, calibration, transformer, onnx_graph=True), str(tmp))
    os.replace(tmp, path)
    return label
