"""The fuzz surfaces of dynexport.bench.fuzz at a fast count (DYNEXPORT_FUZZ_TRIES raises it; the figures
come from scripts/bench_reliability.py): every try ends refused with a DynexportError or well-formed, and
every tampered file is detected."""

import os

import pytest

from dynexport.bench.fuzz import artifact_surfaces, cli_surface, is_defect, mutate, run_surface

TRIES = int(os.environ.get("DYNEXPORT_FUZZ_TRIES", "40"))


@pytest.fixture(scope="module")
def surfaces(bert_artifact, tmp_path_factory):
    return {s.name: s for s in artifact_surfaces(bert_artifact[0], tmp_path_factory.mktemp("fuzz"))}


@pytest.mark.parametrize("name", ["manifest", "tampered", "rehashed", "texts"])
def test_no_try_is_unhandled(surfaces, name):
    counts = run_surface(surfaces[name], TRIES)
    assert sum(counts.values()) >= TRIES // 2, counts  # hypothesis may stop early on a small input space
    assert not [k for k in counts if is_defect(k)], counts
    if name == "tampered":
        assert set(counts) == {"detected"}, counts


def test_cli_tries_exit_0_or_2_with_one_line(bert_artifact, tmp_path):
    counts = run_surface(cli_surface(bert_artifact[0], tmp_path), max(TRIES // 2, 10))
    assert not [k for k in counts if is_defect(k)], counts


def test_mutate_edits_a_copy():
    doc = {"a": [1, {"b": 2}], "c": "x"}
    out = mutate(doc, [(0, "delete", None), (1, "add", 5)])
    assert doc == {"a": [1, {"b": 2}], "c": "x"} and out != doc


def test_the_harness_counts_what_escapes(surfaces):
    """Outcome names: a DynexportError is refused with its type, anything else is unhandled (a defect)."""
    from dynexport.bench.fuzz import outcome
    from dynexport.errors import InputError
    assert outcome(lambda: 1) == "ok"
    assert outcome(lambda: (_ for _ in ()).throw(InputError("x"))) == "refused: InputError"
    assert is_defect(outcome(lambda: [][1]))
    assert is_defect(outcome(lambda: 1, check=lambda r: (_ for _ in ()).throw(AssertionError("bad"))))
