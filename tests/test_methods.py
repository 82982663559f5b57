"""The method registry: one entry per method, aliases resolve, every manifest type maps to its
pipeline (the runtime's one artifact → pipeline mapping), wrong recipes and outputs are refused."""

import typing

import pytest

from dynexport import methods
from dynexport.errors import RecipeError
from dynexport.manifest import AnyManifest
from dynexport.runtime import PIPELINES


def test_every_method_is_one_entry_and_aliases_resolve():
    assert list(methods.METHODS) == ["early-exit", "lm", "speculative", "eagle", "stepsaver"]
    assert methods.get("bert") is methods.get("early-exit") and methods.get("diffusion") is methods.get("stepsaver")
    with pytest.raises(RecipeError, match="unknown method 'nope'"):
        methods.get("nope")


def test_manifest_types_and_pipelines_line_up():
    union = typing.get_args(typing.get_args(AnyManifest)[0])
    assert {m.manifest for m in methods.METHODS.values()} == set(union)
    for m in methods.METHODS.values():
        assert m.manifest.model_fields["method"].annotation == typing.Literal[m.manifest_method]
        assert m.pipeline is PIPELINES[m.manifest_method] and methods.of_manifest(m.manifest_method) is m
        assert isinstance(m.load_recipe(), m.recipe) and m.run_commands


def test_export_refuses_a_wrong_recipe_output_or_format(tmp_path):
    with pytest.raises(RecipeError, match="takes a SpeculativeRecipe, got EagleRecipe"):
        methods.export("speculative", methods.get("eagle").load_recipe(), tmp_path / "a")
    with pytest.raises(RecipeError, match="output directory"):
        methods.export("eagle")
    with pytest.raises(RecipeError, match="formats"):
        methods.export("eagle", None, tmp_path / "a", formats=("tensorrt",))
    assert not (tmp_path / "a").exists()
