"""The EAGLE draft head (Li et al. 2024) for a Llama target: one decoder layer over the target's features.

At position t the head reads the target's final-norm feature f_t [H] and the embedding of the token
x_{t+1} sampled after it, and predicts the next feature f̂_{t+1}; the target's own (frozen, tied) LM
head, restricted to a draft vocabulary of V' frequent tokens (EAGLE-3), turns it into draft logits.
Drafting deeper feeds f̂ back in. The graph signature (explicit KV, like `KVLlama`):

    inputs : input_ids [B, T] int64 (x_{t+1}), hidden [B, T, H] float32 (f_t, or the head's own f̂),
             position_ids [B, T] int64 (t), attention_mask [B, 1, T, P+T] float32 additive,
             past_key.0 / past_value.0 [B, Hkv, P, D]
    outputs: logits [B, T, V'], hidden_out [B, T, H] (f̂_{t+1}), present_key.0 / present_value.0

A trained head is a directory (small enough to commit; the embedding and LM head are the target's):

    eagle.json         {"format": "dynexport-eagle", "version": 1, "target_sha256": ..., "training": {...}}
    eagle.safetensors  fc.weight [H, 2H], fc.bias [H], layer.<attr> (one Llama layer), vocab_ids [V'] int64
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AssetError
from .llama import MATRICES, Layer, LlamaCfg, causal_mask, inv_freq, kv_names, rope

HEAD_FORMAT, HEAD_VERSION = "dynexport-eagle", 1
LAYER_KEYS = {"ln1": "input_layernorm.weight", "ln2": "post_attention_layernorm.weight", **MATRICES}


class EagleHead(nn.Module):
    def __init__(self, cfg: LlamaCfg, embed: torch.Tensor, head: torch.Tensor, layer_sd: dict[str, torch.Tensor]):
        """embed [V, H] and head [V', H]: the target's (frozen); layer_sd: Layer attribute → tensor."""
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Parameter(embed.float().clone(), requires_grad=False)
        self.head = nn.Parameter(head.float().clone(), requires_grad=False)
        self.fc = nn.Linear(2 * cfg.hidden, cfg.hidden)
        self.layer = Layer(cfg, {f"l.{LAYER_KEYS[a]}": w for a, w in layer_sd.items()}, "l.")
        self.register_buffer("inv_freq", inv_freq(cfg), persistent=False)

    def forward(self, input_ids, hidden, position_ids, attention_mask, *past):
        # input_ids, position_ids [B, T]; hidden [B, T, H]; attention_mask [B, 1, T, P+T];
        # past = (key, value) [B, Hkv, P, D] (a star-arg, as KVLlama's, for the export's dynamic shapes)
        x = self.fc(torch.cat([hidden, F.embedding(input_ids, self.embed)], -1))  # [B, T, H]
        cos, sin = rope(self.inv_freq, position_ids)
        x, k, v = self.layer(x, cos, sin, attention_mask, past[0], past[1])
        return F.linear(x, self.head), x, k, v  # logits [B, T, V'], f̂ [B, T, H], present k/v

    @property
    def layers(self) -> list[Layer]:  # the graph-writing protocol (kv_graph.py, speculative.write_lm)
        return [self.layer]

    source_layers: list[int] = []  # a new layer, none of the target's

    def trainable(self) -> list[nn.Parameter]:
        params = [*self.fc.parameters(), *self.layer.parameters()]
        for p in params:
            p.requires_grad_(True)
        return params

    def io_names(self) -> tuple[list[str], list[str]]:
        kv = kv_names(1)
        return (["input_ids", "hidden", "position_ids", "attention_mask", *(f"past_{n}" for n in kv)],
                ["logits", "hidden_out", *(f"present_{n}" for n in kv)])

    def empty_past(self, batch: int = 1, length: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (batch, self.cfg.kv_heads, length, self.cfg.head_dim)
        return torch.zeros(shape), torch.zeros(shape)

    def example(self, batch: int = 2, t: int = 3, p: int = 4) -> tuple[torch.Tensor, ...]:
        ids = torch.randint(3, 50, (batch, t))
        pos = (torch.arange(t) + p)[None].expand(batch, -1)
        return (ids, torch.randn(batch, t, self.cfg.hidden), pos, causal_mask(p, t, batch).contiguous(),
                *self.empty_past(batch, p))

    def state(self) -> dict[str, torch.Tensor]:
        """The trained tensors (what eagle.safetensors holds besides vocab_ids)."""
        out = {"fc.weight": self.fc.weight, "fc.bias": self.fc.bias}
        out.update({f"layer.{a}": getattr(self.layer, a) for a in LAYER_KEYS})
        return {k: v.detach().contiguous() for k, v in out.items()}


def init_head(cfg: LlamaCfg, target_sd: dict[str, torch.Tensor], vocab_ids: torch.Tensor, n_layers: int,
              seed: int = 0, ffn: int = 0) -> EagleHead:
    """A fresh head: a randomly initialised Llama layer (N(0, 0.02) matrices, unit norms) and fc = [I | 0]
    (the feature passes through; the token embedding enters as training finds it useful). ffn: the
    layer's MLP width (0 = the target's; a narrower one makes a small head for a large target: Qwen2.5-1.5B's
    8960 → 2048 cuts the head's layer from 47 M to 15 M parameters). Measured on
    SmolLM2 (150 teacher-forced steps, 48 held-out chunks): top-1 agreement with the target 0.27 from
    this init, 0.10 when the layer starts as a copy of the target's last decoder layer."""
    embed = target_sd["model.embed_tokens.weight"]
    head = target_sd.get("lm_head.weight", embed)[vocab_ids]
    gen = torch.Generator().manual_seed(seed)
    layer = {}
    for a, name in LAYER_KEYS.items():
        shape = list(target_sd[f"model.layers.{n_layers - 1}.{name}"].shape)
        if ffn and a in ("w_gate", "w_up", "w_down"):
            shape[a == "w_down"] = ffn  # gate/up [ffn, H], down [H, ffn]
        layer[a] = torch.ones(shape) if a in ("ln1", "ln2") else torch.randn(shape, generator=gen) * 0.02
    model = EagleHead(cfg, embed, head, layer)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.weight[:, : cfg.hidden] = torch.eye(cfg.hidden)
        model.fc.bias.zero_()
    return model


def save_head(model: EagleHead, vocab_ids: torch.Tensor, target_sha: str, training: dict, out: Path) -> None:
    """fp16 weights (halves the committed size; drafting only proposes, the target decides)."""
    from safetensors.torch import save_file
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.half() for k, v in model.state().items()} | {"vocab_ids": vocab_ids.to(torch.int64)}
    save_file(tensors, str(out / "eagle.safetensors"))
    spec = {"format": HEAD_FORMAT, "version": HEAD_VERSION, "target_sha256": target_sha, "training": training}
    (out / "eagle.json").write_text(json.dumps(spec, indent=1) + "\n")


def load_head(path: Path, cfg: LlamaCfg, target_sd: dict[str, torch.Tensor], target_sha: str) -> tuple[EagleHead, dict]:
    """A head dir on top of its target → (EagleHead fp32, eagle.json). Refuses a head trained for another target."""
    from safetensors.torch import load_file
    path = Path(path)
    if not (path / "eagle.json").is_file() or not (path / "eagle.safetensors").is_file():
        raise AssetError(f"{path} is not an EAGLE head dir (eagle.json + eagle.safetensors; "
                         "train one with scripts/train_eagle.py)")
    from .lm_sources import read_spec
    spec = read_spec(path / "eagle.json", HEAD_FORMAT, HEAD_VERSION, target_sha, f"EAGLE head {path}")
    t = load_file(str(path / "eagle.safetensors"))
    embed = target_sd["model.embed_tokens.weight"]
    head = target_sd.get("lm_head.weight", embed)[t["vocab_ids"]]
    model = EagleHead(cfg, embed, head, {a: t[f"layer.{a}"].float() for a in LAYER_KEYS})
    with torch.no_grad():
        model.fc.weight.copy_(t["fc.weight"].float()), model.fc.bias.copy_(t["fc.bias"].float())
    return model.eval(), {**spec, "vocab_ids": t["vocab_ids"]}
