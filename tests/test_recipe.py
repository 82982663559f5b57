"""Recipe validation and exit-list checks give errors that say what is wrong; every method has a
recipe, and the embedded recipes restate no default (each default lives in its model only)."""

import tomllib

import pytest

from dynexport import methods
from dynexport.errors import RecipeError
from dynexport.paths import RECIPES_DIR
from dynexport.recipe import load_recipe, validate_exits


def test_default_recipe_loads_and_overrides():
    r = load_recipe(None, {"exits.layers": [2, 4, 6], "quantization.weight_format": "int8"})
    assert r.exits.layers == (2, 4, 6) and r.quantization.weight_format == "int8"
    assert r.model.id == "all-mpnet-base-v2" and load_recipe(RECIPES_DIR / "early_exit.toml").exits.layers == (4, 8)


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_every_method_has_a_recipe_that_restates_no_default(name):
    m = methods.get(name)
    tree = tomllib.loads((RECIPES_DIR / m.recipe.default_file).read_text())
    defaults = m.recipe().model_dump()

    def same(a, b):
        return list(a) == list(b) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b

    def walk(node, ref, where):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, ref[key], f"{where}{key}.")
            elif key not in ("name", "method"):
                assert not same(value, ref[key]), f"{m.recipe.default_file} restates the default {where}{key}"
    walk(tree, defaults, "")
    assert m.load_recipe().method == name


def test_recipe_validates_the_runtime_tree_config():
    with pytest.raises(RecipeError, match="tree depth must be an integer in 1..16"):
        methods.get("eagle").load_recipe(None, {"generation.tree.depth": 99})
    with pytest.raises(RecipeError, match="num_draft_tokens"):
        methods.get("speculative").load_recipe(None, {"generation.num_draft_tokens": 40})
    assert methods.get("eagle").load_recipe(None, {"generation.tree.depth": 3}).generation.tree.depth == 3


def test_exits_out_of_range_says_so():
    with pytest.raises(RecipeError, match=r"\[20\] are out of range: this model has 12 layers.*1\.\.11"):
        validate_exits([4, 20], 12)
    with pytest.raises(RecipeError, match="out of range"):
        validate_exits([0, 4], 12)
    with pytest.raises(RecipeError, match="out of range"):
        validate_exits([12], 12)


@pytest.mark.parametrize("exits", [[8, 4], [4, 4], []])
def test_exits_unsorted_duplicate_empty(exits):
    with pytest.raises(RecipeError):
        validate_exits(exits, 12)


def test_unknown_field_and_bad_value(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[model]\nid='x'\nmax_lenght=64\n")
    with pytest.raises(RecipeError, match="max_lenght"):
        load_recipe(p)
    with pytest.raises(RecipeError, match="weight_format"):
        load_recipe(None, {"quantization.weight_format": "int3"})
    p.write_text("[model\n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(p)
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.toml")


def test_recipe_is_frozen():
    from pydantic import ValidationError
    r = load_recipe()
    with pytest.raises(ValidationError, match="frozen"):
        r.model.max_length = 3


def test_max_length_beyond_the_model_is_refused(tiny, tmp_path):
    from helpers import write_recipe
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", tiny["mpnet"], tiny["data"], tiny["ckpt"]),
                         {"model.max_length": 100})
    with pytest.raises(RecipeError, match="exceeds what this model can embed \\(78\\)"):
        methods.export("early-exit", recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()
