"""`dynexport` command line: argument parsing only; the work is done by export/, runtime/, evaluate.

Conventions of optimum-cli: positional output dir, --weight-format, --quant-mode, --device.
User mistakes (DynexportError) print one line on stderr and exit with status 2, no traceback.
"""

from __future__ import annotations

import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import DynexportError, RecipeError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Export transformers as segmented graphs and run them with dynamic execution.")
console = Console(width=max(100, Console().width))


class WeightFormat(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"
    int4 = "int4"


class QuantMode(str, Enum):
    none = "none"
    int8 = "int8"


class Backend(str, Enum):
    openvino = "openvino"
    onnxruntime = "onnxruntime"


class PolicyName(str, Enum):
    calibrated = "calibrated"
    entropy = "entropy"
    patience = "patience"
    full = "full"


def parse_exits(value: Optional[str]) -> Optional[list[int]]:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise RecipeError(f"--exits must be comma-separated layer numbers like 4,8, got {value!r}") from None


@app.command()
def bert(
    output: Annotated[Optional[Path], typer.Argument(help="artifact dir [default: exported_models/bert-exits-<exits>]")] = None,
    exits: Annotated[Optional[str], typer.Option(help="comma-separated 1-based exit layers, e.g. 4,8")] = None,
    recipe: Annotated[Optional[Path], typer.Option(help="recipe TOML [default: recipes/bert_early_exit.toml]")] = None,
    model: Annotated[Optional[str], typer.Option(help="embedded model id or a local BERT/MPNet checkpoint dir")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="embedded dataset id or a CSV/JSONL file")] = None,
    weight_format: Annotated[Optional[WeightFormat], typer.Option(help="graph weight precision (NNCF for int8/int4)")] = None,
    quant_mode: Annotated[Optional[QuantMode], typer.Option(help="int8: NNCF post-training quantization per segment")] = None,
    max_train_examples: Annotated[Optional[int], typer.Option(help="subsample the train split (0 = all)")] = None,
    scheme: Annotated[Optional[str], typer.Option(help="exit training scheme: joint | deebert")] = None,
    formats: Annotated[str, typer.Option(help="backends to write graphs for")] = "openvino,onnxruntime",
    overwrite: Annotated[bool, typer.Option(help="replace an existing output dir")] = False,
):
    """Export a BERT-family encoder as early-exit segment graphs (OpenVINO IR + ONNX)."""
    from .export.bert_exits import export
    from .recipe import load_recipe

    r = load_recipe(recipe, {"exits.layers": parse_exits(exits), "model.id": model, "dataset.id": dataset,
                             "quantization.weight_format": weight_format and weight_format.value,
                             "quantization.quant_mode": quant_mode and quant_mode.value,
                             "training.max_train_examples": max_train_examples, "training.scheme": scheme})
    fmts = tuple(f.strip() for f in formats.split(",") if f.strip())
    bad = [f for f in fmts if f not in ("openvino", "onnxruntime")]
    if bad or not fmts:
        raise RecipeError(f"--formats takes openvino and/or onnxruntime, got {formats!r}")
    out = output or Path("exported_models") / f"bert-exits-{'-'.join(map(str, r.exits.layers))}"
    m = export(r, out, overwrite=overwrite, formats=fmts)
    c = m.policy.calibration
    console.print(f"[green]wrote[/green] {out}: {len(m.graphs)} segments, exits {m.exits}, "
                  f"threshold {m.policy.threshold:.4f} (val: full {c.accuracy_full:.2f}% → "
                  f"{c.chosen.accuracy:.2f}%, expected speed-up {c.chosen.expected_speedup:.2f}x)")


def _policy(name: PolicyName, threshold: Optional[float], patience: int):
    from .runtime import EntropyPolicy, FullDepth, PatiencePolicy
    if name == PolicyName.entropy:
        if threshold is None:
            raise RecipeError("--policy entropy needs --threshold")
        return EntropyPolicy(threshold)
    return {PolicyName.patience: PatiencePolicy(patience), PolicyName.full: FullDepth(),
            PolicyName.calibrated: None}[name]


@app.command()
def classify(
    artifact: Annotated[Path, typer.Argument(help="artifact dir written by `dynexport bert`")],
    texts: Annotated[list[str], typer.Argument(help="one or more texts")],
    backend: Backend = Backend.openvino,
    device: str = "CPU",
    policy: PolicyName = PolicyName.calibrated,
    threshold: Optional[float] = None,
    patience: int = 2,
):
    """Classify texts with early exit; prints label, confidence and exit layer per text."""
    from .runtime import load
    pipe = load(artifact, backend.value, device)
    res = pipe.run(list(texts), _policy(policy, threshold, patience))
    for t, lab, p, layer in zip(texts, res.labels, res.probabilities, res.exit_layers):
        console.print(f"{lab:>10s}  p={p.max():.3f}  exit@layer {layer:>2d}  {t[:80]}", markup=False)
    console.print(f"[dim]{res.stats.total_s * 1e3:.1f} ms, segments entered: {res.stats.segment_samples}[/dim]")


@app.command()
def evaluate(
    artifact: Annotated[Path, typer.Argument(help="artifact dir written by `dynexport bert`")],
    backend: Backend = Backend.openvino,
    split: str = "test",
    limit: Annotated[Optional[int], typer.Option(help="first N examples of the split")] = None,
    batch_size: int = 1,
    repeats: int = 3,
):
    """Accuracy and median wall time of full depth vs the calibrated early exit on the held-out split."""
    from .evaluate import load_and_measure
    from .runtime import FullDepth, load
    pipe = load(artifact, backend.value)
    policies = {"full depth": FullDepth(), "early exit": pipe.default_policy}
    table_rows = load_and_measure(artifact, backend.value, policies, split, limit, batch_size, repeats, pipe)
    m = pipe.manifest
    table = Table(title=f"{artifact} · {m.source.model_id} · exits {m.exits} · {backend.value} · "
                        f"{m.graphs[0].precision[backend.value]} · batch {batch_size} · {split} split")
    for col in ("policy", "accuracy %", "median s", "speed-up", "mean exit layer", "exit share by segment"):
        table.add_column(col)
    for r in table_rows:
        table.add_row(r.name, f"{r.accuracy:.2f}", f"{r.wall_s:.2f}", f"{r.speedup:.2f}x",
                      f"{r.mean_exit_layer:.2f}", "/".join(f"{f:.2f}" for f in r.exit_fractions))
    console.print(table)
    full, ee = table_rows[0], table_rows[1]
    console.print(f"early exit: {ee.speedup:.2f}x faster than full depth, accuracy drop "
                  f"{full.accuracy - ee.accuracy:.2f} pt (threshold {m.policy.threshold:.4f}, "
                  f"n={full.segment_samples[0]}, {repeats} interleaved repeats)")


@app.command()
def speculative(
    output: Annotated[Path, typer.Argument(help="artifact dir")] = Path("exported_models/smollm2-speculative"),
    target: Annotated[Optional[str], typer.Option(help="target checkpoint dir [default: SmolLM2-135M-Instruct]")] = None,
    draft: Annotated[Optional[Path], typer.Option(help="draft: a draft delta dir or a checkpoint dir")] = None,
    weight_format: WeightFormat = WeightFormat.fp16,
    num_draft_tokens: Annotated[str, typer.Option(help="default k: an integer or 'adaptive'")] = "adaptive",
    formats: Annotated[str, typer.Option(help="backends to write graphs for")] = "openvino,onnxruntime",
    overwrite: Annotated[bool, typer.Option(help="replace an existing output dir")] = False,
):
    """Export a target LM and its draft as KV-cached graphs for speculative decoding."""
    from . import assets
    from .export.speculative import DEFAULT_DRAFT, export

    fmts = _formats(formats)
    k = num_draft_tokens if num_draft_tokens == "adaptive" else _int_option("--num-draft-tokens", num_draft_tokens)
    target_dir = assets.smollm2_dir() if target in (None, assets.SMOLLM2_ID) else Path(target)
    m = export(target_dir, draft or DEFAULT_DRAFT, output, weight_format.value, k, overwrite, fmts)
    ratio = m.defaults.get("draft_cost_ratio")
    console.print(f"[green]wrote[/green] {output}: target {m.target.num_layers} layers, draft layers "
                  f"{m.draft.source_layers} ({'full' if not m.draft.vocab_file else 'truncated'} vocabulary), "
                  f"{m.weight_format}, " + (f"draft cost ratio {ratio:.3f}, " if ratio else "") +
                  f"max parity error {max(m.parity.values()):.1e}")


@app.command()
def eagle(
    output: Annotated[Path, typer.Argument(help="artifact dir")] = Path("exported_models/smollm2-eagle"),
    target: Annotated[Optional[str], typer.Option(help="target checkpoint dir [default: SmolLM2-135M-Instruct]")] = None,
    head: Annotated[Optional[Path], typer.Option(help="EAGLE head dir (scripts/train_eagle.py) [default: the committed one]")] = None,
    weight_format: WeightFormat = WeightFormat.fp16,
    formats: Annotated[str, typer.Option(help="backends to write graphs for")] = "openvino,onnxruntime",
    overwrite: Annotated[bool, typer.Option(help="replace an existing output dir")] = False,
):
    """Export a target LM (logits + features, tree verify) and its EAGLE draft head as KV-cached graphs."""
    from . import assets
    from .export.eagle import DEFAULT_HEAD, export

    fmts = _formats(formats)
    target_dir = assets.smollm2_dir() if target in (None, assets.SMOLLM2_ID) else Path(target)
    m = export(target_dir, head or DEFAULT_HEAD, output, weight_format.value, overwrite, fmts)
    c = m.defaults.get("head_cost_ratio")
    console.print(f"[green]wrote[/green] {output}: target {m.target.num_layers} layers + EAGLE head "
                  f"({'full' if not m.head.vocab_file else 'truncated'} vocabulary), {m.weight_format}, "
                  + (f"head cost ratio {c:.3f}, " if c else "") + f"max parity error {max(m.parity.values()):.1e}")


def _formats(value: str) -> tuple[str, ...]:
    fmts = tuple(f.strip() for f in value.split(",") if f.strip())
    if not fmts or any(f not in ("openvino", "onnxruntime") for f in fmts):
        raise RecipeError(f"--formats takes openvino and/or onnxruntime, got {value!r}")
    return fmts


def _tree_option(value: Optional[str]) -> Optional[dict]:
    if value is None:
        return None
    try:
        depth, topk, total = (int(v) for v in value.split(","))
    except ValueError:
        raise RecipeError(f"--tree must be depth,topk,max_tokens like 5,8,32, got {value!r}") from None
    return {"depth": depth, "topk": topk, "max_tokens": total}


def _int_option(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        word = "'auto'" if flag == "--steps" else "'adaptive'"
        raise RecipeError(f"{flag} must be an integer or {word}, got {value!r}") from None


@app.command()
def generate(
    artifact: Annotated[Path, typer.Argument(help="artifact dir written by `dynexport speculative`")],
    prompt: Annotated[str, typer.Argument(help="prompt text (raw completion, no chat template)")],
    max_new_tokens: int = 64,
    sample: Annotated[bool, typer.Option("--sample", help="sample instead of greedy decoding")] = False,
    temperature: float = 0.7,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    num_draft_tokens: Annotated[Optional[str], typer.Option(
        help="k, 0 = target alone, or 'adaptive' (speculative); EAGLE: a chain of k instead of the tree")] = None,
    tree: Annotated[Optional[str], typer.Option(
        help="EAGLE: draft a tree of depth,topk,max_tokens (sized per round) instead of the default chain")] = None,
    backend: Backend = Backend.openvino,
    device: str = "CPU",
):
    """Stream a completion with speculative or EAGLE decoding and print its stats line."""
    from .runtime import load
    pipe = load(artifact, backend.value, device)
    if pipe.manifest.method not in ("speculative", "eagle"):
        raise RecipeError(f"{artifact} is a {pipe.manifest.method!r} artifact; `generate` needs a speculative "
                          "or eagle one")
    k = None if num_draft_tokens is None else (
        num_draft_tokens if num_draft_tokens == "adaptive" else _int_option("--num-draft-tokens", num_draft_tokens))
    extra = {}
    if pipe.manifest.method == "eagle":
        if k == "adaptive":
            raise RecipeError("--num-draft-tokens adaptive is for speculative artifacts; EAGLE sizes its tree itself")
        extra["tree"] = _tree_option(tree)
    elif tree is not None:
        raise RecipeError("--tree is for EAGLE artifacts")
    out = sys.stdout
    out.write(prompt)
    r = pipe.generate(prompt, max_new_tokens, sample, temperature, top_k, top_p, seed, k,
                      streamer=lambda piece: (out.write(piece), out.flush()), **extra)
    s = r.stats
    out.write("\n")
    console.print(f"[dim]{s.new_tokens} tokens · TTFT {s.ttft_s * 1e3:.0f} ms · TPOT {s.tpot_s * 1e3:.1f} ms · "
                  f"{s.tokens_per_s:.1f} tok/s · acceptance {s.acceptance_rate:.2f} · mean accepted length "
                  f"{s.mean_accepted_length:.2f} · target/draft calls {s.target_calls}/{s.draft_calls}[/dim]")


@app.command()
def diffusion(
    output: Annotated[Path, typer.Argument(help="artifact dir")] = Path("exported_models/stepsaver"),
    recipe: Annotated[Optional[Path], typer.Option(help="recipe TOML [default: recipes/stepsaver.toml]")] = None,
    unet: Annotated[Optional[Path], typer.Option(help="trained UNet dir (overrides the recipe)")] = None,
    predictor: Annotated[Optional[str], typer.Option(help="step predictor dir; '' for none (overrides the recipe)")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="ddim or dpmsolver++")] = None,
    weight_format: Optional[WeightFormat] = None,
    quant_mode: Optional[QuantMode] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing output dir")] = False,
):
    """Export StepSaver: text encoder, UNet step and step predictor graphs (OpenVINO IR + ONNX)."""
    from .export.diffusion import export
    from .recipe import StepSaverRecipe, load_recipe
    r = load_recipe(recipe, {"models.unet": str(unet) if unet else None, "models.predictor": predictor,
                             "sampling.scheduler": scheduler,
                             "quantization.weight_format": weight_format.value if weight_format else None,
                             "quantization.quant_mode": quant_mode.value if quant_mode else None}, StepSaverRecipe)
    m = export(r.path(r.models.unet), output, r.path(r.models.predictor), r.quantization.weight_format,
               r.quantization.quant_mode, r.sampling.scheduler, r.sampling.full_steps, r.sampling.guidance_scale,
               overwrite)
    par = f", max parity error {max(m.parity.values()):.1e}" if m.parity else ""
    pred = f"step predictor over {m.step_predictor.counts}" if m.step_predictor else "no step predictor"
    console.print(f"[green]wrote[/green] {output}: {m.image_size}px UNet ({m.unet.precision['openvino']}), {pred}{par}")


@app.command()
def imagine(
    artifact: Annotated[Path, typer.Argument(help="artifact dir written by `dynexport diffusion`")],
    prompt: Annotated[str, typer.Argument(help="what to draw, e.g. 'red apple'")],
    out: Annotated[Path, typer.Option(help="PNG file to write")] = Path("image.png"),
    steps: Annotated[str, typer.Option(help="'auto' (the step predictor) or a fixed count")] = "auto",
    margin: Annotated[Optional[float], typer.Option(help="safety quantile in (0, 1) [default: the manifest's]")] = None,
    seed: int = 0,
    scale: Annotated[int, typer.Option(help="upscale the PNG by this factor (nearest)")] = 8,
    backend: Backend = Backend.openvino,
    device: str = "CPU",
):
    """Draw one image and write it as a PNG; prints the step count used."""
    from PIL import Image

    from .runtime import load
    pipe = load(artifact, backend.value, device)
    if pipe.manifest.method != "stepsaver":
        raise RecipeError(f"{artifact} is a {pipe.manifest.method!r} artifact; `imagine` needs a stepsaver one")
    n = steps if steps == "auto" else _int_option("--steps", steps)
    if scale < 1:
        raise RecipeError(f"--scale must be ≥ 1, got {scale}")
    r = pipe.generate([prompt], seed=seed, steps=n, margin=margin)
    img = Image.fromarray(r.images[0])
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(out)
    s = r.stats
    console.print(f"wrote {out}: {s.steps[0]} steps ({'predicted' if n == 'auto' else 'fixed'}) · "
                  f"total {s.total_s * 1e3:.0f} ms (UNet {s.unet_s * 1e3:.0f} ms, predictor {s.predictor_s * 1e3:.1f} ms)")


def main() -> None:
    """Entry point: runs the command; warnings are printed once each, as one line, at the end."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                app(standalone_mode=False)
            finally:
                for w in caught:
                    if issubclass(w.category, UserWarning):
                        print(f"warning: {w.message}", file=sys.stderr)
    except DynexportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors carry their own exit code
        import click
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
