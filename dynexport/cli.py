"""`dynexport` command line: argument parsing and printing only; the work is done by methods, runtime, evaluate.

optimum-cli's shape: `dynexport export <method> [-m MODEL] [--recipe FILE] [flags] OUT`, --weight-format,
--quant-mode, --device. Export flags default to None, meaning "the recipe's value"; run-command flags
default to None, meaning "the config's default" (GenerationConfig, ClassifyConfig, ImageConfig), so
every default is read from one place. The older commands (`bert`, `speculative`, `eagle`,
`diffusion`) are aliases of `export <method>`. User mistakes print one line on stderr and exit with
status 2 (no traceback); every warning reaches the user as one line.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Optional, get_args

import typer
from rich.console import Console
from rich.table import Table

from . import methods
from .errors import DynexportError, UsageError
from .recipe import FORMATS, QuantMode, WeightFormat
from .runtime.diffusion import ImageConfig
from .runtime.early_exit import ClassifyConfig
from .runtime.generation import GenerationConfig

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Export transformers as segmented graphs and run them with dynamic execution.")
export_app = typer.Typer(no_args_is_help=True, help="Export a model as an artifact: dynexport export <method> OUT.")
app.add_typer(export_app, name="export")
console = Console(width=max(100, Console().width))

WeightFormatOpt = Enum("WeightFormatOpt", {v: v for v in get_args(WeightFormat)}, type=str)
QuantModeOpt = Enum("QuantModeOpt", {v: v for v in get_args(QuantMode)}, type=str)
BackendOpt = Enum("BackendOpt", {v: v for v in FORMATS}, type=str)
GEN, CLS, IMG = GenerationConfig(), ClassifyConfig(), ImageConfig()
IMG_STEPS = next(f.default for f in dataclasses.fields(ImageConfig) if f.name == "steps")  # before normalising
# each recipe model's defaults, for help texts (the flags themselves default to None: "the recipe's")
EE, LM, SP, EA, SS = (methods.get(name).recipe() for name in ("early-exit", "lm", "speculative", "eagle", "stepsaver"))


def _d(text: str, default) -> str:
    """Help text naming the default it reads from a config model (escaped: rich would eat the brackets)."""
    return f"{text} \\[default: {default}]"


Out = Annotated[Optional[Path], typer.Argument(help=_d("artifact dir to write", "exported_models/<name>"))]
RecipeOpt = Annotated[Optional[Path], typer.Option(help=_d("recipe TOML", "the method's, dynexport/recipes/"))]
Formats = Annotated[str, typer.Option(help="backends to write graphs for")]
Overwrite = Annotated[bool, typer.Option(help="replace an existing output dir")]
WF = Annotated[Optional[WeightFormatOpt], typer.Option(
    help="graph weight precision (NNCF for int8/int4) \\[default: the recipe's]")]


def _value(option) -> Optional[str]:
    return None if option is None else option.value


def _formats(value: str) -> tuple[str, ...]:
    fmts = tuple(f.strip() for f in value.split(",") if f.strip())
    if not fmts or any(f not in FORMATS for f in fmts):
        raise UsageError(f"--formats takes {' and/or '.join(FORMATS)}, got {value!r}")
    return fmts


def _int_or(flag: str, value: Optional[str], words: str | tuple[str, ...]):
    """An integer flag that also takes a word ('adaptive', 'auto', ...)."""
    words = (words,) if isinstance(words, str) else words
    if value is None or value in words:
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{flag} must be an integer or one of {', '.join(map(repr, words))}, got {value!r}") from None


def _export(method: str, recipe: Optional[Path], overrides: dict, out: Path, overwrite: bool, formats: str):
    m = methods.get(method)
    return methods.export(m.name, m.load_recipe(recipe, overrides), out, overwrite=overwrite, formats=_formats(formats))


def parse_layers(value: Optional[str]) -> Optional[list[int]]:
    """'0-11' or '0,2,4' (or a mix) → layer indices."""
    if value is None:
        return None
    try:
        out = []
        for part in value.split(","):
            lo, _, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise UsageError(f"--draft-layers must look like 0-11 or 0,2,4, got {value!r}") from None
    return out


def parse_exits(value: Optional[str]) -> Optional[list[int]]:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--exits must be comma-separated layer numbers like 4,8, got {value!r}") from None


@export_app.command("early-exit")
def early_exit(
    output: Out = None,
    model: Annotated[Optional[str], typer.Option(
        "-m", "--model", help=_d("embedded model id or a local BERT/MPNet checkpoint dir", EE.model.id))] = None,
    recipe: RecipeOpt = None,
    exits: Annotated[Optional[str], typer.Option(
        help=_d("comma-separated 1-based exit layers", ",".join(map(str, EE.exits.layers))))] = None,
    dataset: Annotated[Optional[str], typer.Option(
        help=_d("embedded dataset id or a CSV/JSONL file", EE.dataset.id))] = None,
    weight_format: WF = None,
    quant_mode: Annotated[Optional[QuantModeOpt], typer.Option(
        help=_d("int8: NNCF post-training quantization per segment", EE.quantization.quant_mode))] = None,
    max_train_examples: Annotated[Optional[int], typer.Option(
        help=_d("subsample the train split (0 = all)", EE.training.max_train_examples))] = None,
    scheme: Annotated[Optional[str], typer.Option(
        help=_d("exit training scheme: joint | deebert", EE.training.scheme))] = None,
    head_pooling: Annotated[Optional[str], typer.Option(
        help=_d("exit heads' pooling: attention | mean", EE.training.head_pooling))] = None,
    budget_reference: Annotated[Optional[str], typer.Option(
        help=_d("what the drop budget is against: same_precision | fp32 (a quantized artifact pays its own "
                "drop first)", EE.calibration.budget_reference))] = None,
    formats: Formats = ",".join(FORMATS),
    overwrite: Overwrite = False,
):
    """Early exit: a BERT-family encoder as segment graphs, each ending in an exit head (alias: bert)."""
    overrides = {"exits.layers": parse_exits(exits), "model.id": model, "dataset.id": dataset,
                 "quantization.weight_format": _value(weight_format), "quantization.quant_mode": _value(quant_mode),
                 "training.max_train_examples": max_train_examples, "training.scheme": scheme,
                 "training.head_pooling": head_pooling, "calibration.budget_reference": budget_reference}
    r = methods.get("early-exit").load_recipe(recipe, overrides)
    out = output or Path("exported_models") / f"bert-exits-{'-'.join(map(str, r.exits.layers))}"
    m = methods.export("early-exit", r, out, overwrite=overwrite, formats=_formats(formats))
    console.print(f"[green]wrote[/green] {out}: {len(m.graphs)} segments, exits {m.exits}, "
                  f"{_exit_rule(m.policy)}")


def _exit_rule(p) -> str:
    """One line on an artifact's calibrated exit rule (manifests from before per-exit rules: the threshold)."""
    c = p.calibration
    kind = "learned" if p.kind == "learned" else "entropy_per_exit" if p.thresholds else "entropy"
    fit = next((f for f in p.candidates if f.kind == kind), None)
    if fit is None:
        return (f"threshold {p.threshold:.4f} (val: full {c.accuracy_full:.2f}% → {c.chosen.accuracy:.2f}%, "
                f"expected speed-up {c.chosen.expected_speedup:.2f}x)")
    settings = {"entropy": f"threshold {p.threshold:.4f}", "entropy_per_exit": "one entropy threshold per exit",
                "learned": "learned (BERxiT)"}[kind]
    return (f"exit rule {kind}, {settings} (val, 5-fold cross-validated: full {c.accuracy_full:.2f}%, drop "
            f"{fit.cv_accuracy_drop_pt:.2f} pt, expected speed-up {fit.cv_expected_speedup:.2f}x)")


@export_app.command("lm")
def lm(
    output: Out = None,
    model: Annotated[Optional[str], typer.Option(
        "-m", "--model", help=_d("embedded id (qwen2.5-coder-0.5b, …) or a Llama / Qwen2 checkpoint dir", LM.model))] = None,
    recipe: RecipeOpt = None,
    weight_format: WF = None,
    formats: Formats = ",".join(FORMATS),
    overwrite: Overwrite = False,
):
    """A plain causal LM as one KV-cached graph (the generator or reward model of `dynexport solve`)."""
    overrides = {"model": model, "quantization.weight_format": _value(weight_format)}
    out = output or Path("exported_models/lm")
    m = _export("lm", recipe, overrides, out, overwrite, formats)
    console.print(f"[green]wrote[/green] {out}: {m.model.num_layers} layers, {m.model.params / 1e6:.0f}M matmul "
                  f"parameters, {m.weight_format}, max parity error {max(m.parity.values()):.1e}")


@export_app.command("speculative")
def speculative(
    output: Out = None,
    model: Annotated[Optional[str], typer.Option(
        "-m", "--model", "--target", help=_d("target: embedded id or a Llama checkpoint dir", SP.target))] = None,
    recipe: RecipeOpt = None,
    draft: Annotated[Optional[str], typer.Option(
        help=_d("draft: a committed draft name, a draft delta dir or a checkpoint dir", SP.draft))] = None,
    weight_format: WF = None,
    num_draft_tokens: Annotated[Optional[str], typer.Option(
        help=_d("the artifact's default k: an integer or 'adaptive'", SP.generation.num_draft_tokens))] = None,
    draft_vocab: Annotated[Optional[int], typer.Option(
        help=_d("draft checkpoint: keep its N most frequent tokens (0 = all)", SP.draft_shape.vocab_size))] = None,
    draft_layers: Annotated[Optional[str], typer.Option(
        help="draft checkpoint: keep these layers, e.g. 0-11 or 0,2,4 (default: all)")] = None,
    draft_weight_format: Annotated[Optional[WeightFormatOpt], typer.Option(
        help="the draft graph's weights (default: --weight-format)")] = None,
    formats: Formats = ",".join(FORMATS),
    overwrite: Overwrite = False,
):
    """Speculative decoding: a target LM and its draft as KV-cached graphs."""
    overrides = {"target": model, "draft": draft, "quantization.weight_format": _value(weight_format),
                 "generation.num_draft_tokens": _int_or("--num-draft-tokens", num_draft_tokens, "adaptive"),
                 "draft_shape.vocab_size": draft_vocab, "draft_shape.layers": parse_layers(draft_layers),
                 "draft_shape.weight_format": _value(draft_weight_format)}
    out = output or Path("exported_models/smollm2-speculative")
    m = _export("speculative", recipe, overrides, out, overwrite, formats)
    ratio = m.defaults.draft_cost_ratio
    console.print(f"[green]wrote[/green] {out}: target {m.target.num_layers} layers, draft layers "
                  f"{m.draft.source_layers} ({'full' if not m.draft.vocab_file else 'truncated'} vocabulary), "
                  f"{m.weight_format}, " + (f"draft cost ratio {ratio:.3f}, " if ratio else "") +
                  f"max parity error {max(m.parity.values()):.1e}")


@export_app.command("eagle")
def eagle(
    output: Out = None,
    model: Annotated[Optional[str], typer.Option(
        "-m", "--model", "--target", help=_d("target: embedded id or a Llama checkpoint dir", EA.target))] = None,
    recipe: RecipeOpt = None,
    head: Annotated[Optional[str], typer.Option(
        help=_d("EAGLE head: a committed head name or a head dir", EA.head))] = None,
    weight_format: WF = None,
    num_draft_tokens: Annotated[Optional[int], typer.Option(
        help=_d("the artifact's default chain length", EA.generation.num_draft_tokens))] = None,
    formats: Formats = ",".join(FORMATS),
    overwrite: Overwrite = False,
):
    """EAGLE: a target LM (logits + features, tree verify) and its feature-level draft head."""
    overrides = {"target": model, "head": head, "quantization.weight_format": _value(weight_format),
                 "generation.num_draft_tokens": num_draft_tokens}
    out = output or Path("exported_models/smollm2-eagle")
    m = _export("eagle", recipe, overrides, out, overwrite, formats)
    c = m.defaults.head_cost_ratio
    console.print(f"[green]wrote[/green] {out}: target {m.target.num_layers} layers + EAGLE head "
                  f"({'full' if not m.head.vocab_file else 'truncated'} vocabulary), {m.weight_format}, "
                  + (f"head cost ratio {c:.3f}, " if c else "") + f"max parity error {max(m.parity.values()):.1e}")


@export_app.command("stepsaver")
def stepsaver(
    output: Out = None,
    model: Annotated[Optional[str], typer.Option(
        "-m", "--model", "--unet", help=_d("UNet: a committed name or a UNet dir", SS.models.unet))] = None,
    recipe: RecipeOpt = None,
    predictor: Annotated[Optional[str], typer.Option(
        help=_d("step predictor: a committed name or dir; '' for none", SS.models.predictor))] = None,
    step_control: Annotated[Optional[str], typer.Option(
        help=_d("in-loop step policies' calibration: a committed name or dir; '' for none",
                SS.models.step_control))] = None,
    scheduler: Annotated[Optional[str], typer.Option(help=_d("ddim or dpmsolver++", SS.sampling.scheduler))] = None,
    weight_format: WF = None,
    quant_mode: Annotated[Optional[QuantModeOpt], typer.Option(
        help=_d("int8: NNCF post-training quantization of the UNet", SS.quantization.quant_mode))] = None,
    formats: Formats = ",".join(FORMATS),
    overwrite: Overwrite = False,
):
    """StepSaver: text encoder, UNet step and step predictor graphs (alias: diffusion)."""
    overrides = {"models.unet": model, "models.predictor": predictor, "models.step_control": step_control,
                 "sampling.scheduler": scheduler,
                 "quantization.weight_format": _value(weight_format), "quantization.quant_mode": _value(quant_mode)}
    out = output or Path("exported_models/stepsaver")
    m = _export("stepsaver", recipe, overrides, out, overwrite, formats)
    par = f", max parity error {max(m.parity.values()):.1e}" if m.parity else ""
    pred = f"step predictor over {m.step_predictor.counts}" if m.step_predictor else "no step predictor"
    ctl = f", in-loop policies calibrated (adaptive = {m.step_control.default})" if m.step_control else ""
    unet_precision = next(iter(m.unet.precision.values()))
    console.print(f"[green]wrote[/green] {out}: {m.image_size}px UNet ({unet_precision}), {pred}{ctl}{par}")


for _alias, _fn in (("bert", early_exit), ("speculative", speculative), ("eagle", eagle), ("diffusion", stepsaver)):
    app.command(_alias, help=f"Alias of `dynexport export {methods.get(_alias).name}`. " + (_fn.__doc__ or ""))(_fn)


def _load_for(command: str, artifact: Path, backend, device: str = "CPU"):
    """Load an artifact for a run command, refusing (UsageError) one whose method that command does not run."""
    from .manifest import read_manifest
    from .runtime import load
    if not artifact.is_dir():
        raise UsageError(f"artifact dir {artifact} does not exist")
    m = methods.of_manifest(read_manifest(artifact, verify=False).method)
    if command not in m.run_commands:
        raise UsageError(f"{artifact} was exported for {m.name}; `{command}` does not run it: use "
                         + " or ".join(f"`dynexport {c}`" for c in m.run_commands))
    return load(artifact, backend.value, device)


class PolicyName(StrEnum):
    calibrated = "calibrated"  # the artifact's default rule
    calibrated_entropy = "calibrated-entropy"  # its other calibrated rules, by kind
    calibrated_per_exit = "calibrated-per-exit"
    calibrated_learned = "calibrated-learned"
    entropy = "entropy"
    patience = "patience"
    full = "full"


CALIBRATED = {PolicyName.calibrated_entropy: "entropy", PolicyName.calibrated_per_exit: "entropy_per_exit",
              PolicyName.calibrated_learned: "learned"}


def _policy(name: PolicyName, threshold: Optional[float], patience: int, pipe):
    from .runtime import EntropyPolicy, FullDepth, PatiencePolicy
    if name in CALIBRATED:
        return pipe.calibrated(CALIBRATED[name])
    if name == PolicyName.entropy:
        if threshold is None:
            raise UsageError("--policy entropy needs --threshold")
        return EntropyPolicy(threshold)
    return {PolicyName.patience: PatiencePolicy(patience), PolicyName.full: FullDepth(),
            PolicyName.calibrated: None}[name]


@app.command()
def classify(
    artifact: Annotated[Path, typer.Argument(help="early-exit artifact dir")],
    texts: Annotated[list[str], typer.Argument(help="one or more texts")],
    backend: BackendOpt = BackendOpt.openvino,
    device: str = "CPU",
    policy: PolicyName = PolicyName.calibrated,
    threshold: Optional[float] = None,
    patience: int = 2,
    batch_size: Annotated[Optional[int], typer.Option(help=_d("texts per graph call", CLS.batch_size))] = None,
):
    """Classify texts with early exit; prints label, confidence and exit layer per text."""
    pipe = _load_for("classify", artifact, backend, device)
    overrides = {} if batch_size is None else {"batch_size": batch_size}
    res = pipe.run(list(texts), ClassifyConfig(policy=_policy(policy, threshold, patience, pipe)), **overrides)
    for t, lab, p, layer in zip(texts, res.labels, res.probabilities, res.exit_layers):
        console.print(f"{lab:>10s}  p={p.max():.3f}  exit@layer {layer:>2d}  {t[:80]}", markup=False)
    console.print(f"[dim]{res.stats.total_s * 1e3:.1f} ms, segments entered: {res.stats.segment_samples}[/dim]")


@app.command()
def evaluate(
    artifact: Annotated[Path, typer.Argument(help="early-exit artifact dir")],
    backend: BackendOpt = BackendOpt.openvino,
    split: str = "test",
    limit: Annotated[Optional[int], typer.Option(help="first N examples of the split")] = None,
    batch_size: int = 1,
    repeats: int = 3,
):
    """Accuracy and median wall time of full depth vs the calibrated early exit on the held-out split."""
    from .evaluate import load_and_measure
    from .runtime import FullDepth
    pipe = _load_for("evaluate", artifact, backend)
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
                  f"{full.accuracy - ee.accuracy:.2f} pt ({_exit_rule(m.policy)}, "
                  f"n={full.segment_samples[0]}, {repeats} interleaved repeats)")


def _tree_option(value: Optional[str]):
    from .runtime import TreeCfg
    if value is None or value == "default":
        return None if value is None else "tree"
    try:
        depth, topk, total = (int(v) for v in value.split(","))
    except ValueError:
        raise UsageError(f"--tree must be depth,topk,max_tokens like 5,8,32, or 'default', got {value!r}") from None
    return TreeCfg(depth, topk, total)


def generation_config(max_new_tokens=None, sample=None, temperature=None, top_k=None, top_p=None, seed=None,
                      stop=None, num_draft_tokens=None, tree=None) -> GenerationConfig:
    """The GenerationConfig the `generate` flags ask for (None = GenerationConfig's default)."""
    if num_draft_tokens is not None and tree is not None:
        raise UsageError("pass --num-draft-tokens (a chain) or --tree, not both")
    draft = _int_or("--num-draft-tokens", num_draft_tokens, "adaptive")
    fields = {"max_new_tokens": max_new_tokens, "do_sample": sample, "temperature": temperature, "top_k": top_k,
              "top_p": top_p, "seed": seed, "stop_strings": tuple(stop) if stop else None,
              "draft": _tree_option(tree) if tree is not None else draft}
    return GenerationConfig(**{k: v for k, v in fields.items() if v is not None})


@app.command()
def generate(
    artifact: Annotated[Path, typer.Argument(help="lm, speculative or eagle artifact dir")],
    prompt: Annotated[str, typer.Argument(help="prompt text (raw completion, no chat template)")],
    max_new_tokens: Annotated[Optional[int], typer.Option(help=_d("tokens to generate at most", GEN.max_new_tokens))] = None,
    sample: Annotated[Optional[bool], typer.Option(
        "--sample/--greedy", help=_d("sample instead of greedy decoding", "sample" if GEN.do_sample else "greedy"))] = None,
    temperature: Annotated[Optional[float], typer.Option(help=_d("sampling temperature", GEN.temperature))] = None,
    top_k: Annotated[Optional[int], typer.Option(help=_d("0 = off", GEN.top_k))] = None,
    top_p: Annotated[Optional[float], typer.Option(help=_d("1 = off", GEN.top_p))] = None,
    seed: Annotated[Optional[int], typer.Option(help=_d("sampling seed", GEN.seed))] = None,
    stop: Annotated[Optional[list[str]], typer.Option(help="stop string (repeatable); cut from the output")] = None,
    num_draft_tokens: Annotated[Optional[str], typer.Option(help=_d(
        "k (0 = target alone) or 'adaptive' (speculative); EAGLE: a chain of k", "the artifact's"))] = None,
    tree: Annotated[Optional[str], typer.Option(
        help="EAGLE: draft a tree of depth,topk,max_tokens, or 'default' (the artifact's tree settings)")] = None,
    backend: BackendOpt = BackendOpt.openvino,
    device: str = "CPU",
):
    """Stream a completion with speculative or EAGLE decoding and print its stats line."""
    cfg = generation_config(max_new_tokens, sample, temperature, top_k, top_p, seed, stop, num_draft_tokens, tree)
    pipe = _load_for("generate", artifact, backend, device)
    out = sys.stdout
    out.write(prompt)
    r = pipe.generate(prompt, cfg, streamer=lambda piece: (out.write(piece), out.flush()) and None)
    s = r.stats
    out.write("\n")
    console.print(f"[dim]{s.new_tokens} tokens · TTFT {s.ttft_s * 1e3:.0f} ms · TPOT {s.tpot_s * 1e3:.1f} ms · "
                  f"{s.tokens_per_s:.1f} tok/s · acceptance {s.acceptance_rate:.2f} · mean accepted length "
                  f"{s.mean_accepted_length:.2f} · target/draft calls {s.target_calls}/{s.draft_calls}[/dim]")


@app.command()
def calibrate(
    artifact: Annotated[Path, typer.Argument(help="speculative or eagle artifact dir (with OpenVINO graphs)")],
    threads: Annotated[Optional[int], typer.Option(help="CPU threads to measure with (default: the plugin's)")] = None,
):
    """Measure the target's verify-cost curve and the draft's cost on this machine; rewrite the manifest."""
    from .manifest import read_manifest
    from .runtime.costs import calibrate as measure
    if not artifact.is_dir():
        raise UsageError(f"artifact dir {artifact} does not exist")
    if read_manifest(artifact, verify=False).method not in ("speculative", "eagle"):
        raise UsageError(f"{artifact} is not a speculative or eagle artifact; only those have draft costs")
    m = measure(artifact, threads)
    curve = ", ".join(f"{n}: {ms / m.verify_ms['1']:.2f}" for n, ms in m.verify_ms.items() if int(n) <= 16)
    ratio = m.defaults.draft_cost_ratio if m.method == "speculative" else m.defaults.head_cost_ratio
    console.print(f"[green]calibrated[/green] {artifact}: target one-token call {m.verify_ms['1']:.1f} ms; "
                  f"n positions cost ×({curve}); draft/target cost ratio {ratio:.3f}")


def parse_problems(value: Optional[str], n: int) -> list[int]:
    """'0:20' (a slice), '3,7,9' or None (all n) → problem indices."""
    if value is None:
        return list(range(n))
    try:
        if ":" in value:
            lo, _, hi = value.partition(":")
            idx = list(range(n))[slice(int(lo) if lo else None, int(hi) if hi else None)]
        else:
            idx = [int(v) for v in value.split(",")]
    except ValueError:
        raise UsageError(f"--problems takes a slice like 0:20 or indices like 3,7,9, got {value!r}") from None
    if not idx or any(not 0 <= i < n for i in idx):
        raise UsageError(f"--problems {value!r} selects none of the {n} problems or one outside 0..{n - 1}")
    return idx


@app.command()
def solve(
    artifact: Annotated[Path, typer.Argument(help="lm artifact dir: the generator")],
    task: Annotated[str, typer.Option(help="the task: humaneval")] = "humaneval",
    strategy: Annotated[str, typer.Option(
        help="greedy, best_of_n, majority, weighted, rebase or beam")] = "weighted",
    budget: Annotated[int, typer.Option(help="samples / beams / REBASE width")] = 4,
    reward: Annotated[Optional[Path], typer.Option(help="lm artifact dir of the reward model (same tokenizer)")] = None,
    reward_kind: Annotated[Optional[str], typer.Option(
        help=_d("self, lm, task or product (lm and product need --reward)", "product with --reward, else task"))] = None,
    problems: Annotated[Optional[str], typer.Option(
        help="problem indices: a slice 0:20 or a list 3,7,9 (default: all)")] = None,
    seed: int = 0,
    backend: BackendOpt = BackendOpt.openvino,
):
    """Solve task problems with an inference strategy; prints each result and pass@1 on the hidden tests."""
    from rich.progress import track

    from .runtime.strategies import STRATEGIES, SolveConfig, check_budget
    from .runtime.strategies import solve as run_solve
    from .runtime.tasks import task_problems
    if strategy not in STRATEGIES:
        raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    check_budget(budget)
    the_task, all_problems = task_problems(task)
    chosen = parse_problems(problems, len(all_problems))
    cfg = SolveConfig(reward=reward_kind or ("product" if reward else "task"))
    pipe = _load_for("solve", artifact, backend)
    rpipe = _load_for("solve", reward, backend) if reward else None
    table = Table("problem", "passed", "answered", "candidates", "policy tokens", "policy GFLOP", "total GFLOP", "s")
    passed = 0
    for i in track(chosen, description=f"{strategy} ×{budget}", console=console):
        p = all_problems[i]
        sol = run_solve(pipe, the_task, p, strategy, budget, seed, rpipe, cfg)
        ok = sol.answer is not None and the_task.grade(p, sol.answer)
        passed += ok
        s = sol.stats
        table.add_row(p.get("task_id", str(i)), "yes" if ok else "no", "no" if sol.no_answer else "yes",
                      str(len(sol.candidates)), str(s.policy.generated_tokens + s.policy.prefill_tokens),
                      f"{s.policy.flops / 1e9:.0f}", f"{(s.policy.flops + s.reward.flops) / 1e9:.0f}", f"{s.wall_s:.1f}")
    console.print(table)
    console.print(f"pass@1 {passed}/{len(chosen)} = {100 * passed / len(chosen):.1f}% ({strategy}, budget {budget}, "
                  f"reward {cfg.reward})")


@app.command()
def imagine(
    artifact: Annotated[Path, typer.Argument(help="stepsaver artifact dir")],
    prompt: Annotated[str, typer.Argument(help="what to draw, e.g. 'red apple'")],
    out: Annotated[Path, typer.Option(help="PNG file to write")] = Path("image.png"),
    steps: Annotated[Optional[str], typer.Option(
        help=_d("a fixed count, 'auto' (the step predictor), 'stop' / 'skip' / 'combined' (decided in the loop) "
                "or 'adaptive' (the artifact's best in-loop policy)", IMG_STEPS))] = None,
    margin: Annotated[Optional[float], typer.Option(
        help=_d("safety quantile in (0, 1) of steps 'auto' / 'combined'", "the artifact's"))] = None,
    tol: Annotated[Optional[float], typer.Option(
        help=_d("x̂₀-change tolerance of steps 'stop' / 'combined'", "the artifact's"))] = None,
    threshold: Annotated[Optional[float], typer.Option(
        help=_d("skip threshold of steps 'skip'", "the artifact's"))] = None,
    seed: Annotated[Optional[int], typer.Option(help=_d("noise seed", IMG.seed))] = None,
    scale: Annotated[int, typer.Option(help="upscale the PNG by this factor (nearest)")] = 8,
    backend: BackendOpt = BackendOpt.openvino,
    device: str = "CPU",
):
    """Draw one image and write it as a PNG; prints the steps and UNet calls used."""
    from PIL import Image
    if scale < 1:
        raise UsageError(f"--scale must be ≥ 1, got {scale}")
    policy = _step_policy(_int_or("--steps", steps, STEP_WORDS), margin, tol, threshold)
    cfg = ImageConfig(**{k: v for k, v in {"steps": policy, "seed": seed}.items() if v is not None})
    pipe = _load_for("imagine", artifact, backend, device)
    r = pipe.generate([prompt], cfg)
    img = Image.fromarray(r.images[0])
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(out)
    s = r.stats
    console.print(f"wrote {out}: {s.steps[0]} steps, {s.calls[0]} UNet calls ({s.policy}) · total "
                  f"{s.total_s * 1e3:.0f} ms (UNet {s.unet_s * 1e3:.0f} ms, predictor {s.predictor_s * 1e3:.1f} ms, "
                  f"checks {s.check_s * 1e3:.1f} ms)")


STEP_WORDS = ("auto", "adaptive", "stop", "skip", "combined")


def _step_policy(steps, margin: Optional[float], tol: Optional[float], threshold: Optional[float]):
    """--steps plus the policy's own flags → what ImageConfig.steps takes."""
    from .runtime import STEP_SHORTHANDS
    allowed = {"margin": ("auto", "combined"), "tol": ("stop", "combined"), "threshold": ("skip",)}
    given = {k: v for k, v in {"margin": margin, "tol": tol, "threshold": threshold}.items() if v is not None}
    for k in given:
        if steps not in allowed[k]:
            raise UsageError(f"--{k} is for --steps {' / '.join(allowed[k])}")
    return STEP_SHORTHANDS[steps](**given) if given else steps


@app.command()
def pack(
    artifact: Annotated[Path, typer.Argument(help="artifact dir (verified before it is packed)")],
    out: Annotated[Path, typer.Argument(help="archive to write (.tar.gz)")],
):
    """Pack an artifact into one .tar.gz: its manifest and exactly the files it lists."""
    from .pack import pack as pack_artifact
    names = pack_artifact(artifact, out)
    console.print(f"wrote {out}: {len(names)} files, {out.stat().st_size / 2**20:.1f} MiB")


@app.command()
def unpack(
    archive: Annotated[Path, typer.Argument(help="a .tar.gz written by `dynexport pack`")],
    out: Annotated[Path, typer.Argument(help="artifact dir to create")],
    overwrite: Overwrite = False,
):
    """Unpack an archive safely (no links, no paths leaving OUT) and verify every file's sha256."""
    from .pack import unpack as unpack_artifact
    unpack_artifact(archive, out, overwrite)
    console.print(f"unpacked {archive} into {out} (every sha256 verified)")


SERVE_EXTRA_HINT = "serving needs the [serve] extra: pip install 'dynexport[serve]'"


def _serve_defaults():
    try:
        from .serve.ray_app import ServeOptions
    except ImportError as e:
        raise UsageError(f"{SERVE_EXTRA_HINT} ({e.name} is not installed)") from None
    return ServeOptions


@app.command()
def serve(
    artifacts: Annotated[list[Path], typer.Argument(help="artifact dirs; each is served under its directory name")],
    replicas: Annotated[Optional[int], typer.Option(help="replicas of each artifact (default 1)")] = None,
    host: Annotated[Optional[str], typer.Option(help="address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="HTTP port (default 8000)")] = None,
    max_batch_size: Annotated[Optional[int], typer.Option(
        help="classification requests per dynamic batch; 1 turns batching off (default 32)")] = None,
    batch_wait_ms: Annotated[Optional[float], typer.Option(help="how long a batch waits to fill (default 5)")] = None,
    threads_per_replica: Annotated[Optional[int], typer.Option(
        help="inference threads (and Ray CPUs) per replica (default 1)")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(
        help="environment variable holding the bearer token clients must send (default: no key)")] = None,
    address: Annotated[Optional[str], typer.Option(
        help="join this Ray cluster ('auto' or host:port) instead of starting one; stopping leaves it up")] = None,
    backend: BackendOpt = BackendOpt.openvino,
):
    """Serve artifacts on Ray Serve in OpenAI's wire format until Ctrl-C / SIGTERM."""
    import os
    options = _serve_defaults()
    given = {"replicas": replicas, "host": host, "port": port, "max_batch_size": max_batch_size,
             "batch_wait_ms": batch_wait_ms, "threads_per_replica": threads_per_replica, "address": address}
    opts = options(backend=backend.value, **{k: v for k, v in given.items() if v is not None})
    for flag in ("replicas", "max_batch_size", "threads_per_replica", "port"):
        if getattr(opts, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be ≥ 1, got {getattr(opts, flag)}")
    if opts.batch_wait_ms < 0:
        raise UsageError(f"--batch-wait-ms must be ≥ 0, got {opts.batch_wait_ms}")
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise UsageError(f"--api-key-env {api_key_env}: that environment variable is empty or not set")
    elif opts.host not in ("127.0.0.1", "localhost", "::1"):
        warnings.warn(f"serving on {opts.host} without an API key: anyone who reaches it can use it "
                      "(--api-key-env VAR sets one)", stacklevel=1)
    from .serve.ray_app import run_server
    run_server([str(a) for a in artifacts], opts, api_key, ready=lambda line: print(line, flush=True))


def _show(caught: list) -> None:
    """Every warning, once, one line each (category named unless it is a plain UserWarning).
    Deprecations raised inside other libraries concern their maintainers: they are counted in one line."""
    seen, deprecations = set(), 0
    for w in caught:
        key = (w.category, str(w.message))
        if key in seen:
            continue
        seen.add(key)
        if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)) and not _ours(w.filename):
            deprecations += 1
            continue
        kind = "" if w.category is UserWarning else f" ({w.category.__name__})"
        print(f"warning{kind}: {w.message}".splitlines()[0], file=sys.stderr)
    if deprecations:
        print(f"warning: {deprecations} deprecation warning(s) inside libraries dynexport uses "
              "(PYTHONWARNINGS=always shows them)", file=sys.stderr)


def _ours(filename: str) -> bool:
    return Path(filename).resolve().is_relative_to(Path(__file__).resolve().parent)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the command (argv: the arguments, default sys.argv[1:]); warnings are printed at the
    end; mistakes are one line, exit 2."""
    import click
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                app(args=argv, standalone_mode=False)
            finally:
                _show(caught)
    except DynexportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except click.UsageError as e:  # unknown option, missing argument, bad choice: one line, like ours
        print(f"error: {e.format_message()}".splitlines()[0] + " (see --help)", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, click.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
