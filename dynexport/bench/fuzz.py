"""Fuzz surfaces for the reliability figures: each `Surface` is a hypothesis strategy of tries and a function
that runs one try and names its outcome — `ok`, `refused` (the documented error: a DynexportError) or
`unhandled: <type>: <line>` (a defect). `run_surface` runs N tries and counts the outcomes; the fast tests
run a few of each (tests/test_fuzz.py), scripts/bench_reliability.py runs ≥ 500 per surface.

Surfaces on an early-exit artifact (`artifact_surfaces(dir)`; the dir is copied once, never changed):
- `manifest`: manifest.json with keys deleted, added or set to hostile values (huge numbers, NaN, NUL,
  unicode and lone surrogates, `..` and absolute paths, wrong types).
- `tampered`: one byte flipped or the file cut, the manifest untouched: must be refused as IntegrityError;
  outcome `detected` or `missed`.
- `rehashed`: the same damage with the manifest re-hashed to match (cannot be detected): the loader and the
  runtime must refuse it or answer, never crash; an answer must still be well-formed.
- `texts`: `pipe.run` inputs — unicode with control characters and lone surrogates, 1 MB texts, empty and
  wrong-typed lists, NaN / inf / out-of-range policy parameters, large batches.
And `cli_surface(dir, work)`: `dynexport <command> <args>` in a subprocess with hostile flags and values.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as fixed_seed
from hypothesis import strategies as st

from ..errors import DynexportError, brief
from ..manifest import MANIFEST, read_manifest, write_manifest

HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24), st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from(["..", "../../etc/passwd", "/etc/passwd", "a\x00b", "~/x", "seg0.xml", "C:\\x", "\ud800", "\u202e",
                     "x" * 5000, "manifest.json", "tokenizer", "."]))
TEXT = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)  # incl. surrogates


@dataclass(frozen=True)
class Surface:
    name: str
    strategy: st.SearchStrategy
    attempt: Callable[[Any], str]  # one try → its outcome name


def outcome(fn: Callable[[], Any], check: Callable[[Any], None] = lambda r: None) -> str:
    """ok (fn's result passed `check`) / refused: <DynexportError type> / unhandled: <type>: <line>."""
    try:
        check(fn())
        return "ok"
    except DynexportError as e:
        return f"refused: {type(e).__name__}"
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # the defect this harness exists to count (Rust panics are BaseExceptions)
        return f"unhandled: {type(e).__name__}: {brief(e, 120)}"


def run_surface(surface: Surface, tries: int, seed: int = 0) -> Counter:
    """`tries` generated inputs (seeded; no shrinking, no example database) → outcome counts."""
    counts: Counter = Counter()

    @fixed_seed(seed)
    @settings(max_examples=tries, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(surface.strategy)
    def each(x):
        counts[surface.attempt(x)] += 1

    each()
    return counts


def _nodes(doc, parent=None, key=None):
    """Every (container, key) below the JSON document `doc`."""
    if parent is not None:
        yield parent, key
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in list(items):
        yield from _nodes(v, doc, k)


def mutate(doc: dict, edits: list[tuple[int, str, Any]]) -> dict:
    """Apply (node pick, op, value) edits: op set | delete | add (a new key in a dict node or the root)."""
    doc = json.loads(json.dumps(doc))
    for pick, op, value in edits:
        nodes = list(_nodes(doc))
        container, key = nodes[pick % len(nodes)]
        if op == "set":
            container[key] = value
        elif op == "delete":
            container.pop(key)
        else:
            target = container[key] if isinstance(container[key], dict) else doc
            target[f"extra_{pick % 7}"] = value
    return doc


EDITS = st.lists(st.tuples(st.integers(0, 10 ** 6), st.sampled_from(["set", "delete", "add"]), HOSTILE), min_size=1,
                 max_size=4)


DAMAGE = (st.integers(0, 10 ** 9), st.booleans(), st.lists(st.integers(0, 10 ** 9), min_size=1, max_size=8))
TEXTS = st.one_of(st.lists(TEXT, max_size=6), st.lists(TEXT, min_size=1, max_size=200), st.just(["x" * 1_000_000]),
                  st.just([]), st.just("one string, not a list"),
                  st.lists(st.one_of(st.none(), st.integers(), st.binary(max_size=8), TEXT), min_size=1, max_size=4))
THRESHOLD = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3),
                      st.lists(st.floats(0, 3), max_size=3).map(tuple))
OVERRIDES = st.fixed_dictionaries({}, optional={
    "batch_size": st.one_of(st.integers(-2, 10 ** 6), st.floats(), st.booleans(), st.none()),
    "sort_by_length": st.one_of(st.booleans(), st.integers(0, 2), st.none()),
    "policy": st.one_of(st.sampled_from(["entropy", "patience", "learned", "full", "nope", ""]), st.integers())})


def well_formed(labels: set[str], n: int) -> Callable[[Any], None]:
    """A check of an early-exit Result: n labels from the artifact's set, finite probabilities that sum to 1."""
    def check(r) -> None:
        p = np.asarray(r.probabilities)
        if len(r.labels) != n or not set(r.labels) <= labels or p.shape[0] != n or not np.isfinite(p).all() \
                or not np.allclose(p.sum(-1), 1.0, atol=1e-3):
            raise AssertionError(f"malformed result: labels {r.labels[:3]}, probabilities {p[:2].tolist()}")
    return check


def artifact_surfaces(artifact: Path, work: Path | None = None) -> list[Surface]:
    """The four surfaces of one early-exit artifact; `work` holds the per-try copies (a temp dir if None)."""
    from ..runtime import EntropyPolicy, load
    work = Path(work or tempfile.mkdtemp(prefix="dynexport-fuzz-"))
    clean = work / "clean"
    if not clean.exists():
        shutil.copytree(artifact, clean)
    doc = json.loads((clean / MANIFEST).read_text())
    labels = set(doc["labels"])
    files = sorted(doc["files"])
    try_dir = work / "try"

    def fresh() -> Path:
        shutil.rmtree(try_dir, ignore_errors=True)
        shutil.copytree(clean, try_dir)
        return try_dir

    def load_and_run(d: Path, backend: str = "openvino"):
        return load(d, backend=backend).run(["a good day", "bad"])

    def manifest_try(edits) -> str:
        d = fresh()
        text = json.dumps(mutate(doc, edits), allow_nan=True)
        (d / MANIFEST).write_text(text, errors="surrogatepass")
        return outcome(lambda: load_and_run(d), well_formed(labels, 2))

    def damage(d: Path, pick: int, cut: bool, flips: list[int]) -> None:
        """Cut a file short or flip bits in it; the file always changes (flips that cancel out are dropped)."""
        path = d / files[pick % len(files)]
        data = bytearray(path.read_bytes())
        if cut or not data:
            data = data[: pick % max(len(data), 1)]
        else:
            odd = [k for k, c in Counter((f % len(data), f % 8) for f in flips).items() if c % 2]
            for pos, bit in odd or [(flips[0] % len(data), flips[0] % 8)]:
                data[pos] ^= 1 << bit
        path.write_bytes(bytes(data))

    def tampered_try(args) -> str:
        d = fresh()
        damage(d, *args)
        seen = outcome(lambda: read_manifest(d))
        return {"refused: IntegrityError": "detected", "ok": "missed"}.get(seen, seen)

    def rehashed_try(args) -> str:
        d = fresh()
        damage(d, *args[:3])
        write_manifest(d, read_manifest(d, verify=False))
        return outcome(lambda: load_and_run(d, args[3]), well_formed(labels, 2))

    pipe = load(clean)

    def texts_try(args) -> str:
        texts, threshold, overrides = args

        def call():
            config = None if threshold is None else EntropyPolicy(threshold=threshold)
            return pipe.run(texts, config, **overrides)
        return outcome(call, well_formed(labels, len(texts)) if isinstance(texts, list) else lambda r: None)

    return [Surface("manifest", EDITS, manifest_try),
            Surface("tampered", st.tuples(*DAMAGE), tampered_try),
            Surface("rehashed", st.tuples(*DAMAGE, st.sampled_from(["openvino", "onnxruntime"])), rehashed_try),
            Surface("texts", st.tuples(TEXTS, THRESHOLD, OVERRIDES), texts_try)]


COMMANDS = ["classify", "evaluate", "generate", "calibrate", "solve", "imagine", "pack", "unpack", "inspect", "export",
            "--help", ""]
FLAGS = ["--backend", "--device", "--policy", "--threshold", "--patience", "--batch-size", "--split", "--steps",
         "--max-new-tokens", "--temperature", "--seed", "--strategy", "--tol", "--out", "--overwrite", "--help",
         "--weight-format", "--quant-mode", "-m", "--bogus"]
ARG_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30)  # argv: no NUL


def cli_surface(artifact: Path, work: Path, timeout_s: float = 120.0) -> Surface:
    """`dynexport <command> <args>` in a subprocess: exit 0, or exit 2 with one `error:` line, no traceback;
    `export` only ever gets a model path that does not exist (a real one would start a long export)."""
    import subprocess
    import sys
    paths = [str(artifact), str(work / "out.tar.gz"), str(work / "unpacked"), "/nonexistent", "..", "/", "",
             str(artifact / "manifest.json")]
    value = st.one_of(st.sampled_from(paths), ARG_TEXT, st.floats().map(str), st.integers(-5, 10 ** 12).map(str),
                      st.sampled_from(["nan", "inf", "-1", "0", "openvino", "onnxruntime", "int8", "auto", "full"]))
    args = st.lists(st.one_of(value, st.sampled_from(FLAGS)), max_size=6)

    def attempt(drawn) -> str:
        command, rest = drawn
        argv = [c for c in command.split(" ") if c] + rest
        if "export" in argv[:1]:
            argv = ["export", "early-exit", "-m", str(work / "no-such-model"), str(work / "export-out"), *rest]
        elif command == "classify ARTIFACT":  # a valid call, then random flags and values
            argv = ["classify", str(artifact), "a good day", *rest]
        try:
            r = subprocess.run([sys.executable, "-m", "dynexport", *argv], capture_output=True, text=True,
                               timeout=timeout_s, cwd=work, errors="replace")
        except subprocess.TimeoutExpired:
            return "unhandled: hang"
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        if "Traceback" in r.stderr or r.returncode not in (0, 2) or (r.returncode == 2 and len(errors) != 1):
            tail = (r.stderr.strip().splitlines() or [""])[-1][:120]
            return f"unhandled: exit {r.returncode}: {tail}"
        return "ok" if r.returncode == 0 else "refused: exit 2"

    return Surface("cli", st.tuples(st.sampled_from(COMMANDS + ["classify ARTIFACT"] * 4), args), attempt)


def is_defect(name: str) -> bool:
    """An outcome the targets count against: an unhandled error, or tampering the verifier missed."""
    return name.startswith("unhandled") or name == "missed"
