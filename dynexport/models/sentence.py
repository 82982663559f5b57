"""The sentence encoder that conditions StepSaver (all-MiniLM-L6-v2): mean of the last hidden states
over real tokens, L2-normalised — the module exported as the text-encoder graph, and the same
embeddings computed in torch for training and labels."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .encoder import masked_mean, text_encoder

MAX_TOKENS = 32  # prompt tokens the text encoder sees (emoji captions are a few words)


class SentenceEncoder(nn.Module):
    """input_ids, attention_mask [B, L] int64 → unit embeddings [B, D]."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, L, D]
        return nn.functional.normalize(masked_mean(h, attention_mask), dim=-1)


def load_sentence_encoder(model: str) -> tuple[SentenceEncoder, Path]:
    """(encoder in eval mode, its model dir) for an embedded asset id or a local BERT dir."""
    from transformers import AutoModel

    from ..assets import resolve_model
    src = resolve_model(model)
    return SentenceEncoder(AutoModel.from_pretrained(src).eval()), src


@torch.no_grad()
def caption_embeddings(captions: list[str], model: str = "all-MiniLM-L6-v2", batch: int = 256) -> torch.Tensor:
    """Sentence embeddings [N, D] of the conditioning encoder, tokenized as the runtime does."""
    enc, src = load_sentence_encoder(model)
    tok = text_encoder(src, MAX_TOKENS)
    out = []
    for i in range(0, len(captions), batch):
        b = tok(captions[i:i + batch])
        out.append(enc(torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask)))
    return torch.cat(out)
