"""`dynexport pack / unpack`: a round trip gives the same answers; archives that try to escape the
output dir, carry links, extra or tampered files, or are truncated are refused and leave nothing."""

from __future__ import annotations

import io
import tarfile

import pytest
from helpers import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynexport.errors import DynexportError
from dynexport.pack import pack, unpack
from dynexport.runtime import load


@pytest.fixture(scope="module")
def packed(bert_artifact, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "clf.tar.gz"
    names = pack(bert_artifact[0], out)
    return {"art": bert_artifact[0], "tar": out, "names": names}


def test_round_trip_answers_the_same(packed, tmp_path):
    art = packed["art"]
    assert packed["names"][0] == f"{art.name}/manifest.json"
    with tarfile.open(packed["tar"]) as t:
        assert sorted(t.getnames()) == sorted(packed["names"]) and all(m.isfile() for m in t.getmembers())
    out = unpack(packed["tar"], tmp_path / "copy")
    texts = ["what a lovely flight", "lost my bag again"]
    assert load(out).run(texts).labels == load(art).run(texts).labels
    with pytest.raises(DynexportError, match="already exists"):
        unpack(packed["tar"], tmp_path / "copy")


def test_a_tampered_artifact_is_not_packed(bert_artifact, tmp_path):
    import shutil
    art = tmp_path / "art"
    shutil.copytree(bert_artifact[0], art)
    graph = next(art.glob("*.bin"))
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
    with pytest.raises(DynexportError, match="sha256"):
        pack(art, tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


def rewrite(src, dst, edit):
    """A copy of archive `src` with `edit(members: list[(TarInfo, bytes | None)])` applied."""
    with tarfile.open(src) as t:
        items = [(m, t.extractfile(m).read() if m.isfile() else None) for m in t.getmembers()]
    items = edit(items)
    with tarfile.open(dst, "w:gz") as t:
        for m, data in items:
            t.addfile(m, io.BytesIO(data) if data is not None else None)
    return dst


def member(name, data=b"x", kind=tarfile.REGTYPE, link=""):
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    return m, data if kind == tarfile.REGTYPE else None


def flip_graph(items):
    out = []
    for m, d in items:
        if m.name.endswith(".bin"):
            d = bytes([d[0] ^ 1]) + d[1:]
        out.append((m, d))
    return out


EVIL = {
    "absolute": (lambda items: items + [member("/tmp/evil")], "unsafe path"),
    "dotdot": (lambda items: items + [member("art/../../evil")], "unsafe path"),
    "symlink": (lambda items: items + [member("art/link", kind=tarfile.SYMTYPE, link="/etc/passwd")], "link"),
    "hardlink": (lambda items: items + [member("art/hard", kind=tarfile.LNKTYPE, link="art/manifest.json")], "link"),
    "fifo": (lambda items: items + [member("art/fifo", kind=tarfile.FIFOTYPE)], "special"),
    "extra file": (lambda items: [(m, d) for m, d in items] + [member(items[0][0].name.split("/")[0] + "/run.sh")],
                   "does not list"),
    "two folders": (lambda items: items + [member("other/file")], "one artifact folder"),
    "no manifest": (lambda items: [(m, d) for m, d in items if not m.name.endswith("manifest.json")], "no manifest"),
    "flipped bit": (flip_graph, "sha256"),
}


@pytest.mark.parametrize("case", EVIL)
def test_unsafe_or_damaged_archives_are_refused_and_leave_nothing(packed, tmp_path, case):
    edit, message = EVIL[case]
    bad = rewrite(packed["tar"], tmp_path / "bad.tar.gz", edit)
    with pytest.raises(DynexportError, match=message):
        unpack(bad, tmp_path / "out" / "art")
    assert not (tmp_path / "out" / "art").exists() and not (tmp_path / "evil").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # no temp dir left behind either


def test_truncated_archive(packed, tmp_path):
    """Cut inside a member: refused, nothing left. Cut only in the gzip trailer or the tar's end-of-archive
    padding: every member is whole, so the unpack may succeed, and then every sha256 has been verified."""
    from dynexport.manifest import read_manifest
    data = packed["tar"].read_bytes()
    for cut in (10, len(data) // 3, len(data) // 2, len(data) - 4000):
        bad = tmp_path / f"cut{cut}.tar.gz"
        bad.write_bytes(data[:cut])
        with pytest.raises(DynexportError, match="not a readable|truncated or corrupt"):
            unpack(bad, tmp_path / f"out{cut}")
        assert not (tmp_path / f"out{cut}").exists()
    bad = tmp_path / "tail.tar.gz"
    bad.write_bytes(data[:-8])  # the gzip CRC and length
    try:
        read_manifest(unpack(bad, tmp_path / "tail"))
    except DynexportError as e:
        assert "truncated or corrupt" in str(e) and not (tmp_path / "tail").exists()


PART = st.lists(st.sampled_from(["a", "..", "/", ".", "\\", "b", "\0", " ", "~"]), min_size=1, max_size=8).map("".join)
NAMES = st.lists(PART, min_size=1, max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=NAMES)
def test_no_member_name_escapes(packed, tmp_path_factory, names):
    root = tmp_path_factory.mktemp("fuzz")
    bad = rewrite(packed["tar"], root / "bad.tar.gz", lambda items: items + [member(n) for n in names])
    with pytest.raises(DynexportError):
        unpack(bad, root / "out" / "art")
    assert sorted(p.name for p in root.iterdir()) == ["bad.tar.gz", "out"]
    assert list((root / "out").iterdir()) == []


def test_cli_pack_and_unpack(bert_artifact, tmp_path):
    p = run_cli("pack", bert_artifact[0], tmp_path / "a.tar.gz")
    assert p.returncode == 0 and "wrote" in p.stdout, p.stderr
    p = run_cli("unpack", tmp_path / "a.tar.gz", tmp_path / "a")
    assert p.returncode == 0 and "sha256 verified" in p.stdout, p.stderr
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    p = run_cli("unpack", tmp_path / "junk.tar.gz", tmp_path / "b")
    assert p.returncode == 2 and p.stderr.startswith("error:") and "Traceback" not in p.stderr
