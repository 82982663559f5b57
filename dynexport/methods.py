"""The method registry: one entry per method — its name and CLI aliases, recipe model, export function,
manifest type and pipeline class — and `export(method, recipe, out)`, the one way in from the CLI
and from Python. The early-exit entry trains its checkpoint first when it is not there (the only
place where training and export meet).

Export needs the `[export]` extra (torch, transformers, optimum-intel, nncf); without it `export`
says which command installs it instead of failing on an import.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import DynexportError, RecipeError
from .manifest import DiffusionManifest, EagleManifest, EarlyExitManifest, LMManifest, ManifestBase, SpeculativeManifest
from .recipe import (
    FORMATS,
    AnyRecipe,
    EagleRecipe,
    EarlyExitRecipe,
    LMRecipe,
    SpeculativeRecipe,
    StepSaverRecipe,
    load_recipe,
)
from .runtime import PIPELINES

EXPORT_EXTRA = ("torch", "transformers", "nncf", "optimum", "onnx", "diffusers", "peft")


class ExtraMissing(DynexportError):
    """An optional dependency group is not installed."""


@dataclass(frozen=True)
class Method:
    name: str
    aliases: tuple[str, ...]  # older CLI command names that still work
    recipe: type  # pydantic recipe model (its default TOML: recipes/<recipe.default_file>)
    manifest: type[ManifestBase]
    manifest_method: str  # the `method` field its manifests carry
    run_commands: tuple[str, ...]  # CLI commands that take its artifacts
    _export: Callable  # (recipe, out, overwrite, formats) → manifest; imported only when called

    @property
    def pipeline(self) -> type:
        return PIPELINES[self.manifest_method]

    def load_recipe(self, path: Path | None = None, overrides: dict | None = None):
        return load_recipe(path, overrides, self.recipe)

    def export(self, recipe=None, out: Path | str = "", *, overwrite: bool = False,
               formats: tuple[str, ...] = FORMATS) -> ManifestBase:
        """Recipe (default: the embedded one) → artifact dir `out`; returns its manifest."""
        recipe = self.load_recipe() if recipe is None else recipe
        if not isinstance(recipe, self.recipe):
            raise RecipeError(f"method {self.name!r} takes a {self.recipe.__name__}, got {type(recipe).__name__}")
        if not out:
            raise RecipeError("give the output directory of the artifact")
        if not formats or any(f not in FORMATS for f in formats):
            raise RecipeError(f"formats must be a non-empty subset of {', '.join(FORMATS)}, got {formats!r}")
        missing = missing_export_extra()
        if missing:
            raise ExtraMissing(f"exporting needs the [export] extra ({', '.join(missing)} not installed): pip install "
                               "torch==2.13.0 (the CPU wheel, first and alone), then pip install 'dynexport[export]'")
        return self._export(recipe, Path(out), overwrite, tuple(formats))


def _export_early_exit(recipe: EarlyExitRecipe, out: Path, overwrite: bool, formats) -> EarlyExitManifest:
    from .export.bert_exits import export
    from .models.encoder import resolve_source
    from .train.bert_exits import ensure_trained
    src = resolve_source(recipe)  # checks model, exits and data before anything trains
    return export(recipe, out, ensure_trained(recipe, src.model_dir, src.splits), overwrite=overwrite, formats=formats)


def _export_lm(recipe: LMRecipe, out: Path, overwrite: bool, formats) -> LMManifest:
    from .export.lm import export
    return export(recipe, out, overwrite=overwrite, formats=formats)


def _export_speculative(recipe: SpeculativeRecipe, out: Path, overwrite: bool, formats) -> SpeculativeManifest:
    from .export.speculative import export
    return export(recipe, out, overwrite=overwrite, formats=formats)


def _export_eagle(recipe: EagleRecipe, out: Path, overwrite: bool, formats) -> EagleManifest:
    from .export.eagle import export
    return export(recipe, out, overwrite=overwrite, formats=formats)


def _export_stepsaver(recipe: StepSaverRecipe, out: Path, overwrite: bool, formats) -> DiffusionManifest:
    from .export.diffusion import export
    return export(recipe, out, overwrite=overwrite, formats=formats)


METHODS = {m.name: m for m in (
    Method("early-exit", ("bert",), EarlyExitRecipe, EarlyExitManifest, "bert_exits", ("classify", "evaluate"),
           _export_early_exit),
    Method("lm", (), LMRecipe, LMManifest, "lm", ("generate", "solve"), _export_lm),
    Method("speculative", (), SpeculativeRecipe, SpeculativeManifest, "speculative", ("generate",),
           _export_speculative),
    Method("eagle", (), EagleRecipe, EagleManifest, "eagle", ("generate",), _export_eagle),
    Method("stepsaver", ("diffusion",), StepSaverRecipe, DiffusionManifest, "stepsaver", ("imagine",),
           _export_stepsaver),
)}


def get(name: str) -> Method:
    """A method by name or alias."""
    for m in METHODS.values():
        if name == m.name or name in m.aliases:
            return m
    raise RecipeError(f"unknown method {name!r}; methods: {', '.join(METHODS)}")


def of_manifest(manifest_method: str) -> Method:
    return next(m for m in METHODS.values() if m.manifest_method == manifest_method)


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a finder that refuses the name (an import blocker) means: not usable here
        return False


def missing_export_extra() -> list[str]:
    return [name for name in EXPORT_EXTRA if not _installed(name)]


def export(method: str, recipe: AnyRecipe | None = None, out: Path | str = "", *, overwrite: bool = False,
           formats: tuple[str, ...] = FORMATS) -> ManifestBase:
    """`get(method).export(...)`: the one way in from the CLI and from Python."""
    return get(method).export(recipe, out, overwrite=overwrite, formats=formats)
