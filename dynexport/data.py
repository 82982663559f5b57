"""Labelled text data: read CSV/JSONL, deduplicate on a normalized key, split deterministically.

Torch-free. Tweets repeat a lot (retweets), so the split is made on a normalized text key
(lowercase, no `RT @user:` prefix, URLs, @mentions or punctuation); keys whose copies carry
conflicting labels are dropped. The split is recorded as counts plus a sha256 of each split's keys.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .errors import AssetError

_RT = re.compile(r"^\s*rt\s+@\w+:?\s*")
_URL = re.compile(r"https?://\S+|www\.\S+")
_MENTION = re.compile(r"@\w+")
_PUNCT = re.compile(r"[^\w\s]|_")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Example:
    text: str
    label: int


@dataclass(frozen=True)
class Splits:
    train: tuple[Example, ...]
    val: tuple[Example, ...]
    test: tuple[Example, ...]
    labels: tuple[str, ...]
    info: dict  # dedup counts, seed, sizes, per-split key sha256 (goes into the manifest)


def normalize_key(text: str) -> str:
    t = _RT.sub("", text.lower())
    t = _MENTION.sub(" ", _URL.sub(" ", t))
    return _SPACE.sub(" ", _PUNCT.sub(" ", t)).strip()


def read_rows(path: Path, text_column: str, label_column: str) -> list[tuple[str, str]]:
    """(text, label-string) rows of a CSV (header row) or JSONL file; bad bytes are replaced."""
    rows: list[tuple[str, str]] = []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        if path.suffix.lower() in (".jsonl", ".json"):
            records = (json.loads(line) for line in f if line.strip())
        else:
            records = csv.DictReader(f)
        for i, rec in enumerate(records):
            if text_column not in rec or label_column not in rec:
                raise AssetError(
                    f"{path}: record {i} lacks the columns {text_column!r} and {label_column!r} "
                    f"(has {sorted(rec)}); set dataset.text_column / dataset.label_column in the recipe"
                )
            rows.append((str(rec[text_column]), str(rec[label_column]).strip()))
    if not rows:
        raise AssetError(f"{path}: no rows")
    return rows


def dedup(rows: list[tuple[str, str]]) -> tuple[list[tuple[str, str, str]], dict]:
    """One (key, text, label) per normalized key; keys with conflicting labels are dropped."""
    by_key: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for text, label in rows:
        key = normalize_key(text)
        if key:
            by_key[key].append((text, label))
    kept, conflicts = [], 0
    for key, items in by_key.items():
        if len({label for _, label in items}) > 1:
            conflicts += 1
            continue
        kept.append((key, items[0][0], items[0][1]))
    kept.sort()  # order independent of the file's row order
    return kept, {"rows": len(rows), "unique_keys": len(by_key), "conflicting_keys_dropped": conflicts}


def _keys_sha(items: list[tuple[str, str, str]]) -> str:
    return hashlib.sha256("\n".join(sorted(k for k, _, _ in items)).encode()).hexdigest()


def load_splits(path: Path, text_column: str, label_column: str, labels: tuple[str, ...] | None,
                val_size: int, test_size: int, seed: int) -> Splits:
    kept, info = dedup(read_rows(path, text_column, label_column))
    found = sorted({label for _, _, label in kept})
    labels = tuple(labels) if labels else tuple(found)
    unknown = set(found) - set(labels)
    if unknown:
        raise AssetError(f"{path}: labels {sorted(unknown)} are not among the recipe's labels {list(labels)}")
    if val_size + test_size >= len(kept):
        raise AssetError(f"{path}: {len(kept)} unique examples cannot hold val {val_size} + test {test_size}")
    random.Random(seed).shuffle(kept)
    test, val, train = kept[:test_size], kept[test_size:test_size + val_size], kept[test_size + val_size:]
    index = {name: i for i, name in enumerate(labels)}

    def examples(items):
        return tuple(Example(text, index[label]) for _, text, label in items)

    info.update(seed=seed, sizes={"train": len(train), "val": len(val), "test": len(test)},
                key_sha256={"train": _keys_sha(train), "val": _keys_sha(val), "test": _keys_sha(test)},
                normalization="lowercase; drop RT @user:, URLs, @mentions, punctuation; conflicts dropped")
    return Splits(examples(train), examples(val), examples(test), labels, info)
