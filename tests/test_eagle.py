"""EAGLE: the head module, its training-time-test unroll, and (later) export + runtime."""

from __future__ import annotations

import pytest
import torch

from dynexport.export.eagle_head import init_head
from dynexport.export.llama import LlamaCfg, causal_mask
from dynexport.train.eagle import chain_acceptance, eagle_loss, ttt_mask, unrolled

CFG = LlamaCfg(hidden=32, heads=4, kv_heads=2, head_dim=8, rope_theta=10000.0, eps=1e-6)


def _tiny_sd(layers: int = 2, vocab: int = 50, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
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
    assert m["source"]["head"]["training"]["note"] == "tiny random test head"


def test_head_for_another_target_is_refused(tiny_eagle, tmp_path):
    from conftest import make_tiny_llama
    from dynexport.errors import AssetError
    from dynexport.export.eagle import export
    other = make_tiny_llama(tmp_path / "other", seed=5, train_steps=0)
    with pytest.raises(AssetError, match="trained for another target"):
        export(other, tiny_eagle["head"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
