"""The runtime never imports torch; an interrupted export leaves nothing behind."""

import os
import subprocess
import sys

import pytest

from dynexport.export.common import atomic_output_dir

BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name in ("transformers", "nncf", "peft"):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
"""


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
