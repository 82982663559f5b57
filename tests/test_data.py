"""Dataset reading, normalized dedup and deterministic splitting."""

import pytest

from dynexport.data import dedup, load_splits, normalize_key, read_rows
from dynexport.errors import AssetError


def test_normalize_key_collapses_retweets():
    a = normalize_key("RT @bob: Loving the new phone!! http://t.co/abc @alice")
    assert a == normalize_key("loving the NEW phone") == "loving the new phone"


def test_dedup_drops_conflicts_and_repeats():
    rows = [("good day", "pos"), ("Good day!", "pos"), ("meh", "neu"), ("MEH", "pos"), ("bad", "neg")]
    kept, info = dedup(rows)
    assert sorted(k for k, _, _ in kept) == ["bad", "good day"]
    assert info["conflicting_keys_dropped"] == 1


def test_split_is_deterministic_and_disjoint(tiny):
    a = load_splits(tiny["data"], "text", "label", ("neg", "neu", "pos"), 50, 50, 0)
    b = load_splits(tiny["data"], "text", "label", ("neg", "neu", "pos"), 50, 50, 0)
    assert a == b
    texts = [set(e.text for e in s) for s in (a.train, a.val, a.test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    c = load_splits(tiny["data"], "text", "label", ("neg", "neu", "pos"), 50, 50, 1)
    assert c.info["key_sha256"]["test"] != a.info["key_sha256"]["test"]


def test_bad_dataset_files(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("words,sentiment\nhello,pos\n")
    with pytest.raises(AssetError, match="lacks the columns"):
        read_rows(p, "text", "label")
    p.write_text("text,label\n" + "".join(f"t{i},x\n" for i in range(30)))
    with pytest.raises(AssetError, match="not among"):
        load_splits(p, "text", "label", ("neg", "pos"), 10, 10, 0)
    with pytest.raises(AssetError, match="cannot hold"):
        load_splits(p, "text", "label", None, 20, 20, 0)
    jl = tmp_path / "d.jsonl"
    jl.write_text('{"text": "a b", "label": "pos"}\n{"text": "c d", "label": "neg"}\n')
    assert read_rows(jl, "text", "label") == [("a b", "pos"), ("c d", "neg")]
