"""Batched decoding over one KV graph (runtime/batch.py): rows of different lengths match batch-1 calls,
forked rows continue their parent's cache, batched greedy rows equal the target's own greedy output, and
finished rows leave the batch or stay as padding without changing the others."""

from __future__ import annotations

import numpy as np
import pytest

from dynexport.manifest import read_manifest
from dynexport.runtime import load
from dynexport.runtime.batch import BatchLM, prefill, sample_rows
from dynexport.runtime.kv import LMSession
from dynexport.runtime.sampling import SamplingCfg

BACKENDS = ["openvino", "onnxruntime"]
GREEDY = SamplingCfg()


def batch_lm(art, backend) -> BatchLM:
    return BatchLM(art, read_manifest(art).target, backend)


def one_row_logits(art, backend, prefix: list[int], new: list[int]) -> np.ndarray:
    s = LMSession(art, read_manifest(art).target, backend)
    s.forward(prefix)
    s.commit(len(prefix))
    return s.forward(new)  # [T, V]


@pytest.mark.parametrize("backend", BACKENDS)
def test_forked_rows_of_different_lengths_match_single_calls(tiny_lm, backend):
    art, prefix = tiny_lm["artifact"], [5, 17, 42, 9, 33]
    lm = batch_lm(art, backend)
    prefill(lm, prefix[:-1])
    lm.fork([0, 0, 0])
    rows = [[prefix[-1], 7, 8, 9], [prefix[-1], 11], [prefix[-1], 60, 61]]
    t = max(map(len, rows))
    ids = np.array([r + [0] * (t - len(r)) for r in rows])  # padded [3, T]
    got = lm.append(ids, [len(r) for r in rows])  # [3, T, V]
    for b, r in enumerate(rows):
        ref = one_row_logits(art, backend, prefix[:-1], r)
        assert np.abs(got[b, : len(r)] - ref).max() < 1e-4
    # the next call continues each row after its own tokens only (padding masked out)
    nxt = lm.append(np.array([[3], [4], [5]]))[:, 0]  # [3, V]
    for b, (r, x) in enumerate(zip(rows, (3, 4, 5))):
        ref = one_row_logits(art, backend, prefix[:-1], r + [x])[-1]
        assert np.abs(nxt[b] - ref).max() < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_fork_with_repeats_continues_each_parent(tiny_lm, backend):
    art = tiny_lm["artifact"]
    lm = batch_lm(art, backend)
    prefill(lm, [5, 17])
    lm.fork([0, 0])
    lm.append(np.array([[20, 21], [30, 0]]), [2, 1])
    lm.fork([1, 0, 1])  # children: of row 1, of row 0, of row 1
    got = lm.append(np.array([[40], [41], [42]]))[:, 0]
    for b, seq in enumerate(([30, 40], [20, 21, 41], [30, 42])):
        assert np.abs(got[b] - one_row_logits(art, backend, [5, 17], seq)[-1]).max() < 1e-4
    assert lm.lengths.tolist() == [4, 5, 4]


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_greedy_rows_equal_the_targets_greedy_output(tiny_lm, backend):
    art = tiny_lm["artifact"]
    pipe = load(art, backend)
    ids = pipe.tokenizer.encode("the cat sat", add_special_tokens=False).ids
    ref = pipe.generate("the cat sat", max_new_tokens=12, draft=0, ignore_eos=True).tokens[0]
    lm = batch_lm(art, backend)
    prefill(lm, ids[:-1])
    lm.fork([0] * 3)
    rows = sample_rows(lm, [ids[-1]] * 3, GREEDY, np.random.default_rng(0), 12, lambda r: False)
    assert all(r.tokens == ref for r in rows)
    assert all(len(r.logprobs) == 12 and max(r.logprobs) <= 0 for r in rows)


@pytest.mark.parametrize("keep", [False, True])
def test_rows_finish_at_their_own_time(tiny_lm, keep):
    art = tiny_lm["artifact"]
    lm = batch_lm(art, "openvino")
    prefill(lm, [5, 17, 42])
    lm.fork([0] * 4)
    rng = np.random.default_rng(1)
    stop_at = [2, 5, 3, 8]
    rows = sample_rows(lm, [9] * 4, SamplingCfg(True, 1.0), rng, 20, lambda r: len(r.tokens) >= stop_at[r.index],
                       keep_finished=keep)
    assert [len(r.tokens) for r in rows] == stop_at
    if keep:  # each row's cache: the prefix, the pending token, its tokens but the last
        assert lm.lengths.tolist() == [3 + 1 + n - 1 for n in stop_at]
    else:
        assert lm.rows == 1  # the last live row


def test_sampled_rows_are_seeded_and_differ(tiny_lm):
    art = tiny_lm["artifact"]
    lm = batch_lm(art, "openvino")

    def draw(seed):
        prefill(lm, [5, 17, 42])
        lm.fork([0] * 4)
        return [r.tokens for r in sample_rows(lm, [9] * 4, SamplingCfg(True, 1.0), np.random.default_rng(seed), 10,
                                               lambda r: False)]
    a, b = draw(3), draw(3)
    assert a == b and len({tuple(t) for t in a}) > 1


def test_bad_fork_and_append_are_refused(tiny_lm):
    lm = batch_lm(tiny_lm["artifact"], "openvino")
    prefill(lm, [5, 17])
    for rows in ([], [1], [-1]):
        with pytest.raises(ValueError):
            lm.fork(rows)
    with pytest.raises(ValueError):
        lm.append(np.array([[1], [2]]))  # two rows for a one-row cache
    with pytest.raises(ValueError):
        sample_rows(lm, [1, 2], GREEDY, np.random.default_rng(0), 3, lambda r: False)


def test_score_rows_gives_each_tokens_log_prob(tiny_lm):
    from dynexport.runtime.batch import log_softmax, score_rows
    art, prefix = tiny_lm["artifact"], [5, 17, 42]
    lm = batch_lm(art, "openvino")
    prefill(lm, prefix[:-1])
    lm.fork([0, 0, 0])
    seqs = [[7, 8, 9], [11], []]
    got = score_rows(lm, [prefix[-1]] * 3, seqs)
    for q, lp in zip(seqs[:2], got[:2]):
        ref = log_softmax(one_row_logits(art, "openvino", prefix[:-1], [prefix[-1], *q[:-1]]))
        assert np.abs(lp - ref[np.arange(len(q)), q]).max() < 1e-4
    assert got[2].size == 0 and lm.lengths.tolist() == [2 + 3, 2 + 1, 2]  # the empty row only waited
