"""Early-exit export: a BERT-family encoder → early-exit segment graphs (OpenVINO IR + ONNX) + manifest.

Recipe + its trained checkpoint → one `Segment` per exit written as ONNX and OV IR →
optional NNCF compression per graph → threshold calibrated on the validation split with the
exported graphs themselves → manifest → atomic rename into the output dir.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import assets, data
from ..atomic import atomic_output_dir
from ..calibration import RULES, SweepPoint, best_rule, evaluate, fit_rule, sweep
from ..errors import AssetError
from ..manifest import (
    Calibration,
    Candidate,
    EarlyExitManifest,
    Graph,
    Policy,
    Source,
    TensorSpec,
    Tokenizer,
    sha256_file,
    write_manifest,
)
from ..models.encoder import Segment, load_trained, resolve_source, segments_for, tokenizer_json
from ..recipe import FORMATS, EarlyExitRecipe, validate_exits
from ..runtime import FullDepth, load
from .common import export_onnx, library_versions, onnx_to_openvino
from .quantize import compress_graph


def _specs(first: bool, hidden: int, classes: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    x = TensorSpec(name="input_ids", dtype="int64", shape=["batch", "seq"]) if first else \
        TensorSpec(name="hidden_states", dtype="float32", shape=["batch", "seq", hidden])
    ins = [x, TensorSpec(name="attention_mask", dtype="int64", shape=["batch", "seq"])]
    outs = [TensorSpec(name="hidden_states_out", dtype="float32", shape=["batch", "seq", hidden]),
            TensorSpec(name="logits", dtype="float32", shape=["batch", classes])]
    return ins, outs


def write_segment(seg: Segment, name: str, tmp: Path, hidden: int, classes: int, fp16: bool,
                  formats: tuple[str, ...]) -> tuple[list[TensorSpec], list[TensorSpec], dict[str, str]]:
    """One segment → `name.onnx` (+ `name.xml/.bin`). Returns input/output specs and files per backend."""
    ins, outs = _specs(seg.start == 0, hidden, classes)
    x = torch.randint(5, 100, (2, 8)) if seg.start == 0 else torch.randn(2, 8, hidden)  # [batch, seq(, h)]
    mask = torch.ones(2, 8, dtype=torch.int64)
    onnx_path = tmp / f"{name}.onnx"
    export_onnx(seg, (x, mask), onnx_path, [t.name for t in ins], [t.name for t in outs],
                {t.name: {0: "batch", 1: "seq"} for t in ins})
    files = {}
    if "openvino" in formats:
        onnx_to_openvino(onnx_path, tmp / f"{name}.xml", fp16)
        files["openvino"] = f"{name}.xml"
    if "onnxruntime" in formats:
        files["onnxruntime"] = f"{name}.onnx"
    else:
        onnx_path.unlink()
    return ins, outs, files


@torch.no_grad()
def parity(segs: list[Segment], pipe, texts: list[str]) -> float:
    """Max |logits| difference between the torch segments and the exported graphs on real texts."""
    b = pipe.encoder(texts)
    x, mask, worst = b.input_ids, b.attention_mask, 0.0
    for seg, graph, names in zip(segs, pipe.graphs, pipe.input_names):
        h_ref, logits_ref = seg(torch.from_numpy(x), torch.from_numpy(mask))
        out = graph(**dict(zip(names, (x, mask))))
        worst = max(worst, float(np.abs(out["logits"] - logits_ref.numpy()).max()))
        x = h_ref.numpy()  # feed the reference hidden states on, so errors do not compound
    return worst


def calibration_inputs(pipe, texts: list[str]) -> list[list[dict]]:
    """Per segment, real inputs (batch 1) for NNCF PTQ: texts run through the fp32 graphs."""
    items: list[list[dict]] = [[] for _ in pipe.graphs]
    for t in tqdm(texts, desc="PTQ calibration inputs", mininterval=5):
        b = pipe.encoder([t])
        x = b.input_ids
        for i, (graph, names) in enumerate(zip(pipe.graphs, pipe.input_names)):
            feed = dict(zip(names, (x, b.attention_mask)))
            items[i].append(feed)
            x = graph(**feed)["hidden_states_out"]
    return items


def full_depth_accuracy(pipe, examples, batch_size: int) -> float:
    """Accuracy (%) of the artifact at full depth on `examples`."""
    res = pipe.run([e.text for e in examples], FullDepth(), batch_size=batch_size, progress=True)
    return 100.0 * float(np.mean(res.label_ids == np.array([e.label for e in examples])))


def calibrate(root: Path, recipe: EarlyExitRecipe, splits: data.Splits, backend: str,
              reference: float | None = None) -> Policy:
    """Fit every exit rule (one entropy threshold, one per exit, the learned rule) on the validation
    split with the exported graphs; the default is the one with the best cross-validated speed-up.
    With a `reference` accuracy (fp32 full depth), the budget shrinks by this artifact's gap to it."""
    cfg = recipe.calibration
    pipe = load(root, backend)
    val_texts = [e.text for e in splits.val]
    res = pipe.run(val_texts, batch_size=cfg.batch_size, collect_all=True, progress=True)
    pipe.run(val_texts[:8], batch_size=1, collect_all=True)  # warm-up: first calls allocate
    timing = pipe.run(val_texts[: cfg.timing_samples], batch_size=1, collect_all=True).stats
    costs = [1e3 * s / c for s, c in zip(timing.segment_s, timing.segment_calls)]  # mean ms, batch 1
    labels, budget = np.array([e.label for e in splits.val]), cfg.max_accuracy_drop_pt
    full, points = sweep(res.all_logits, labels, costs)
    if reference is not None:
        budget = max(0.0, min(budget, budget - (reference - full)))
    fits = [fit_rule(k, res.all_logits, labels, costs, budget) for k in tqdm(RULES, desc="exit rules")]
    best, glob = best_rule(fits, budget), fits[0]
    acc, speed, frac = evaluate(glob.policy(), res.all_logits, labels, costs)
    chosen = SweepPoint(glob.thresholds[0], round(acc, 3), round(full - acc, 3), round(speed, 4), frac)
    cal = Calibration(split="val", samples=len(labels), backend=backend, accuracy_full=round(full, 3),
                      max_accuracy_drop_pt=round(budget, 3), segment_cost_ms=[round(c, 4) for c in costs],
                      accuracy_reference=None if reference is None else round(reference, 3),
                      curve=[p.to_json() for p in points], chosen=chosen.to_json())
    return Policy(kind="learned" if best.kind == "learned" else "entropy", threshold=glob.thresholds[0],
                  thresholds=None if best.kind == "entropy" else best.thresholds, weights=best.weights,
                  calibration=cal, candidates=[Candidate(**asdict(f)) for f in fits])


def export(recipe: EarlyExitRecipe, out_dir: Path, checkpoint: Path, *, overwrite: bool = False,
           formats: tuple[str, ...] = FORMATS) -> EarlyExitManifest:
    """Recipe + its trained checkpoint → artifact dir; returns the written manifest. Nothing is left
    behind on failure. (`methods.export("early-exit", ...)` trains the checkpoint first when needed.)"""
    src = resolve_source(recipe)
    config, splits = src.config, src.splits
    exits = validate_exits(recipe.exits.layers, config.num_hidden_layers)
    pooling = recipe.training.head_pooling
    model_hf, family, base, heads, info = load_trained(src.model_dir, checkpoint, pooling)
    if info["split"]["key_sha256"] != splits.info["key_sha256"]:
        raise AssetError(f"checkpoint {checkpoint} was trained on another split of the data than this recipe's")
    classes, q = len(splits.labels), recipe.quantization
    segs = segments_for(base, family, exits, heads, config.num_hidden_layers)
    with atomic_output_dir(out_dir, overwrite) as tmp:
        (tmp / "tokenizer").mkdir()
        shutil.copy2(tokenizer_json(src.model_dir), tmp / "tokenizer" / "tokenizer.json")
        graphs = []
        for i, seg in enumerate(tqdm(segs, desc="export segments")):
            ins, outs, files = write_segment(seg, f"seg{i}", tmp, config.hidden_size, classes,
                                             q.weight_format == "fp16" and q.quant_mode == "none", formats)
            graphs.append(Graph(name=f"seg{i}", files=files, inputs=ins, outputs=outs,
                                layers=(seg.start, seg.end), exit_layer=seg.end,
                                precision={b: "fp32" for b in files}))
        ds = recipe.dataset
        source = Source(model_id=recipe.model.id, model_type=family.name, model_sha256=info["model_sha"],
                        num_layers=config.num_hidden_layers, dataset=ds.model_dump(),
                        dataset_sha256=sha256_file(assets.resolve_dataset(ds.id)), split=splits.info,
                        checkpoint=checkpoint.name, training=info["recipe_training"] | {"head_pooling": pooling})
        manifest = EarlyExitManifest(
            method="bert_exits", created_utc=dt.datetime.now(dt.UTC).isoformat(), exits=exits,
            labels=list(splits.labels), weight_format=q.weight_format, quant_mode=q.quant_mode, graphs=graphs,
            source=source, versions=library_versions(),
            tokenizer=Tokenizer(file="tokenizer/tokenizer.json", max_length=recipe.model.max_length,
                                pad_id=config.pad_token_id or 0))
        write_manifest(tmp, manifest)
        check_texts = [e.text for e in splits.val[:16]]
        par = {b: parity(segs, load(tmp, b), check_texts) for b in formats}
        manifest = manifest.model_copy(update={"parity": par})
        backend, reference = "openvino" if "openvino" in formats else "onnxruntime", None
        if q.weight_format in ("int8", "int4") or q.quant_mode == "int8":
            if recipe.calibration.budget_reference == "fp32":
                reference = full_depth_accuracy(load(tmp, backend), splits.val, recipe.calibration.batch_size)
            manifest = _compress_all(tmp, manifest, recipe, splits, formats)
        write_manifest(tmp, manifest)
        manifest = manifest.model_copy(update={"policy": calibrate(tmp, recipe, splits, backend, reference)})
        manifest = write_manifest(tmp, manifest)
    return manifest


def _compress_all(tmp: Path, manifest: EarlyExitManifest, recipe: EarlyExitRecipe, splits: data.Splits,
                  formats: tuple[str, ...]) -> EarlyExitManifest:
    """NNCF per graph and backend; PTQ calibration inputs come from the train split via fp32 graphs."""
    q = recipe.quantization
    cal = None
    if q.quant_mode == "int8":
        texts = [e.text for e in splits.train[: q.calibration_samples]]
        cal = calibration_inputs(load(tmp, "openvino" if "openvino" in formats else "onnxruntime"), texts)
    graphs = []
    for i, g in enumerate(tqdm(manifest.graphs, desc="NNCF compression")):
        prec = {b: compress_graph(tmp / f, b, q.weight_format, q.quant_mode, cal[i] if cal else None)
                for b, f in g.files.items()}
        graphs.append(g.model_copy(update={"precision": prec}))
    return manifest.model_copy(update={"graphs": graphs})
