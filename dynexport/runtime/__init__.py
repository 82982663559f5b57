"""Torch-free runtime: `load(artifact_dir, backend, device)` → the pipeline for the artifact's method.

Imports only numpy, openvino / onnxruntime, tokenizers and pydantic (import contracts and a test that
runs it with torch blocked keep it so). Every pipeline call takes `(inputs, config=None, **overrides)`
and returns a result with its outputs and `.stats`:

    EarlyExitPipeline.run(texts, ClassifyConfig | exit policy)         → Result (labels, exit layers)
    LMPipeline / SpeculativePipeline / EaglePipeline.generate(prompt, GenerationConfig, streamer) → GenResult
    StepSaverPipeline.generate(prompts, ImageConfig | step policy)      → ImageResult
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, ManifestError
from ..manifest import read_manifest
from .diffusion import ImageConfig, ImageResult, ImageStats, StepSaverPipeline
from .eagle import EaglePipeline
from .early_exit import ClassifyConfig, EarlyExitPipeline, Result, Stats
from .generation import GenerationConfig, GenResult, GenStats
from .graph import BACKENDS
from .lm import LMPipeline
from .policies import (
    STEP_SHORTHANDS,
    AdaptiveDraft,
    AdaptiveSkip,
    CombinedSteps,
    EntropyPolicy,
    FixedDraft,
    FixedSteps,
    FullDepth,
    InLoopStop,
    LearnedExit,
    PatiencePolicy,
    PredictedSteps,
    TreeCfg,
)
from .speculative import SpeculativePipeline

# The artifact → pipeline mapping (manifest `method` → class); the method registry (methods.py) reads it.
PIPELINES = {"bert_exits": EarlyExitPipeline, "lm": LMPipeline, "speculative": SpeculativePipeline, "eagle": EaglePipeline,
             "stepsaver": StepSaverPipeline}
Pipeline = EarlyExitPipeline | LMPipeline | SpeculativePipeline | EaglePipeline | StepSaverPipeline

__all__ = ["load", "PIPELINES", "EarlyExitPipeline", "ClassifyConfig", "Result", "Stats", "EntropyPolicy",
           "LearnedExit", "PatiencePolicy", "FullDepth", "LMPipeline", "SpeculativePipeline", "EaglePipeline",
           "GenerationConfig", "GenResult", "GenStats", "FixedDraft", "AdaptiveDraft", "TreeCfg", "StepSaverPipeline",
           "ImageConfig", "ImageResult", "ImageStats", "FixedSteps", "PredictedSteps",
           "InLoopStop", "AdaptiveSkip", "CombinedSteps", "STEP_SHORTHANDS"]


def load(artifact_dir: str | Path, backend: str = "openvino", device: str = "CPU",
         threads: int | None = None) -> Pipeline:
    """Verify the artifact (manifest schema, paths, sha256 of every file) and compile its graphs."""
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r} is not supported; use one of {', '.join(BACKENDS)}")
    root = Path(artifact_dir)
    if not root.is_dir():
        raise ManifestError(f"artifact dir {root} does not exist")
    manifest = read_manifest(root)
    missing = [g.name for g in manifest.all_graphs() if backend not in g.files]
    if missing:
        have = sorted(set.intersection(*(set(g.files) for g in manifest.all_graphs())))
        raise InputError(f"artifact {root} has no {backend} graphs for {missing}; it has {', '.join(have) or 'none'} "
                         "(export with --formats to add one)")
    return PIPELINES[manifest.method](root, manifest, backend, device, threads)
