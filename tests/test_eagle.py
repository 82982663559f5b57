"""EAGLE on tiny models: the head's training-time-test unroll, export parity, greedy == target (chains and
trees), exact tree sampling (chi-square, and a broken rule must fail), bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import BLOCK_TORCH, export_lm, make_tiny_llama, pvalue, run_cli, target_dists

from dynexport.models.eagle_head import init_head
from dynexport.models.llama import LlamaCfg, causal_mask
from dynexport.runtime import FixedDraft, TreeCfg
from dynexport.train.eagle import chain_acceptance, eagle_loss, ttt_mask, unrolled

CFG = LlamaCfg(hidden=32, heads=4, kv_heads=2, head_dim=8, rope_theta=10000.0, eps=1e-6)


def _tiny_sd(layers: int = 2, vocab: int = 50, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    h, kv = CFG.hidden, CFG.kv_heads * CFG.head_dim
    sd = {"model.embed_tokens.weight": r(vocab, h), "model.norm.weight": 1 + r(h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        sd |= {p + "input_layernorm.weight": 1 + r(h), p + "post_attention_layernorm.weight": 1 + r(h),
               p + "self_attn.q_proj.weight": r(h, h), p + "self_attn.k_proj.weight": r(kv, h),
               p + "self_attn.v_proj.weight": r(kv, h), p + "self_attn.o_proj.weight": r(h, h),
               p + "mlp.gate_proj.weight": r(64, h), p + "mlp.up_proj.weight": r(64, h),
               p + "mlp.down_proj.weight": r(h, 64)}
    return sd


@pytest.fixture()
def head():
    torch.manual_seed(0)
    model = init_head(CFG, _tiny_sd(), torch.arange(40), n_layers=2)
    with torch.no_grad():
        model.fc.weight.normal_(0, 0.2)  # not the pass-through start: every input must matter
    return model.eval()


@torch.no_grad()
def test_training_time_test_matches_incremental_drafting(head):
    """Pass d of the unroll at row t+d−1 == drafting d tokens after position t with a KV cache."""
    b, length, depth = 2, 9, 3
    ids = torch.randint(0, 50, (b, length))
    feats = torch.randn(b, length, CFG.hidden)
    outs = unrolled(head, ids, feats, depth)
    for t in (0, 3, length - depth - 1):
        # true inputs (f_j, x_{j+1}) for j ≤ t in one call, then one call per draft depth
        pos = torch.arange(t + 1)[None].expand(b, -1)
        _, f, k, v = head(ids[:, 1:t + 2], feats[:, :t + 1], pos, causal_mask(0, t + 1, b), *head.empty_past(b, 0))
        got, prev = [f[:, -1]], f[:, -1:]
        for d in range(2, depth + 1):
            p = t + d - 1
            _, prev, k, v = head(ids[:, p + 1:p + 2], prev, torch.full((b, 1), p), causal_mask(k.shape[2], 1, b), k, v)
            got.append(prev[:, 0])
        for d in range(depth):
            torch.testing.assert_close(outs[d][:, t + d], got[d], atol=1e-5, rtol=1e-5)


def test_ttt_mask_rows_always_see_themselves():
    m = ttt_mask(6, 3, 1)[0, 0]  # [6, 18]
    assert m.shape == (6, 18)
    assert (m[:, -6:].diagonal() == 0).all()
    assert (m[4, :6] == 0).sum() == 3 and m[4, 6 + 3] == 0 and m[4, 12 + 4] == 0  # j ≤ 2, pass-2 key 3, own


def test_loss_trains_and_acceptance_counts_chains(head):
    """A few steps on a fixed batch lower the loss; acceptance is a chain product (non-increasing)."""
    torch.manual_seed(1)
    ids = torch.randint(0, 40, (4, 12))
    feats = torch.randn(4, 12, CFG.hidden)
    params = head.trainable()
    opt = torch.optim.Adam(params, lr=3e-3)
    first = None
    for _ in range(30):
        loss, parts = eagle_loss(head, unrolled(head, ids, feats, 2), feats, 0.1)
        first = first if first is not None else float(loss)
        opt.zero_grad(), loss.backward(), opt.step()
    assert float(loss) < 0.8 * first and len(parts) == 2
    top1 = torch.randint(0, 40, (4, 12))
    acc = chain_acceptance(head.eval(), ids, feats, top1, torch.arange(40), 3)
    rates = acc["chain_acceptance"]
    assert rates[0] >= rates[1] >= rates[2] and acc["tau"] == pytest.approx(1 + sum(rates), abs=1e-3)


def test_export_manifest_parity_and_cost_curve(tiny_eagle):
    import json
    m = json.loads((tiny_eagle["artifact"] / "manifest.json").read_text())
    assert m["method"] == "eagle" and m["head"]["vocab_file"] == "head_vocab.npy"
    assert [o["name"] for o in m["target"]["outputs"]][:2] == ["logits", "hidden"]
    assert set(m["parity"]) == {"target/openvino", "target/onnxruntime", "head/openvino", "head/onnxruntime"}
    assert max(m["parity"].values()) < 1e-4, m["parity"]
    assert set(m["verify_ms"]) >= {"1", "8", "64"} and all(v > 0 for v in m["verify_ms"].values())
    assert 0 < m["defaults"]["head_cost_ratio"] < 5
    assert m["source"]["head"]["training"]["train_steps"] == 120


def test_head_for_another_target_is_refused(tiny_eagle, tmp_path):
    from dynexport.errors import AssetError
    other = make_tiny_llama(tmp_path / "other", seed=5, train_steps=0)
    with pytest.raises(AssetError, match="trained for another target"):
        export_lm("eagle", tmp_path / "out", other, tiny_eagle["head"])
    assert not (tmp_path / "out").exists()


# ---- runtime ----

BACKENDS = ["openvino", "onnxruntime"]
PROMPTS = ["the cat sat", "def f ( x", "1 2 3"]


@pytest.fixture(scope="module", params=BACKENDS)
def eagle(request, tiny_eagle):
    from dynexport.runtime import load
    return load(tiny_eagle["artifact"], request.param)


def test_greedy_chain_and_tree_equal_the_target(eagle):
    """Greedy EAGLE output == the target's greedy output token for token, chains and trees; drafts get
    accepted (the trained tiny head), so accepted paths and head/target cache updates are exercised."""
    accepted = 0
    for prompt in PROMPTS:
        ref = eagle.generate(prompt, max_new_tokens=24, draft=0, ignore_eos=True)
        for kw in ({"draft": FixedDraft(1)}, {"draft": 4}, {"draft": TreeCfg(depth=4, topk=3, max_tokens=10, dynamic=False)},
                   {"draft": "tree"}, {}):
            got = eagle.generate(prompt, max_new_tokens=24, ignore_eos=True, **kw)
            assert got.tokens == ref.tokens, (prompt, kw)
            assert got.stats.target_calls < ref.stats.target_calls or got.stats.accepted == 0
            accepted += got.stats.accepted
    assert accepted > 50


def test_dynamic_tree_deepens_only_when_it_pays(tiny_eagle):
    """The dynamic tree's depth follows the cost model: a head call priced far above a target call never
    deepens (one head call a round: the update), a free one deepens (more head calls, bigger trees);
    output stays the target's either way."""
    from dynexport.runtime import load
    pipe = load(tiny_eagle["artifact"], "openvino")
    import dataclasses
    ref = pipe.generate("the cat sat", max_new_tokens=30, draft=0, ignore_eos=True)
    per_round = {}
    for head_ms in (1e6, 0.0):
        pipe.cost = dataclasses.replace(pipe.cost, head_ms=head_ms)
        got = pipe.generate("the cat sat", max_new_tokens=30, draft=TreeCfg(depth=4, topk=3), ignore_eos=True)
        assert got.tokens == ref.tokens
        rounds = len(got.stats.draft_lengths)
        per_round[head_ms] = (got.stats.draft_calls - 1) / rounds  # −1: the prompt's head update
    assert per_round[1e6] == 1.0
    assert per_round[0.0] > 1.5


def test_long_generation_compacts_caches(tiny_eagle):
    """Many rounds (masked draft-tree slots pile up in the head cache and get compacted) stay exact."""
    from dynexport.runtime import load
    pipe = load(tiny_eagle["artifact"], "onnxruntime")
    pipe.head.compact_after = pipe.target.compact_after = 8
    ref = pipe.generate("the dog ran", max_new_tokens=60, draft=0, ignore_eos=True)
    got = pipe.generate("the dog ran", max_new_tokens=60, draft=TreeCfg(depth=3, topk=4, max_tokens=8), ignore_eos=True)
    assert got.tokens == ref.tokens


def test_bad_tree_settings(eagle):
    from dynexport.errors import InputError
    from dynexport.runtime import AdaptiveDraft
    for make, message in ((lambda: TreeCfg(depth=0), "tree depth"), (lambda: TreeCfg(topk=1.5), "tree topk"),
                          (lambda: TreeCfg(dynamic="yes"), "tree dynamic"), (lambda: FixedDraft(-1), "0..16")):
        with pytest.raises(InputError, match=message):
            make()
    for kw, message in (({"draft": {"depth": 2}}, "draft must be"), ({"draft": "wide"}, "draft must be"),
                        ({"draft": AdaptiveDraft()}, "EAGLE sizes its tree itself"), ({"tree": TreeCfg()}, "unknown")):
        with pytest.raises(InputError, match=message):
            eagle.generate("the cat", max_new_tokens=4, **kw)
    with pytest.raises(InputError, match="empty"):
        eagle.generate("  ", max_new_tokens=4)
    with pytest.raises(InputError, match="context"):
        eagle.generate("the cat", max_new_tokens=10_000)


def test_each_verified_node_gets_its_paths_logits(tiny_eagle):
    """White box: every tree the pipeline sends to the target, row by row, equals the target fed the
    committed sequence + that node's root path as a plain chain (catches a wrong mask or positions,
    which greedy equality on a tiny peaked model may not)."""
    import numpy as np

    from dynexport.runtime import load
    from dynexport.runtime.kv import LMSession
    pipe = load(tiny_eagle["artifact"], "onnxruntime")
    seq, calls, s = [], [], pipe.target
    run, commit = s.run, s.commit

    def spy_run(ids, parents=None, **kw):
        out = run(ids, parents, **kw)
        calls.append((list(seq), list(ids), parents, out["logits"]))
        return out

    def spy_commit(keep, **kw):
        ids = calls[-1][1]
        seq.extend(ids[:keep] if isinstance(keep, int) else [ids[i] for i in keep])
        return commit(keep, **kw)

    s.run, s.commit = spy_run, spy_commit
    pipe.generate("the cat sat", max_new_tokens=20, draft=TreeCfg(3, 3, 8, dynamic=False), ignore_eos=True)
    fresh = LMSession(tiny_eagle["artifact"], pipe.manifest.target, "onnxruntime")
    trees = [c for c in calls if c[2] is not None]
    assert len(trees) >= 3
    for prefix, ids, parents, logits in trees[:4]:
        for i in range(len(ids)):
            path, j = [], i
            while j >= 0:
                path.insert(0, ids[j])
                j = parents[j]
            fresh.reset()
            ref = fresh.forward(prefix + path)[-1]
            np.testing.assert_allclose(logits[i], ref, atol=1e-4)


# ---- exactness of EAGLE sampling (the chi-square test of test_speculative, on trees) ----

def _eagle_pvalues(pipe, n: int, cfg, **kw) -> tuple[float, float]:
    p1, p2 = target_dists(pipe, cfg, "the cat sat")
    first, pairs = {}, {}
    for seed in range(n):
        t = pipe.generate("the cat sat", max_new_tokens=2, do_sample=True, temperature=cfg.temperature,
                          top_k=cfg.top_k, top_p=cfg.top_p, seed=seed, ignore_eos=True, **kw).tokens[0]
        first[t[0]] = first.get(t[0], 0) + 1
        pairs[tuple(t)] = pairs.get(tuple(t), 0) + 1
    exp1 = {int(i): float(p1[i]) for i in np.flatnonzero(p1)}
    exp2 = {(a, int(b)): float(p1[a] * p2[a][b]) for a in p2 for b in np.flatnonzero(p2[a])}
    return pvalue(exp1, first, n), pvalue(exp2, pairs, n)


TREE = TreeCfg(depth=3, topk=3, max_tokens=8, dynamic=False)


@pytest.mark.parametrize("kw", [{"draft": TREE}, {"draft": 2}], ids=["tree", "chain"])
def test_eagle_sampling_keeps_target_distribution(tiny_eagle, kw):
    from dynexport.runtime import load
    from dynexport.runtime.sampling import SamplingCfg
    pipe = load(tiny_eagle["artifact"], "onnxruntime")
    p_first, p_pair = _eagle_pvalues(pipe, 3000, SamplingCfg(do_sample=True, temperature=1.0, top_k=8), **kw)
    assert p_first > 1e-3 and p_pair > 1e-3, (p_first, p_pair)


def test_broken_tree_rejection_fails_the_test(tiny_eagle, monkeypatch):
    """Rejecting a candidate without removing it from p (resampling from p itself) must be caught."""
    from dynexport.runtime import eagle as eagle_mod
    from dynexport.runtime import load
    from dynexport.runtime.sampling import SamplingCfg

    def no_residual(p, candidates, rng):
        for j, c in enumerate(candidates):
            if rng.random() < p[c]:
                return j, p
        return None, p

    monkeypatch.setattr(eagle_mod, "recursive_reject", no_residual)
    pipe = load(tiny_eagle["artifact"], "onnxruntime")
    p_first, p_pair = _eagle_pvalues(pipe, 3000, SamplingCfg(do_sample=True, temperature=1.0, top_k=8), draft=TREE)
    assert min(p_first, p_pair) < 1e-4, (p_first, p_pair)


def test_recursive_reject_is_exact_by_enumeration():
    """Exact output law of recursive_reject + a final sample, computed by Monte Carlo on a fixed p."""
    from dynexport.runtime.sampling import recursive_reject, sample
    p = np.array([0.5, 0.3, 0.15, 0.05])
    rng = np.random.default_rng(0)
    counts = np.zeros(4)
    for _ in range(40_000):
        j, r = recursive_reject(p, [1, 0], rng)
        counts[[1, 0][j] if j is not None else sample(r, rng)] += 1
    np.testing.assert_allclose(counts / counts.sum(), p, atol=0.01)


def test_cli_eagle_and_generate(tiny_eagle, tmp_path):
    from dynexport.runtime import load
    out = tmp_path / "art"
    p = run_cli("export", "eagle", "-m", tiny_eagle["target"], "--head", tiny_eagle["head"], "--weight-format", "fp32",
                "--formats", "onnxruntime", out)
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stdout and "EAGLE head" in p.stdout
    p = run_cli("generate", out, "the cat sat", "--max-new-tokens", "12", "--tree", "3,2,4", "--backend", "onnxruntime")
    assert p.returncode == 0, p.stderr
    ref = load(tiny_eagle["artifact"], "onnxruntime").generate("the cat sat", max_new_tokens=12, draft=0)
    assert p.stdout.startswith("the cat sat" + ref.text) and "mean accepted length" in p.stdout
    p = run_cli("generate", out, "the cat", "--tree", "default", "--max-new-tokens", "6", "--backend", "onnxruntime")
    assert p.returncode == 0, p.stderr
    p = run_cli("generate", out, "the cat", "--tree", "3,2", "--backend", "onnxruntime")
    assert p.returncode == 2 and "--tree must be depth,topk,max_tokens" in p.stderr
    p = run_cli("generate", out, "the cat", "--num-draft-tokens", "adaptive", "--backend", "onnxruntime")
    assert p.returncode == 2 and "EAGLE sizes its tree itself" in p.stderr
    p = run_cli("imagine", out, "red apple")
    assert p.returncode == 2 and "was exported for eagle; `imagine` does not run it" in p.stderr
    p = run_cli("eagle", tmp_path / "x", "--target", tiny_eagle["target"], "--head", tmp_path / "missing")
    assert p.returncode == 2 and "EAGLE head" in p.stderr and not (tmp_path / "x").exists()


def test_runtime_without_torch_and_tampered_head(tiny_eagle, tmp_path):
    import shutil
    import subprocess
    import sys

    from dynexport.errors import IntegrityError
    from dynexport.runtime import load
    code = BLOCK_TORCH + f"""
from dynexport.runtime import load
r = load({str(tiny_eagle['artifact'])!r}, "onnxruntime").generate("the cat", max_new_tokens=6, ignore_eos=True)
assert len(r.tokens[0]) == 6 and "torch" not in sys.modules
print("ok")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr
    bad = tmp_path / "bad"
    shutil.copytree(tiny_eagle["artifact"], bad)
    data = bytearray((bad / "head.onnx").read_bytes())
    data[-100] ^= 0xFF
    (bad / "head.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="head.onnx"):
        load(bad, "onnxruntime")


def test_train_head_checkpoints_and_resumes(head, tmp_path):
    """A finished run leaves a checkpoint; rerunning the command resumes from it (nothing retrained) and
    a fresh head ends with the trained weights."""
    from dynexport.train.eagle import EagleCfg, train_head
    torch.manual_seed(3)
    data = (torch.randint(0, 40, (6, 10)), torch.randn(6, 10, CFG.hidden))
    cfg, logs = EagleCfg(steps=30, batch=2, depth=2), []
    train_head(head, data, cfg, tmp_path / "a.pt", log=lambda m: None)
    again = init_head(CFG, _tiny_sd(), torch.arange(40), n_layers=2)
    train_head(again, data, cfg, tmp_path / "a.pt", log=logs.append)
    assert logs == ["resumed at step 30"]
    for k, v in head.state().items():
        torch.testing.assert_close(again.state()[k], v)


def test_bf16_training_learns_like_fp32(tmp_path):
    """--bf16 (autocast, fp32 master weights): the loss falls as with fp32 and the trained heads agree."""
    from dynexport.train.eagle import EagleCfg, train_head
    torch.manual_seed(3)
    data = (torch.randint(0, 40, (6, 10)), torch.randn(6, 10, CFG.hidden))
    heads, losses = {}, {}
    for bf16 in (False, True):
        heads[bf16] = init_head(CFG, _tiny_sd(), torch.arange(40), n_layers=2)
        logs = []
        train_head(heads[bf16], data, EagleCfg(steps=40, batch=2, depth=2, lr=3e-3, bf16=bf16),
                   tmp_path / f"{bf16}.pt", log=logs.append)
        losses[bf16] = [float(m.split()[3]) for m in logs if m.startswith("step")]
    assert losses[True] != losses[False]  # autocast took effect
    assert losses[True][-1] < 0.95 * losses[True][0]  # measured: 1.127 → 1.013 in 40 steps, as fp32
    assert abs(losses[True][-1] - losses[False][-1]) < 0.02 * losses[False][-1]
    ids, feats = data[0][:1], data[1][:1]
    with torch.no_grad():
        a, b = unrolled(heads[False].eval(), ids, feats, 2)[0], unrolled(heads[True].eval(), ids, feats, 2)[0]
    assert (a - b).abs().max() < 0.1 * a.abs().max()


def test_narrow_head_saves_and_loads_its_own_width(tmp_path):
    """ffn < the target's: a small head for a large target; its saved MLP keeps the narrow width."""
    from dynexport.models.eagle_head import load_head, save_head
    sd = _tiny_sd()
    head = init_head(CFG, sd, torch.arange(40), n_layers=2, ffn=24)
    assert head.layer.w_gate.shape == (24, CFG.hidden) and head.layer.w_down.shape == (CFG.hidden, 24)
    save_head(head, torch.arange(40), "sha", {}, tmp_path / "h")
    again, _ = load_head(tmp_path / "h", CFG, sd, "sha")
    assert again.layer.w_up.shape == (24, CFG.hidden)
    ids, feats = torch.randint(0, 40, (1, 5)), torch.randn(1, 5, CFG.hidden)
    with torch.no_grad():
        a, b = unrolled(head.eval(), ids, feats, 2), unrolled(again, ids, feats, 2)
    torch.testing.assert_close(a[-1][0], b[-1][0], atol=2e-2, rtol=0)  # fp16 storage


def test_compressed_eagle_target_checks_its_trees(tiny_eagle, tmp_path):
    """int8 EAGLE: export runs the chain and the tree exactness checks and records the verdict (dynamic
    quantization on only if both pass: bit-identical logits); greedy chain and dynamic tree == the target
    alone under whichever it chose."""
    from dynexport.runtime import load as load_artifact
    from dynexport.runtime.costs import call_size_exact, tree_call_exact
    from dynexport.runtime.kv import EXACT_ROLLBACK, NO_DQ, LMSession
    art = tmp_path / "int8"
    export_lm("eagle", art, tiny_eagle["target"], tiny_eagle["head"], weight_format="int8", formats=("openvino",))
    pipe = load_artifact(art, "openvino")
    assert pipe.manifest.cpu_config in ({}, NO_DQ)
    ref = pipe.generate(PROMPTS[0], max_new_tokens=30, draft=0, ignore_eos=True)
    for draft in (FixedDraft(3), "tree"):
        assert pipe.generate(PROMPTS[0], max_new_tokens=30, draft=draft, ignore_eos=True).tokens == ref.tokens
    dq = LMSession(art, pipe.manifest.target, "openvino", compact_after=EXACT_ROLLBACK, cpu_config={})
    assert (pipe.manifest.cpu_config == {}) == (call_size_exact(dq) and tree_call_exact(dq))
