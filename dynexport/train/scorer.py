"""Caption-match scorer for generated emoji: a small CNN maps a 32×32 image into the all-MiniLM-L6-v2
sentence-embedding space; the score of (image, caption) is their cosine. `classify` names the best
caption among a candidate set — StepSaver's "does the image still show the prompt" check.

Trained on the real OpenMoji images (every captioned emoji, the UNet's own training set) with a
softmax over all unique captions, the class weights being the frozen caption embeddings; images are
jittered (±1 px shift, Gaussian noise, colour scale) so the scorer tolerates generated images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class ImageEncoder(nn.Module):
    """[B, 3, 32, 32] in [-1, 1] → [B, 384] unit vectors."""

    def __init__(self, width: int = 32, dim: int = 384):
        super().__init__()
        w = width
        blocks, cin = [], 3
        for cout, stride in ((w, 1), (w, 2), (2 * w, 1), (2 * w, 2), (4 * w, 1), (4 * w, 2)):
            blocks += [nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.GELU()]
            cin = cout
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, dim)
        self.log_scale = nn.Parameter(torch.tensor(3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x).mean((2, 3))  # [B, C]
        return nn.functional.normalize(self.head(h), dim=-1)


def _jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    x = torch.roll(x, (dy, dx), (2, 3))
    x = x * (1 + 0.1 * torch.randn(b, 3, 1, 1, generator=gen))
    return x + torch.rand(b, 1, 1, 1, generator=gen) * 0.15 * torch.randn(x.shape, generator=gen)


def train_scorer(x: torch.Tensor, cls: torch.Tensor, text: torch.Tensor, epochs: int = 30, batch: int = 128,
                 lr: float = 2e-3, seed: int = 0, log=print) -> ImageEncoder:
    """x [N, 3, 32, 32] in [-1, 1]; cls [N] index into text [U, 384] (unique caption embeddings)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ImageEncoder()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch):
            rows = perm[i:i + batch]
            logits = model(_jitter(x[rows], gen)) @ text.T * model.log_scale.exp()  # [b, U]
            loss = nn.functional.cross_entropy(logits, cls[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step(), sched.step()
            total += loss.item() * len(rows)
        log(f"scorer epoch {epoch + 1}/{epochs} loss {total / len(x):.3f} ({time.time() - t0:.0f} s)")
    return model.eval()


@torch.no_grad()
def embed_images(model: ImageEncoder, images: np.ndarray, batch: int = 512) -> np.ndarray:
    """uint8 [N, 32, 32, 3] → [N, 384]."""
    from ..models.unet import to_unit
    return np.concatenate([model(to_unit(images[i:i + batch])).numpy() for i in range(0, len(images), batch)])


def classify(model: ImageEncoder, images: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Index of the best caption in text [U, 384] for each image → [N]."""
    return (embed_images(model, images) @ text.T).argmax(-1)


def caption_hits(model: ImageEncoder, images: np.ndarray, text: np.ndarray, caption_idx: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """Per image [N]: `pred` the best caption, `hit` whether it is the image's own, `rank_pct` the share of
    captions scored below the own one (0.5 = chance), `own` the own caption's cosine. images [N, S, S, 3]
    uint8; text [U, D] every caption's embedding; caption_idx [N] each image's row of text."""
    scores = embed_images(model, images) @ text.T  # [N, U] cosine of each image to every caption
    own = scores[np.arange(len(images)), caption_idx]
    pred = scores.argmax(-1)
    return {"pred": pred, "hit": pred == caption_idx, "rank_pct": (scores < own[:, None]).mean(1), "own": own}


def caption_scores(model: ImageEncoder, images: np.ndarray, text: np.ndarray, caption_idx: np.ndarray,
                   fam_of: np.ndarray, families: np.ndarray) -> dict:
    """`caption_hits` averaged, plus the family accuracy; fam_of [U] each caption's family, families [N]
    each prompt's family."""
    h = caption_hits(model, images, text, caption_idx)
    return {"accuracy": float(h["hit"].mean()), "family_accuracy": float((fam_of[h["pred"]] == families).mean()),
            "caption_rank_pct": float(h["rank_pct"].mean()), "match_score": float(h["own"].mean())}


def save_scorer(model: ImageEncoder, out: Path, info: dict) -> None:
    from safetensors.torch import save_file
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "scorer.safetensors"))
    (out / "scorer.json").write_text(json.dumps(info, indent=1) + "\n")


def load_scorer(src: Path) -> ImageEncoder:
    from safetensors.torch import load_file
    model = ImageEncoder()
    model.load_state_dict(load_file(str(src / "scorer.safetensors")))
    return model.eval()
