"""Manifest verification: tampering, missing files, paths escaping the dir, versions, malformed JSON."""

import json
import os
import shutil

import pytest

from dynexport.errors import GraphError, IntegrityError, ManifestError
from dynexport.manifest import read_manifest, safe_path, write_manifest
from dynexport.runtime import load


@pytest.fixture
def copy(bert_artifact, tmp_path):
    dst = tmp_path / "art"
    shutil.copytree(bert_artifact[0], dst)
    return dst


def _edit(root, fn):
    m = json.loads((root / "manifest.json").read_text())
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m))


def test_clean_artifact_verifies(copy):
    m = read_manifest(copy)
    assert m.method == "bert_exits" and len(m.graphs) == 3
    assert {f for g in m.graphs for f in g.files.values()} <= set(m.files)
    assert all(len(h) == 64 for h in m.files.values())


def test_tampered_graph_is_rejected(copy):
    with open(copy / "seg1.bin", "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(IntegrityError, match="seg1.bin.*sha256"):
        load(copy)


@pytest.mark.parametrize("rel,backend", [("seg1.xml", "openvino"), ("seg1.bin", "openvino"),
                                         ("seg1.onnx", "onnxruntime"), ("tokenizer/tokenizer.json", "openvino")])
def test_a_rehashed_corrupt_file_is_a_graph_error(copy, rel, backend):
    """Cut in half and re-hashed (so the sha256 check passes): the backend's refusal is a GraphError naming
    the file, not OpenVINO's RuntimeError, onnxruntime's InvalidProtobuf or tokenizers' bare Exception."""
    path = copy / rel
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    write_manifest(copy, read_manifest(copy, verify=False))
    with pytest.raises(GraphError, match=path.name):
        load(copy, backend=backend).run(["a good day", "bad"])


def test_a_tokenizer_that_panics_is_a_graph_error(copy):
    """A re-hashed tokenizer.json whose post-processor names a special token it no longer defines makes the
    Rust tokenizer panic (pyo3's PanicException, a BaseException): found by the fuzzer, now refused at load."""
    tok = copy / "tokenizer" / "tokenizer.json"
    t = json.loads(tok.read_text())
    del t["post_processor"]["special_tokens"]["[CLS]"]
    tok.write_text(json.dumps(t))
    write_manifest(copy, read_manifest(copy, verify=False))
    with pytest.raises(GraphError, match="tokenizer.json: the tokenizer failed"):
        load(copy)


def test_labels_that_do_not_fit_the_heads_are_refused(copy):
    """A manifest edited to list more labels than the exit heads have classes: was a numpy broadcast error."""
    _edit(copy, lambda m: m["labels"].append("extra"))
    with pytest.raises(ManifestError, match="manifest lists 4 labels"):
        load(copy).run(["a good day"])


def test_missing_segment_is_rejected(copy):
    os.remove(copy / "seg2.onnx")
    with pytest.raises(IntegrityError, match="seg2.onnx.*missing"):
        load(copy, "onnxruntime")


@pytest.mark.parametrize("bad", ["../outside.bin", "/etc/passwd", "a/../../x", "~/x", "seg0\\..\\..\\x"])
def test_paths_escaping_the_dir_are_rejected(copy, bad):
    def fn(m):
        m["files"][bad] = "0" * 64
    _edit(copy, fn)
    with pytest.raises(ManifestError, match="path"):
        read_manifest(copy)


def test_symlink_is_rejected(copy, tmp_path):
    (tmp_path / "elsewhere.bin").write_bytes((copy / "seg0.bin").read_bytes())
    os.remove(copy / "seg0.bin")
    os.symlink(tmp_path / "elsewhere.bin", copy / "seg0.bin")
    with pytest.raises(ManifestError, match="symlink"):
        read_manifest(copy)


def test_graph_file_without_hash_is_rejected(copy):
    def fn(m):
        del m["files"]["seg0.xml"]
    _edit(copy, fn)
    with pytest.raises(ManifestError, match="no sha256"):
        read_manifest(copy)


def test_unknown_schema_version_and_garbage(copy):
    _edit(copy, lambda m: m.update(schema_version=99))
    with pytest.raises(ManifestError, match="schema_version 99"):
        read_manifest(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(copy)
    os.remove(copy / "manifest.json")
    with pytest.raises(ManifestError, match="manifest.json is missing"):
        load(copy)


def test_unknown_method_is_rejected(copy):
    _edit(copy, lambda m: m.update(method="gpt_exits"))
    with pytest.raises(ManifestError, match="method"):
        read_manifest(copy)


def test_safe_path_accepts_plain_relative(tmp_path):
    assert safe_path(tmp_path, "tokenizer/tokenizer.json") == tmp_path / "tokenizer" / "tokenizer.json"
