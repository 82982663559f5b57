"""A Llama-family decoder with an explicit KV cache, written for export (gpt-fast style, one definition).

Families: `llama` (SmolLM2) and `qwen2` (Qwen2.5: the same layout plus biases on q/k/v, rope base 1e6,
an untied output head). A layer takes its q/k/v biases when the state dict has them, so one `Layer`
serves both.

One module serves the target and every draft: `KVLlama(weights, layers, vocab_ids)` keeps any subset
of the source model's decoder layers (a layer-dropped draft) and an optional truncated output
vocabulary (rows of the tied LM head; the runtime maps them back to full ids). The graph signature:

    inputs : input_ids [B, T] int64, position_ids [B, T] int64, attention_mask [B, 1, T, P+T] float32
             (additive), past_key.{i} / past_value.{i} [B, Hkv, P, D] float32 per kept layer
    outputs: logits [B, T, V'] float32, (hidden [B, T, H] float32: the final-norm features, with
             features=True, for EAGLE), present_key.{i} / present_value.{i} [B, Hkv, P + T, D]

Positions and the attention mask are inputs, so the target verifies k draft tokens (a chain, or a
tree for EAGLE) and returns logits for all of them in one call. A rejected token's KV slot is not
trimmed (trimming OpenVINO's stateful cache costs more than a decode step): the runtime masks it
out in later calls and compacts the cache only when masked slots pile up. Parity with transformers'
LlamaForCausalLM is tested (logits atol 1e-4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LlamaCfg:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    rope_theta: float
    eps: float

    @staticmethod
    def from_hf(config) -> LlamaCfg:
        if config.model_type not in FAMILIES:
            from ..errors import ModelTypeError
            raise ModelTypeError(f"model type {config.model_type!r} is not supported; only {', '.join(FAMILIES)}")
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        theta = getattr(config, "rope_theta", None) or (config.rope_parameters or {}).get("rope_theta")
        return LlamaCfg(config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                        head_dim, float(theta), float(config.rms_norm_eps))


FAMILIES = ("llama", "qwen2")  # transformers model types with this layout
MATRICES = {"wq": "self_attn.q_proj.weight", "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight",
            "wo": "self_attn.o_proj.weight", "w_gate": "mlp.gate_proj.weight", "w_up": "mlp.up_proj.weight",
            "w_down": "mlp.down_proj.weight"}  # Layer attribute → transformers parameter name
BIASES = {"bq": "self_attn.q_proj.bias", "bk": "self_attn.k_proj.bias", "bv": "self_attn.v_proj.bias"}  # qwen2


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2  # slices, as in transformers: OpenVINO's CPU plugin fuses this RoPE pattern
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def frozen(t: torch.Tensor, copy: bool) -> nn.Parameter:
    """A non-trainable parameter holding t (a clone of it when copy, else sharing t's storage)."""
    return nn.Parameter(t.clone() if copy else t, requires_grad=False)


class Layer(nn.Module):
    """One Llama decoder layer (RMSNorm → GQA attention with RoPE → RMSNorm → SwiGLU MLP)."""

    def __init__(self, cfg: LlamaCfg, sd: dict[str, torch.Tensor], prefix: str, copy: bool = True):
        super().__init__()
        self.cfg = cfg
        p = lambda n: frozen(sd[prefix + n].float(), copy)
        self.ln1, self.ln2 = p("input_layernorm.weight"), p("post_attention_layernorm.weight")
        for attr, name in MATRICES.items():
            setattr(self, attr, p(name))
        for attr, name in BIASES.items():  # None when the family has no q/k/v biases (llama)
            setattr(self, attr, p(name) if prefix + name in sd else None)

    def forward(self, x, cos, sin, mask, past_k, past_v):
        # x [B, T, H]; cos/sin [B, 1, T, D]; mask [B, 1, T, P+T] additive; past_* [B, Hkv, P, D]
        c, (b, t, _) = self.cfg, x.shape
        h = rms_norm(x, self.ln1, c.eps)
        q = F.linear(h, self.wq, self.bq).view(b, t, c.heads, c.head_dim).transpose(1, 2)  # [B, Hq, T, D]
        k = F.linear(h, self.wk, self.bk).view(b, t, c.kv_heads, c.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
        v = F.linear(h, self.wv, self.bv).view(b, t, c.kv_heads, c.head_dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # [B, Hkv, P+T, D]
        rep = c.heads // c.kv_heads
        kk = k[:, :, None].expand(-1, -1, rep, -1, -1).reshape(b, c.heads, -1, c.head_dim)
        vv = v[:, :, None].expand(-1, -1, rep, -1, -1).reshape(b, c.heads, -1, c.head_dim)
        a = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)  # [B, Hq, T, D]
        x = x + F.linear(a.transpose(1, 2).reshape(b, t, -1), self.wo)
        h = rms_norm(x, self.ln2, c.eps)
        x = x + F.linear(F.silu(F.linear(h, self.w_gate)) * F.linear(h, self.w_up), self.w_down)
        return x, k, v


def inv_freq(cfg: LlamaCfg) -> torch.Tensor:
    return 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim)


def rope(freq: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [B, 1, T, D] for position_ids [B, T] and inverse frequencies [D/2]."""
    freqs = position_ids[:, :, None].float() * freq[None, None, :]  # [B, T, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # [B, 1, T, D]
    return emb.cos(), emb.sin()


def kv_names(layers: int) -> list[str]:
    return [f"{j}.{i}" for i in range(layers) for j in ("key", "value")]


class KVLlama(nn.Module):
    """Embeddings → kept decoder layers → final norm → (truncated) tied LM head, explicit KV in/out.
    features=True also returns the final-norm hidden states (what an EAGLE head drafts from)."""

    def __init__(self, cfg: LlamaCfg, sd: dict[str, torch.Tensor], layers: list[int],
                 vocab_ids: torch.Tensor | None = None, head_key: str = "lm_head.weight", features: bool = False,
                 copy: bool = True):
        """copy=False: the parameters share storage with `sd` (a 1.5B target is 7 GB fp32; a caller that
        drops sd afterwards saves a copy)."""
        super().__init__()
        self.cfg, self.source_layers, self.features = cfg, list(layers), features
        embed = sd["model.embed_tokens.weight"].float()
        head = sd.get(head_key, embed).float()
        if vocab_ids is not None:
            head = head[vocab_ids]  # [V', H]: rows of the kept vocabulary
        self.embed = frozen(embed, copy)
        self.head = frozen(head, copy and vocab_ids is None)  # head[vocab_ids] is already a copy
        self.norm = frozen(sd["model.norm.weight"].float(), copy)
        self.layers = nn.ModuleList(Layer(cfg, sd, f"model.layers.{i}.", copy) for i in layers)
        self.register_buffer("inv_freq", inv_freq(cfg), persistent=False)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                *past: torch.Tensor):
        # input_ids, position_ids [B, T]; attention_mask [B, 1, T, P+T] additive (0 = attend, -inf = not);
        # past = (k0, v0, k1, v1, ...) each [B, Hkv, P, D]
        return self.outputs(*self.body(input_ids, position_ids, attention_mask, past))

    def body(self, input_ids, position_ids, attention_mask, past) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """→ final-norm hidden states [B, T, H], present KV (k0, v0, …) each [B, Hkv, P+T, D]."""
        cos, sin = rope(self.inv_freq, position_ids)
        x = F.embedding(input_ids, self.embed)  # [B, T, H]
        present = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, cos, sin, attention_mask, past[2 * i], past[2 * i + 1])
            present += [k, v]
        return rms_norm(x, self.norm, self.cfg.eps), present

    def outputs(self, hidden: torch.Tensor, present: list[torch.Tensor], logits_index: torch.Tensor | None = None):
        """(logits [B, T or N, V'], [hidden [B, T, H]], *present); logits only at `logits_index` [N] if given."""
        rows = hidden if logits_index is None else hidden.index_select(1, logits_index)
        logits = F.linear(rows, self.head)
        return (logits, hidden, *present) if self.features else (logits, *present)

    def sliced(self) -> SlicedLogits:
        """This module with a `logits_index` input: what the graphs are exported from."""
        return SlicedLogits(self)

    def example(self, batch: int = 2, t: int = 3, p: int = 4) -> tuple[torch.Tensor, ...]:
        """Example args for export: t new tokens after p cached ones."""
        ids = torch.randint(3, 50, (batch, t))
        pos = (torch.arange(t) + p)[None].expand(batch, -1)
        return (ids, pos, causal_mask(p, t, batch).contiguous(), *self.empty_past(batch, p))

    def empty_past(self, batch: int = 1, length: int = 0) -> tuple[torch.Tensor, ...]:
        shape = (batch, self.cfg.kv_heads, length, self.cfg.head_dim)
        return tuple(torch.zeros(shape) for _ in range(2 * len(self.layers)))

    def io_names(self) -> tuple[list[str], list[str]]:
        kv = kv_names(len(self.layers))
        inputs = ["input_ids", "position_ids", "attention_mask", *(f"past_{n}" for n in kv)]
        return inputs, ["logits", *(["hidden"] if self.features else []), *(f"present_{n}" for n in kv)]


class SlicedLogits(nn.Module):
    """A KVLlama whose graph takes `logits_index` [N] int64 after the mask and computes logits only at
    those positions: a prefill needs the last row, not [T, 151936] (the Qwen2.5 LM head over a 128-token
    prompt is ~15% of the prefill). Same graph-writing protocol as KVLlama."""

    def __init__(self, inner: KVLlama):
        super().__init__()
        self.inner = inner
        self.cfg, self.head, self.layers = inner.cfg, inner.head, inner.layers
        self.source_layers, self.features = inner.source_layers, inner.features

    def forward(self, input_ids, position_ids, attention_mask, logits_index, *past):
        # logits_index [N]: positions (0 ≤ i < T) whose logits are returned, in order
        return self.inner.outputs(*self.inner.body(input_ids, position_ids, attention_mask, past), logits_index)

    def example(self, batch: int = 2, t: int = 3, p: int = 4) -> tuple[torch.Tensor, ...]:
        ids, pos, mask, *past = self.inner.example(batch, t, p)
        return (ids, pos, mask, torch.arange(1, t), *past)  # N = T − 1: N and T stay distinct dims

    def io_names(self) -> tuple[list[str], list[str]]:
        ins, outs = self.inner.io_names()
        return [*ins[:3], "logits_index", *ins[3:]], outs


def causal_mask(past_len: int, t: int, batch: int = 1) -> torch.Tensor:
    """Additive mask [B, 1, T, P+T] for a plain chain of T new tokens after P valid cached ones."""
    allowed = torch.arange(past_len + t)[None, :] <= (torch.arange(t)[:, None] + past_len)
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    return mask[None, None].expand(batch, 1, -1, -1)
