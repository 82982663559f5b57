"""Graph writing shared by every method: torch → ONNX (dynamo) → OpenVINO IR, and library versions.

Export writes into a hidden temp dir beside the output (`atomic.atomic_output_dir`) and renames it into
place only when everything (graphs, manifest, calibration) is done, so an interrupted export leaves
nothing behind.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import platform
import warnings
from pathlib import Path

import torch

VERSIONED = ("torch", "transformers", "openvino", "onnx", "onnxscript", "onnxruntime", "nncf", "peft",
             "tokenizers", "openvino-tokenizers", "numpy", "dynexport")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _quiet_exporter() -> None:
    """The dynamo exporter logs optional-op registrations (torchvision) at WARNING; they are noise."""
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def export_onnx(module: torch.nn.Module, args: tuple, path: Path, input_names: list[str],
                output_names: list[str], dynamic: dict[str, dict[int, str]] | None = None,
                shapes: tuple | None = None) -> None:
    """torch module → single-file ONNX via torch.export (dynamo); `dynamic`: input → {axis: name},
    or `shapes`: torch.export dynamic_shapes given directly (for modules with *args)."""
    _quiet_exporter()
    if shapes is None:
        dims: dict[str, torch.export.Dim] = {}
        shapes = tuple({ax: dims.setdefault(n, torch.export.Dim(n)) for ax, n in dynamic.get(name, {}).items()}
                       for name in input_names)
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=True, input_names=input_names,
                          output_names=output_names, dynamic_shapes=shapes, external_data=False,
                          optimize=True, verbose=False)


def onnx_to_openvino(onnx_path: Path, xml_path: Path, fp16: bool):
    """ONNX file → OpenVINO IR (.xml + .bin); weights stay fp32 unless `fp16`. Returns the ov.Model."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=fp16)
    return model
