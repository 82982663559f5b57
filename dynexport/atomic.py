"""Atomic output directories: everything is written into a hidden temp dir that replaces the target
only when the block finishes, so an interrupted export or conversion leaves nothing half-made."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import DynexportError


@contextlib.contextmanager
def atomic_output_dir(out: Path, overwrite: bool):
    """Yield a temp dir; on success it replaces `out`, on any exception (Ctrl-C too) it is removed."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise DynexportError(f"output dir {out} already exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
            shutil.rmtree(old)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
