"""Benchmark harness shared by scripts/bench_*.py: machine facts, versions, git commit, JSON writing.

Timing itself lives next to what is timed (e.g. `evaluate.timed_runs`: interleaved repeats, medians);
this module records the context a number needs to be read: CPU, threads, libraries, commit.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import subprocess
from pathlib import Path

LIBS = ("numpy", "openvino", "openvino-genai", "openvino-tokenizers", "onnxruntime", "tokenizers", "nncf", "torch",
        "transformers", "optimum-intel", "dynexport")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(root: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        # benchmarks/ holds what the benchmarks themselves write: a run rewriting its JSON is not a dirty tree
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(root: Path) -> dict:
    versions = {}
    for name in LIBS:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "python": platform.python_version(), "platform": platform.platform(), "versions": versions,
            "git_commit": git_commit(root), "utc": dt.datetime.now(dt.UTC).isoformat()}


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)
