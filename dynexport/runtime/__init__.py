"""Torch-free runtime: `load(artifact_dir, backend, device)` → a pipeline for the artifact's method.

Imports only numpy, openvino / onnxruntime, tokenizers and pydantic (a test runs it with torch blocked).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, ManifestError
from ..manifest import read_manifest
from .early_exit import EarlyExitPipeline, Result, Stats
from .graph import BACKENDS
from .policies import AdaptiveDraft, EntropyPolicy, FixedDraft, FullDepth, PatiencePolicy
from .diffusion import ImageResult, ImageStats, StepSaverPipeline
from .eagle import EaglePipeline, TreeCfg
from .speculative import GenResult, GenStats, SpeculativePipeline

__all__ = ["load", "EarlyExitPipeline", "Result", "Stats", "EntropyPolicy", "PatiencePolicy", "FullDepth",
           "SpeculativePipeline", "GenResult", "GenStats", "FixedDraft", "AdaptiveDraft", "StepSaverPipeline",
           "ImageResult", "ImageStats", "EaglePipeline", "TreeCfg"]


def load(artifact_dir: str | Path, backend: str = "openvino", device: str = "CPU",
         threads: int | None = None) -> EarlyExitPipeline | SpeculativePipeline | EaglePipeline | StepSaverPipeline:
    """Verify the artifact (manifest schema, paths, sha256 of every file) and compile its graphs."""
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r} is not supported; use one of {', '.join(BACKENDS)}")
    root = Path(artifact_dir)
    if not root.is_dir():
        raise ManifestError(f"artifact dir {root} does not exist")
    manifest = read_manifest(root)
    if manifest.method == "bert_exits":
        return EarlyExitPipeline(root, manifest, backend, device, threads)
    if manifest.method == "speculative":
        return SpeculativePipeline(root, manifest, backend, device, threads)
    if manifest.method == "eagle":
        return EaglePipeline(root, manifest, backend, device, threads)
    if manifest.method == "stepsaver":
        return StepSaverPipeline(root, manifest, backend, device, threads)
    raise ManifestError(f"{root}: unknown method {manifest.method!r}")  # pragma: no cover (schema-checked)
