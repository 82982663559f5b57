"""Text → (input_ids, attention_mask) numpy arrays with the `tokenizers` library (torch-free).

Training, export, calibration and the runtime all tokenize through this one class, so the ids a
graph sees at run time are the ids it was trained and calibrated on. Texts longer than
`max_length` tokens are truncated and counted; the caller decides whether to warn or refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..errors import DynexportError, GraphError, InputError, brief


@dataclass(frozen=True)
class Batch:
    input_ids: np.ndarray  # [batch, seq] int64
    attention_mask: np.ndarray  # [batch, seq] int64
    truncated: tuple[bool, ...]  # per text: longer than max_length, cut


PROBE = "Hello, world! 1 2 3 déjà vu — 東京 🍎"


def load_tokenizer(path: Path) -> Tokenizer:
    """A tokenizer.json the `tokenizers` library reads and that encodes and decodes a probe text; anything
    else (corrupt, truncated, changed and re-hashed) is a GraphError."""
    name = f"{Path(path).parent.name}/{Path(path).name}"
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for a file it cannot parse
        raise GraphError(f"{name} is not a tokenizer the `tokenizers` library can read ({brief(e)})") from e
    tokenized(name, lambda: tok.decode(tok.encode(PROBE).ids))
    return tok


def tokenized(name: str, fn):
    """fn() of a tokenizer call; the Rust panic a damaged vocabulary causes (pyo3's PanicException, a
    BaseException, not an Exception) is a GraphError naming the tokenizer."""
    try:
        return fn()
    except (KeyboardInterrupt, SystemExit, GeneratorExit, DynexportError):
        raise
    except BaseException as e:  # PanicException cannot be imported by name: pyo3 makes it at run time
        raise GraphError(f"{name}: the tokenizer failed ({type(e).__name__}: {brief(e)}); the file is damaged, "
                         "re-export the artifact") from e


class TextEncoder:
    def __init__(self, tokenizer_json: Path, max_length: int, pad_id: int):
        self.max_length = max_length
        self.pad_id = pad_id
        self._tok = load_tokenizer(tokenizer_json)
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)

    def __call__(self, texts: list[str]) -> Batch:
        check_texts(texts)
        encs = tokenized("tokenizer.json", lambda: self._tok.encode_batch(list(texts)))
        seq = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), seq), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), seq), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        return Batch(ids, mask, tuple(bool(e.overflowing) for e in encs))


def check_texts(texts) -> None:
    """Clear errors for the inputs a classifier cannot take: not a list of non-empty strings."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise InputError(f"texts must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise InputError("texts is empty: pass at least one string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"texts[{i}] is {type(t).__name__}, not str")
        if not t.strip():
            raise InputError(f"texts[{i}] is empty or whitespace only")
