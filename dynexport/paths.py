"""Where the files that ship with dynexport live (recipes, committed weights), and how a weights
reference in a recipe or on the command line is resolved.

A reference is either a directory path (absolute, or relative to the working directory) or the
name of a committed weights dir, looked up in `dynexport/weights/<method>/` (package data, so the
lookup works the same from a clone and from an installed wheel).
"""

from __future__ import annotations

from pathlib import Path

from .errors import AssetError

PACKAGE_DIR = Path(__file__).resolve().parent
RECIPES_DIR = PACKAGE_DIR / "recipes"
WEIGHTS_DIR = PACKAGE_DIR / "weights"


def committed(method: str) -> Path:
    """The committed weights of one method: dynexport/weights/<method> (early_exit, speculative, ...)."""
    return WEIGHTS_DIR / method


def resolve_weights(ref: str | Path, method: str, what: str) -> Path:
    """A weights dir from a path or the name of a committed one; AssetError naming both places."""
    path = Path(ref)
    if str(ref) and path.is_dir():
        return path
    named = committed(method) / str(ref)
    if str(ref) and path.name == str(ref) and named.is_dir():
        return named
    have = sorted(p.name for p in committed(method).iterdir() if p.is_dir()) if committed(method).is_dir() else []
    raise AssetError(f"{what} {str(ref)!r} is neither a directory nor one of the committed {what}s "
                     f"in {committed(method)} ({', '.join(have) or 'none'})")
