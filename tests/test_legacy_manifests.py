"""Manifests written before the one-shape redesign (copied from artifacts exported by the previous
code, tests/data/legacy_manifests/) still parse, with typed defaults. The runtime's identical outputs on
those artifacts were checked once on the full artifacts (too big to commit); this keeps the schema
from drifting away from them."""

from pathlib import Path

import pytest

from dynexport.manifest import read_manifest
from dynexport.runtime import EntropyPolicy
from dynexport.runtime.early_exit import policy_from_manifest

LEGACY = Path(__file__).parent / "data" / "legacy_manifests"


@pytest.mark.parametrize("name", sorted(p.name for p in LEGACY.iterdir()))
def test_legacy_manifest_parses(name):
    m = read_manifest(LEGACY / name, verify=False)  # the graphs are not here; paths are still checked
    assert set(m.referenced()) <= set(m.files) and m.all_graphs()
    if m.method == "speculative":
        assert m.defaults.num_draft_tokens == "adaptive" and 0 < m.defaults.draft_cost_ratio < 1
    if m.method == "eagle":
        d = m.defaults
        assert (d.num_draft_tokens, d.tree_depth, d.tree_topk, d.tree_max_tokens, d.tree_dynamic) == (2, 5, 8, 32, True)
        assert d.head_cost_ratio and m.verify_ms
    if m.method == "bert_exits":  # one global threshold, no per-exit rules: the rule it always had
        assert m.policy.threshold > 0 and m.exits and not m.policy.candidates
        assert policy_from_manifest(m.policy) == EntropyPolicy(m.policy.threshold)
