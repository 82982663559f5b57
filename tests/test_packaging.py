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


RUN_EVERY_KIND = """
import json, sys
from dynexport.runtime import load
kind, path = sys.argv[1], sys.argv[2]
pipe = load(path)
if kind == "classify":
    out = pipe.run(["what a lovely flight"]).labels
elif kind == "images":
    out = pipe.generate(["red apple"], steps=2).images.shape
else:
    out = pipe.generate("hello", max_new_tokens=4, ignore_eos=True).stats.new_tokens
hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM"))  # peak RSS of this process image
print(json.dumps({"out": str(out), "rss_mib": int(hwm.split()[1]) / 1024,
                  "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
"""


@pytest.mark.slow
def test_edge_install_is_torch_free_and_runs_every_artifact_kind(wheel, arts, tiny_eagle, tmp_path):
    """The wheel without extras, installed from the package index into a fresh venv (pinned by
    constraints.txt): no torch, transformers or nncf comes with it, and an artifact of every method
    loads and runs there; prints the install size and each artifact's peak RSS."""
    venv = tmp_path / "edge"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    p = subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"), str(wheel)],
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    have = {ln.split("==")[0].lower() for ln in subprocess.run(
        [str(py), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout.split()}
    assert not have & {"torch", "transformers", "nncf", "optimum", "optimum-intel", "diffusers", "peft", "ray"}, have
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 2**20
    kinds = {"classify": arts["clf"], "lm": arts["plain"], "speculative": arts["spec"], "eagle": tiny_eagle["artifact"],
             "images": arts["img"]}
    rows = {}
    for kind, path in kinds.items():
        r = subprocess.run([str(py), "-c", RUN_EVERY_KIND, "classify" if kind == "classify" else kind, str(path)],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert r.returncode == 0, (kind, r.stderr[-3000:])
        rows[kind] = json.loads(r.stdout.strip().splitlines()[-1])
        assert not rows[kind]["torch"] and not rows[kind]["transformers"], kind
    assert rows["images"]["out"] == "(1, 16, 16, 3)" and rows["lm"]["out"] == "4"
    print(f"edge install: {size:.0f} MiB site-packages; peak RSS (MiB): "
          + ", ".join(f"{k} {v['rss_mib']:.0f}" for k, v in rows.items()))
    p = subprocess.run([str(venv / "bin" / "dynexport"), "classify", str(arts["clf"]), "what a lovely flight"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert p.returncode == 0 and "exit@layer" in p.stdout, p.stderr[-2000:]
