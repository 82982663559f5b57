"""StepSaver export: its graphs: text encoder (sentence embedding), one UNet denoising step, step predictor.

    text_encoder : input_ids, attention_mask [B, L] int64          → text_embedding [B, D]  (D = 384, MiniLM)
    unet         : sample [B, 3, S, S], timestep [B] f32, context [B, 1, D] → noise [B, 3, S, S]
    predictor    : embedding [B, D]                                  → probs [B, C] over the step counts

Each graph is written as ONNX (dynamo exporter) and OpenVINO IR; NNCF compresses per graph. The
scheduler config (train timesteps, β schedule), the guidance scale and the step-count classes go in
the manifest; the denoising loop itself is numpy in the runtime.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import paths
from ..atomic import atomic_output_dir
from ..errors import AssetError, InputError
from ..manifest import (
    DiffusionManifest,
    GraphSpec,
    StepControlInfo,
    StepPredictorInfo,
    TensorSpec,
    Tokenizer,
    sha256_file,
    write_manifest,
)
from ..models.encoder import tokenizer_json
from ..models.sentence import MAX_TOKENS, caption_embeddings, load_sentence_encoder
from ..models.step_predictor import load_predictor
from ..models.unet import UNetStep, load_unet, noise_scheduler, to_unit
from ..recipe import FORMATS, StepSaverRecipe
from ..runtime.graph import Graph
from .common import export_onnx, library_versions, onnx_to_openvino
from .quantize import compress_graph

STEP_CONTROL_FILE = "step_control.json"


def _spec(name: str, dtype: str, shape: list) -> TensorSpec:
    return TensorSpec(name=name, dtype=dtype, shape=shape)


def _write_graph(module: nn.Module, args: tuple, name: str, tmp: Path, ins: list[TensorSpec],
                 outs: list[TensorSpec], weight_format: str, quant_mode: str, calibration,
                 formats: tuple[str, ...], transformer: bool = True) -> GraphSpec:
    """module → name.onnx + name.xml, compressed per backend; returns its manifest entry."""
    dynamic = {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)} for s in ins}
    export_onnx(module, args, tmp / f"{name}.onnx", [s.name for s in ins], [s.name for s in outs], dynamic)
    onnx_to_openvino(tmp / f"{name}.onnx", tmp / f"{name}.xml", fp16=weight_format == "fp16")
    files = {"openvino": f"{name}.xml", "onnxruntime": f"{name}.onnx"}
    precision = {b: compress_graph(tmp / f, b, weight_format, quant_mode, calibration, transformer)
                 for b, f in files.items()}
    return GraphSpec(name=name, files=files, inputs=ins, outputs=outs, precision=precision)


def _text_graph(text_encoder: str, tmp: Path, weight_format: str, formats) -> tuple[GraphSpec, Tokenizer, nn.Module]:
    enc, src = load_sentence_encoder(text_encoder)
    dim = enc.bert.config.hidden_size
    ids, mask = torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)
    g = _write_graph(enc, (ids, mask), "text_encoder", tmp,
                     [_spec("input_ids", "int64", ["batch", "seq"]), _spec("attention_mask", "int64", ["batch", "seq"])],
                     [_spec("text_embedding", "float32", ["batch", dim])], weight_format, "none", None, formats)
    (tmp / "tokenizer").mkdir()
    (tmp / "tokenizer" / "tokenizer.json").write_bytes(tokenizer_json(src).read_bytes())
    pad = json.loads((src / "config.json").read_text()).get("pad_token_id") or 0
    return g, Tokenizer(file="tokenizer/tokenizer.json", max_length=MAX_TOKENS, pad_id=pad), enc


def _unet_graph(unet: nn.Module, ucfg, tmp: Path, weight_format: str, quant_mode: str, calibration,
                formats) -> GraphSpec:
    size, dim = ucfg.size, ucfg.context_dim
    args = (torch.randn(2, 3, size, size), torch.tensor([999.0, 10.0]), torch.randn(2, 1, dim))
    return _write_graph(UNetStep(unet), args, "unet", tmp,
                        [_spec("sample", "float32", ["batch", 3, size, size]), _spec("timestep", "float32", ["batch"]),
                         _spec("context", "float32", ["batch", 1, dim])],
                        [_spec("noise", "float32", ["batch", 3, size, size])], weight_format, quant_mode, calibration,
                        formats, transformer=False)


def _unet_calibration(ucfg, n: int = 64) -> list[dict]:
    """Real UNet inputs for INT8 PTQ: noisy samples at spread timesteps with real caption embeddings."""
    from ..emoji_data import load_emoji
    data = load_emoji(ucfg.size)
    rows = np.random.default_rng(0).choice(len(data.captions), n, replace=False)
    emb = caption_embeddings([data.captions[i] for i in rows], ucfg.text_encoder)
    x0 = to_unit(data.images[rows])
    ac = noise_scheduler(ucfg).alphas_cumprod
    t = torch.linspace(0, len(ac) - 1, n).long()
    a = ac[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    return [{"sample": xt[i:i + 1].numpy(), "timestep": t[i:i + 1].float().numpy(),
             "context": emb[i:i + 1, None].numpy()} for i in range(n)]


def _predictor_graph(src: Path, dim: int, tmp: Path, formats) -> tuple[GraphSpec, StepPredictorInfo, nn.Module]:
    model, info = load_predictor(src)
    if model.dim != dim:
        raise AssetError(f"step predictor {src} takes {model.dim}-d embeddings; this UNet's text encoder gives {dim}-d")
    g = _write_graph(model, (torch.randn(2, dim),), "predictor", tmp, [_spec("embedding", "float32", ["batch", dim])],
                     [_spec("probs", "float32", ["batch", len(info.counts)])], "fp32", "none", None, formats)
    return g, info, model


@torch.no_grad()
def _parity(tmp: Path, graphs: list[GraphSpec], modules: dict[str, tuple[nn.Module, tuple]]) -> dict[str, float]:
    """Max |graph − torch| for every graph and backend on the export example inputs."""
    out = {}
    for g in graphs:
        module, args = modules[g.name]
        ref = module(*args).numpy()
        feed = {s.name: a.numpy() for s, a in zip(g.inputs, args)}
        for backend, f in g.files.items():
            got = Graph(tmp / f, backend)(**feed)[g.outputs[0].name]
            out[f"{g.name}/{backend}"] = float(np.abs(got - ref).max())
    return out


def check_fits(what: str, trained: dict, where: Path, unet_sha: str, sampling: dict) -> None:
    """Step labels and calibrations were made with one UNet, scheduler, full step count and guidance;
    they mean nothing for another. Records that name none of these are not checked."""
    want = {**sampling, "unet_sha256": unet_sha}
    bad = [f"{k}: made with {trained[k]!r}, export asks {v!r}" for k, v in want.items()
           if trained.get(k) is not None and trained[k] != v]
    if bad:
        raise InputError(f"{what} {where} does not fit this export ({'; '.join(bad)}); export with its settings "
                         "or redo it (scripts/make_step_labels.py, scripts/calibrate_step_control.py)")


def check_predictor_fits(predictor_dir: Path, unet_sha: str, sampling: dict) -> None:
    trained = json.loads((predictor_dir / "predictor.json").read_text())["info"].get("training", {})
    check_fits("step predictor", trained, predictor_dir, unet_sha, sampling)


def load_step_control(src: Path, unet_sha: str, sampling: dict) -> StepControlInfo:
    """The in-loop policies' calibration (step_control.json), refused for another UNet or sampler."""
    try:
        info = StepControlInfo.model_validate_json((src / STEP_CONTROL_FILE).read_text())
    except (OSError, ValueError) as e:
        raise AssetError(f"step-control calibration {src / STEP_CONTROL_FILE} is unreadable: {e}") from None
    check_fits("step-control calibration", info.training, src, unet_sha, sampling)
    return info


def export(recipe: StepSaverRecipe, out: Path, *, overwrite: bool = False,
           formats: tuple[str, ...] = FORMATS) -> DiffusionManifest:
    """Recipe (UNet, step predictor, sampler, precision) → a StepSaver artifact at `out`."""
    unet_dir = paths.resolve_weights(recipe.models.unet, "stepsaver", "UNet")
    predictor_dir = (paths.resolve_weights(recipe.models.predictor, "stepsaver", "step predictor")
                     if recipe.models.predictor else None)
    sampling, q = recipe.sampling, recipe.quantization
    unet, ucfg = load_unet(unet_dir)
    meta = json.loads((unet_dir / "unet.json").read_text())
    unet_sha = sha256_file(unet_dir / "unet.safetensors")
    fit = {"scheduler": sampling.scheduler, "full_steps": sampling.full_steps, "guidance": sampling.guidance_scale}
    if predictor_dir:
        check_predictor_fits(predictor_dir, unet_sha, fit)
    control = (load_step_control(paths.resolve_weights(recipe.models.step_control, "stepsaver", "step-control "
                                                       "calibration"), unet_sha, fit)
               if recipe.models.step_control else None)
    calib = _unet_calibration(ucfg) if q.quant_mode == "int8" else None
    with atomic_output_dir(out, overwrite) as tmp:
        text, tok, enc = _text_graph(ucfg.text_encoder, tmp, q.weight_format, formats)
        ug = _unet_graph(unet, ucfg, tmp, q.weight_format, q.quant_mode, calib, formats)
        pg, pinfo, pred = _predictor_graph(predictor_dir, ucfg.context_dim, tmp, formats) if predictor_dir else (None,) * 3
        manifest = DiffusionManifest(
            method="stepsaver", created_utc=dt.datetime.now(dt.UTC).isoformat(),
            weight_format=q.weight_format, quant_mode=q.quant_mode, tokenizer=tok, text_encoder=text, unet=ug,
            predictor=pg, step_predictor=pinfo, step_control=control, image_size=ucfg.size,
            scheduler={"train_timesteps": ucfg.train_timesteps, "beta_schedule": ucfg.beta_schedule,
                       "prediction_type": "epsilon", "kind": sampling.scheduler},
            full_steps=sampling.full_steps, max_steps=ucfg.train_timesteps, guidance_scale=sampling.guidance_scale,
            source={"unet_sha256": unet_sha, "unet": meta,
                    "predictor_sha256": sha256_file(predictor_dir / "predictor.safetensors")
                    if predictor_dir else None},
            versions=library_versions())
        write_manifest(tmp, manifest)
        if q.weight_format == "fp32" and q.quant_mode == "none":
            examples = _examples(enc, unet, ucfg, pred)
            manifest = write_manifest(tmp, manifest.model_copy(
                update={"parity": _parity(tmp, manifest.all_graphs(), examples)}))
    return manifest


def _examples(enc: nn.Module, unet: nn.Module, ucfg, pred: nn.Module | None) -> dict[str, tuple[nn.Module, tuple]]:
    """Inputs for the parity check: a padded token batch, three timesteps across the schedule, embeddings."""
    g = torch.Generator().manual_seed(0)
    vocab = enc.bert.config.vocab_size
    ids = torch.randint(min(1000, vocab // 2), min(5000, vocab), (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    d = ucfg.context_dim
    ex = {"text_encoder": (enc, (ids, mask)),
          "unet": (UNetStep(unet), (torch.randn(3, 3, ucfg.size, ucfg.size, generator=g),
                                    torch.tensor([999.0, 500.0, 3.0]), torch.randn(3, 1, d, generator=g)))}
    if pred is not None:
        ex["predictor"] = (pred, (nn.functional.normalize(torch.randn(3, d, generator=g), dim=-1),))
    return ex
