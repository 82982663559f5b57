"""The runtime never imports torch (the run commands work without it, the export commands say which
extra to install); an interrupted export leaves nothing behind."""

import os
import subprocess
import sys

import pytest
from helpers import BLOCK_TORCH, run_cli

from dynexport.atomic import atomic_output_dir


def test_runtime_runs_with_torch_blocked(bert_artifact):
    code = BLOCK_TORCH + f"""
from dynexport.runtime import load, FullDepth
for backend in ("openvino", "onnxruntime"):
    res = load({str(bert_artifact[0])!r}, backend).run(["good day", "awful"], FullDepth())
    assert len(res.labels) == 2
import dynexport.evaluate, dynexport.calibration, dynexport.manifest
assert "torch" not in sys.modules
print("ok")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr


def test_cli_without_torch_runs_and_refuses_export_clearly(bert_artifact, tmp_path):
    p = run_cli("classify", bert_artifact[0], "good day", code_prefix=BLOCK_TORCH)
    assert p.returncode == 0 and "exit@layer" in p.stdout, p.stderr
    for args in (["bert", "--exits", "4,8", tmp_path / "a"], ["export", "speculative", tmp_path / "b"],
                 ["export", "stepsaver", tmp_path / "c"]):
        p = run_cli(*args, code_prefix=BLOCK_TORCH)
        assert p.returncode == 2 and "needs the [export] extra" in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert os.listdir(tmp_path) == []


def test_blocker_really_blocks():
    p = subprocess.run([sys.executable, "-c", BLOCK_TORCH + "import torch"], capture_output=True, text=True)
    assert p.returncode != 0 and "blocked: torch" in p.stderr


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_export_leaves_nothing(tmp_path, exc):
    out = tmp_path / "art"
    with pytest.raises(exc):
        with atomic_output_dir(out, overwrite=False) as tmp:
            (tmp / "seg0.onnx").write_bytes(b"half")
            raise exc()
    assert not out.exists() and os.listdir(tmp_path) == []


def test_overwrite_replaces_atomically(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "old").write_text("x")
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new").write_text("y")
    assert sorted(os.listdir(out)) == ["new"] and os.listdir(tmp_path) == ["art"]
