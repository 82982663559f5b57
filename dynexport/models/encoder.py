"""Torch side of early exit: BERT-family encoders cut into segments that each end in an exit head,
the exit heads, and loading a trained checkpoint (LoRA delta + heads) back into them.

One mechanism for every family: a `Family` row says where the embeddings and layers live and how a
layer is called (MPNet adds a relative position bias, BERT does not). `Segment` runs
[embeddings +] layers[start:end] + a head and is what gets exported; `MultiExit` runs every head in
one pass and is what gets trained. Both call `run_layers`, so training and export cannot diverge.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch
from torch import nn

from .. import assets, data
from ..assets import cache_dir
from ..errors import AssetError, ModelTypeError, RecipeError
from ..recipe import HeadPooling, validate_exits
from ..runtime.text import TextEncoder


@dataclass(frozen=True)
class Family:
    name: str
    base_attr: str  # attribute of a *ForSequenceClassification model holding the bare encoder
    lora_targets: tuple[str, ...]  # module-name suffixes that get LoRA adapters
    position_bias: Callable[[nn.Module, torch.Tensor], torch.Tensor | None]
    seqcls_head: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (seqcls model, hidden) → logits


def _mpnet_bias(base: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return base.encoder.compute_position_bias(hidden)  # [batch, heads, seq, seq]


def _bert_seqcls(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return model.classifier(model.dropout(model.bert.pooler(hidden)))


FAMILIES = {
    "bert": Family("bert", "bert", ("query", "key", "value", "attention.output.dense",
                                    "intermediate.dense", "output.dense"),
                   lambda base, h: None, _bert_seqcls),
    "mpnet": Family("mpnet", "mpnet", ("attn.q", "attn.k", "attn.v", "attn.o",
                                      "intermediate.dense", "output.dense"),
                    _mpnet_bias, lambda model, h: model.classifier(h)),
}


@dataclass(frozen=True)
class EncoderSource:
    """What an early-exit recipe is made from: the model dir, its HF config, the data splits."""
    model_dir: Path
    config: Any  # transformers PretrainedConfig
    splits: data.Splits


def resolve_source(recipe) -> EncoderSource:
    """The recipe's model and data, checked against each other before anything trains: a supported
    family, exits inside the model, max_length the model can embed."""
    from transformers import AutoConfig

    model_dir = assets.resolve_model(recipe.model.id)
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    family_of(config)  # unknown model type: fail before any training
    validate_exits(recipe.exits.layers, config.num_hidden_layers)
    max_pos = config.max_position_embeddings - (2 if config.model_type == "mpnet" else 0)  # MPNet offsets by pad+1
    if recipe.model.max_length > max_pos:
        raise RecipeError(f"model.max_length {recipe.model.max_length} exceeds what this model can embed ({max_pos})")
    ds = recipe.dataset
    splits = data.load_splits(assets.resolve_dataset(ds.id), ds.text_column, ds.label_column, ds.labels,
                              ds.val_size, ds.test_size, ds.seed)
    return EncoderSource(model_dir, config, splits)


def family_of(config) -> Family:
    if config.model_type not in FAMILIES:
        raise ModelTypeError(
            f"model type {config.model_type!r} is not supported for early exit; "
            f"supported BERT-family types: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[config.model_type]


def is_seqcls(config) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))


def load_encoder(model_dir: Path):
    """(model, family, bare encoder, has_own_classifier). Eager attention so graphs export cleanly."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    family = family_of(config)
    seqcls = is_seqcls(config)
    cls = AutoModelForSequenceClassification if seqcls else AutoModel
    model = cls.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager",
                                trust_remote_code=False)
    base = getattr(model, family.base_attr) if seqcls else model
    return model, family, base, seqcls


def extended_mask(mask: torch.Tensor) -> torch.Tensor:
    """[batch, seq] 0/1 → additive [batch, 1, 1, seq] with dtype-min at padding."""
    return (1.0 - mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min


def run_layers(base: nn.Module, family: Family, hidden: torch.Tensor, ext_mask: torch.Tensor,
               start: int, end: int) -> torch.Tensor:
    """Layers [start, end) (0-based) of the encoder on hidden [batch, seq, hidden]."""
    bias = family.position_bias(base, hidden)
    kwargs = {} if bias is None else {"position_bias": bias}
    for layer in base.encoder.layer[start:end]:
        out = layer(hidden, ext_mask, **kwargs)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


POOLINGS = get_args(HeadPooling)


def trained_pooling(info: dict) -> str:
    """The pooling a checkpoint was trained with (its heads.safetensors; older ones: mean)."""
    return info["recipe_training"].get("head_pooling", "mean")


def heads_file(pooling: str, info: dict) -> str:
    """The checkpoint file with exit heads of this pooling: heads.safetensors holds what training wrote
    (every head, the final one included); a deebert stage 2 run for another pooling adds
    heads-<pooling>.safetensors with the exits 1..L-1 only, the final head staying the trained one."""
    return "heads.safetensors" if pooling == trained_pooling(info) else f"heads-{pooling}.safetensors"


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real (mask = 1) tokens: [batch, seq, hidden], [batch, seq] → [batch, hidden]."""
    m = mask.to(hidden.dtype).unsqueeze(-1)  # [batch, seq, 1]
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class ExitHead(nn.Module):
    """Pooling → Linear → tanh → Linear: [batch, seq, hidden] → [batch, classes]. `pooling` "mean" is
    the masked mean; "attention" weighs the real tokens by a learned score (softmax over one Linear(H, 1)
    per token): H + 1 parameters more, a few shallow-layer points better (docs/early_exit.md)."""

    def __init__(self, hidden: int, classes: int, width: int = 256, dropout: float = 0.1,
                 pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown head pooling {pooling!r}; one of {', '.join(POOLINGS)}")
        self.score = nn.Linear(hidden, 1) if pooling == "attention" else None
        self.dense = nn.Linear(hidden, width)
        self.out = nn.Linear(width, classes)
        self.dropout = nn.Dropout(dropout)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.score is None:
            return masked_mean(hidden, mask)  # [batch, hidden]
        s = self.score(hidden).squeeze(-1).masked_fill(mask == 0, -1e4)  # [batch, seq]
        return (s.softmax(-1).unsqueeze(-1) * hidden).sum(1)  # [batch, hidden]

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.tanh(self.dense(self.dropout(pooled)))))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classify(self.pool(hidden, mask))


class SeqClsHead(nn.Module):
    """The checkpoint's own classifier (for *ForSequenceClassification models) as a final head."""

    def __init__(self, model: nn.Module, family: Family):
        super().__init__()
        self.model = model
        self.family = family

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.family.seqcls_head(self.model, hidden)


class Segment(nn.Module):
    """[embeddings +] layers[start:end] + head. Inputs (input_ids | hidden_states, attention_mask),
    outputs (hidden_states [batch, seq, hidden], logits [batch, classes])."""

    def __init__(self, base: nn.Module, family: Family, start: int, end: int, head: nn.Module):
        super().__init__()
        self.base, self.family, self.start, self.end, self.head = base, family, start, end, head

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor):
        hidden = self.base.embeddings(input_ids=x) if self.start == 0 else x
        hidden = run_layers(self.base, self.family, hidden, extended_mask(attention_mask),
                            self.start, self.end)
        return hidden, self.head(hidden, attention_mask)


class MultiExit(nn.Module):
    """Every layer listed in `heads` (1-based layer → head) classifies in one forward pass."""

    def __init__(self, base: nn.Module, family: Family, heads: dict[int, nn.Module]):
        super().__init__()
        self.base, self.family = base, family
        self.heads = nn.ModuleDict({str(k): v for k, v in heads.items()})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pooled_only: bool = False) -> dict[int, torch.Tensor]:
        hidden = self.base.embeddings(input_ids=input_ids)
        ext, start, out = extended_mask(attention_mask), 0, {}
        for layer in sorted(int(k) for k in self.heads):
            hidden = run_layers(self.base, self.family, hidden, ext, start, layer)
            head = self.heads[str(layer)]
            out[layer] = head.pool(hidden, attention_mask) if pooled_only else head(hidden, attention_mask)
            start = layer
        return out  # layer → logits [batch, classes] (or pooled [batch, hidden])


def segments_for(base: nn.Module, family: Family, exits: list[int], heads: dict[int, nn.Module],
                 num_layers: int) -> list[Segment]:
    """Segment i ends at exits[i] (1-based layer); the last ends at the final layer."""
    bounds = [0, *exits, num_layers]
    return [Segment(base, family, a, b, heads[b]) for a, b in zip(bounds[:-1], bounds[1:])]


def all_heads(base, seqcls: bool, model_hf, family, classes: int, width: int, pooling: str = "mean",
              final_pooling: str | None = None) -> dict[int, nn.Module]:
    """A head after every layer 1..L (the final one pooling by `final_pooling`, default the same); a
    sequence-classification checkpoint keeps its own final head."""
    num_layers, hidden = base.config.num_hidden_layers, base.config.hidden_size
    heads: dict[int, nn.Module] = {k: ExitHead(hidden, classes, width, pooling=pooling) for k in range(1, num_layers)}
    heads[num_layers] = (SeqClsHead(model_hf, family) if seqcls else
                         ExitHead(hidden, classes, width, pooling=final_pooling or pooling))
    return heads


def tokenizer_json(model_dir: Path) -> Path:
    """The model's tokenizer.json; a checkpoint with only vocab files gets one converted by HF (cached)."""
    tj = model_dir / "tokenizer.json"
    if tj.is_file():
        return tj
    from transformers import AutoTokenizer
    out = cache_dir() / "tokenizers" / hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:16]
    if not (out / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(model_dir, use_fast=True, trust_remote_code=False)
        if not tok.is_fast:
            raise AssetError(f"{model_dir}: no fast tokenizer can be built for this checkpoint")
        tok.save_pretrained(out)
    return out / "tokenizer.json"


def text_encoder(model_dir: Path, max_length: int) -> TextEncoder:
    """The runtime's tokenizer (the same class and tokenizer.json the exported artifact uses)."""
    from transformers import AutoConfig
    pad = AutoConfig.from_pretrained(model_dir).pad_token_id
    return TextEncoder(tokenizer_json(model_dir), max_length, pad or 0)


def load_backbone(model_dir: Path, ckpt: Path):
    """(model, family, encoder with the checkpoint's LoRA delta merged, seqcls, train_info)."""
    info = json.loads((ckpt / "train_info.json").read_text())
    model_hf, family, base, seqcls = load_encoder(model_dir)
    if (ckpt / "adapter").is_dir():
        from peft import PeftModel
        base = PeftModel.from_pretrained(base, ckpt / "adapter").merge_and_unload()
    return model_hf, family, base, seqcls, info


def load_trained(model_dir: Path, ckpt: Path, pooling: str | None = None):
    """(model, family, encoder with the LoRA delta merged, heads {layer: module}, train_info) in eval
    mode; the exits pool by `pooling` (default: as trained), the final head is always the trained one."""
    from safetensors.torch import load_file
    model_hf, family, base, seqcls, info = load_backbone(model_dir, ckpt)
    own = trained_pooling(info)
    pooling = pooling or own
    state = load_file(ckpt / heads_file(own, info))
    if pooling != own:
        path = ckpt / heads_file(pooling, info)
        if not path.is_file():
            raise AssetError(f"{ckpt} has no {pooling}-pooling exit heads ({path.name})")
        final = str(info["num_layers"])  # the trained final head, then this pooling's exits
        state = {n: t for n, t in state.items() if n.split(".")[0] == final} | load_file(path)
    classes, width = len(info["labels"]), info["recipe_training"]["head_width"]
    heads = all_heads(base, seqcls, model_hf, family, classes, width, pooling, own)
    for k, h in heads.items():
        if isinstance(h, ExitHead):  # fp16 files load into the fp32 heads (copy casts)
            h.load_state_dict({n.split(".", 1)[1]: t for n, t in state.items() if n.split(".")[0] == str(k)})
    for m in [model_hf, base, *heads.values()]:
        m.eval()
    return model_hf, family, base, heads, info
