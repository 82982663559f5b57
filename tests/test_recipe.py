"""Recipe validation and exit-list checks give errors that say what is wrong."""

import pytest

from dynexport.errors import RecipeError
from dynexport.recipe import DEFAULT_BERT_RECIPE, load_recipe, validate_exits


def test_default_recipe_loads_and_overrides():
    r = load_recipe(None, {"exits.layers": [2, 4, 6], "quantization.weight_format": "int8"})
    assert r.exits.layers == (2, 4, 6) and r.quantization.weight_format == "int8"
    assert r.model.id == "all-mpnet-base-v2" and load_recipe(DEFAULT_BERT_RECIPE).exits.layers == (4, 8)


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
    r = load_recipe()
    with pytest.raises(Exception):
        r.model.max_length = 3


def test_max_length_beyond_the_model_is_refused(tiny, tmp_path):
    from conftest import write_recipe
    from dynexport.export.bert_exits import export
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", tiny["mpnet"], tiny["data"], tiny["ckpt"]),
                         {"model.max_length": 100})
    with pytest.raises(RecipeError, match="exceeds what this model can embed \\(78\\)"):
        export(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()
