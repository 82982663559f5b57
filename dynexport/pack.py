"""Artifacts as one file for shipping to an edge device: `pack(artifact, out.tar.gz)` writes the
verified manifest and exactly the files it lists; `unpack(tar, out_dir)` extracts with every member
checked first (regular files and folders only, no links or devices, no absolute or `..` paths, only
names the manifest lists, a size cap), then verifies each sha256, and only then moves the directory
into place (atomic: a refused or interrupted unpack leaves nothing)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path, PurePosixPath

from .atomic import atomic_output_dir
from .errors import DynexportError
from .manifest import MANIFEST, read_manifest

MAX_UNPACKED_BYTES = 64 << 30  # refuse archives that claim more than this


class PackError(DynexportError):
    """An archive that is not a safe, intact dynexport artifact."""


def pack(artifact: Path | str, out: Path | str) -> list[str]:
    """Write `out` (.tar.gz) from a verified artifact; returns the member names (under the artifact's name)."""
    root, out = Path(artifact), Path(out)
    m = read_manifest(root)  # verifies every sha256 first: a tampered artifact is not shipped
    names = [MANIFEST, *sorted(m.files)]
    tmp = out.with_name(f".{out.name}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for rel in names:
                info = tar.gettarinfo(str(root / rel), arcname=f"{root.name}/{rel}")
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(root / rel, "rb") as f:
                    tar.addfile(info, f)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return [f"{root.name}/{n}" for n in names]


def unpack(archive: Path | str, out: Path | str, overwrite: bool = False) -> Path:
    """Extract a packed artifact into `out` (the artifact dir itself) and verify it; returns `out`."""
    archive, out = Path(archive), Path(out)
    try:
        tar = tarfile.open(archive, "r:gz")
    except (OSError, tarfile.TarError, EOFError) as e:
        raise PackError(f"{archive} is not a readable .tar.gz: {e}") from None
    with tar, atomic_output_dir(out, overwrite) as tmp:
        try:
            members = tar.getmembers()
        except (OSError, tarfile.TarError, EOFError) as e:
            raise PackError(f"{archive} is truncated or corrupt: {e}") from None
        top, files = check_members(members, archive)
        try:
            listed = json.loads(tar.extractfile(files[MANIFEST]).read()).get("files")
        except (ValueError, AttributeError, OSError, tarfile.TarError, EOFError) as e:
            raise PackError(f"{archive}: its {MANIFEST} is not a readable JSON object: {e}") from None
        extra = sorted(set(files) - {MANIFEST} - set(listed if isinstance(listed, dict) else {}))
        if extra:
            raise PackError(f"{archive} holds files its manifest does not list: {', '.join(extra[:5])}")
        for rel, member in files.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            try:
                with open(dest, "wb") as f:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
            except (OSError, tarfile.TarError, EOFError) as e:
                raise PackError(f"{archive} is truncated or corrupt at {rel}: {e}") from None
        read_manifest(tmp)  # every sha256, before the directory appears
    return out


def check_members(members: list[tarfile.TarInfo], archive: Path) -> tuple[str, dict[str, tarfile.TarInfo]]:
    """Every member under one top folder, regular files and folders only, safe relative names."""
    files, tops, total = {}, set(), 0
    for m in members:
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or "\\" in m.name or "\0" in m.name or not p.parts:
            raise PackError(f"{archive}: member {m.name!r} has an unsafe path")
        if not (m.isfile() or m.isdir()):
            raise PackError(f"{archive}: member {m.name!r} is a link or special file; artifacts hold regular files only")
        tops.add(p.parts[0])
        if m.isfile():
            if len(p.parts) < 2:
                raise PackError(f"{archive}: member {m.name!r} is not inside the artifact's folder")
            rel = PurePosixPath(*p.parts[1:]).as_posix()
            if rel in files:
                raise PackError(f"{archive}: member {rel!r} appears twice")
            files[rel] = m
            total += m.size
    if len(tops) != 1:
        raise PackError(f"{archive} must hold one artifact folder, found {sorted(tops)[:5] or 'none'}")
    if MANIFEST not in files:
        raise PackError(f"{archive} has no {MANIFEST}: not a packed dynexport artifact")
    if total > MAX_UNPACKED_BYTES:
        raise PackError(f"{archive} claims {total} bytes unpacked, more than {MAX_UNPACKED_BYTES}")
    return tops.pop(), files
