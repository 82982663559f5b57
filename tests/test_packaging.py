"""Installed, not only editable: the wheel built from the tracked files carries the package, the
recipes and every committed weights file (and nothing of tests/, scripts/, benchmarks/); installed into
a fresh venv, `dynexport bert --exits 4,8 OUT` runs from any directory (slow tier)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from dynexport import methods, paths

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the git-tracked files (what a clean clone holds)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, tracked.decode().split("\0")):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    (whl,) = out.glob("dynexport-*.whl")
    return whl


def test_wheel_carries_recipes_and_every_committed_weight(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    weights = {f"dynexport/{p.relative_to(paths.PACKAGE_DIR).as_posix()}" for p in paths.WEIGHTS_DIR.rglob("*")
               if p.is_file()}
    recipes = {f"dynexport/recipes/{p.name}" for p in paths.RECIPES_DIR.glob("*.toml")}
    assert weights and weights <= names, sorted(weights - names)
    assert len(recipes) == len(methods.METHODS) and recipes <= names
    assert {"dynexport/cli.py", "dynexport/methods.py", "dynexport/runtime/generation.py"} <= names
    assert not [n for n in names if n.split("/")[0] in ("tests", "scripts", "benchmarks", "docs")]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dynexport = dynexport.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    assert wheel.stat().st_size < 60 * 2**20


@pytest.mark.slow
def test_installed_wheel_exports_the_headline_command(wheel, tmp_path):
    """A fresh venv with the wheel (its dependencies seen through a .pth line to this venv's packages,
    whose editable dynexport is not): the recipe and the committed checkpoint come from the installed
    package, so the export does not train."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=600)
    where = subprocess.run([str(py), "-c", "import dynexport, sys; print(dynexport.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(site.resolve()), where
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([str(venv / "bin" / "dynexport"), "bert", "--exits", "4,8", "art", "--formats", "openvino"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=1800, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "wrote" in p.stdout and "exits [4, 8]" in p.stdout
    m = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert m["source"]["checkpoint"] in {c.name for c in paths.committed("early_exit").iterdir()}
    p = subprocess.run([str(venv / "bin" / "dynexport"), "classify", "art", "what a lovely flight"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0 and "exit@layer" in p.stdout, p.stderr
