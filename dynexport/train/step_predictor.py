"""StepSaver's step predictor: from a prompt's sentence embedding, the distribution over step counts.

Each label is the smallest candidate count at which one (prompt, seed) generation has converged
(scripts/make_step_labels.py). The predictor is a small MLP classifier over the candidate counts,
trained with cross-entropy on all (prompt, seed) pairs — so for a prompt it learns how the needed
count varies with the seed. The runtime picks the smallest count whose predicted cumulative
probability reaches the safety `margin`; `calibrate_margin` chooses that margin on validation prompts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..manifest import StepPredictorInfo
from ..runtime.policies import choose_steps


@dataclass(frozen=True)
class PredictorCfg:
    hidden: int = 256
    dropout: float = 0.2
    epochs: int = 300
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0


class StepPredictor(nn.Module):
    """embedding [B, D] → probabilities [B, C] over the candidate step counts."""

    def __init__(self, classes: int, dim: int = 384, hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, classes))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net(embedding).softmax(-1)


def label_of(conv: np.ndarray, counts: list[int], full: int) -> int:
    """conv [C] bools (converged at each count) → the smallest count from which all larger counts
    converged (else full): a count that converges by luck between two that do not is no safe label."""
    ok = np.flip(np.cumprod(np.flip(conv)).astype(bool))  # ok[i]: counts[i:] all converged
    return int(counts[int(np.argmax(ok))]) if ok.any() else full


def converged(record: dict, threshold: float, agree: str) -> np.ndarray:
    """[C] bools: SSIM to the full-step image ≥ threshold and (unless agree is "none") the scorer agrees
    on both images' caption or caption family."""
    ok = np.array(record["ssim"]) >= threshold
    return ok if agree == "none" else ok & np.array(record["agree_family" if agree == "family" else "agree"])


def train_predictor(emb: np.ndarray, labels: np.ndarray, classes: int, cfg: PredictorCfg) -> StepPredictor:
    """emb [N, D], labels [N] class indices; full-batch AdamW (the label sets are small)."""
    torch.manual_seed(cfg.seed)
    model = StepPredictor(classes, emb.shape[1], cfg.hidden, cfg.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x, y = torch.from_numpy(emb).float(), torch.from_numpy(labels).long()
    for _ in range(cfg.epochs):
        loss = nn.functional.nll_loss(model(x).clamp_min(1e-8).log(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def calibrate_margin(probs: np.ndarray, ssim_at: np.ndarray, counts: list[int], target_ssim: float) -> dict:
    """Smallest margin whose chosen counts keep the validation images' mean SSIM to their full-step
    images ≥ target_ssim, next to the one global count that does the same (the baseline to beat).
    probs [N, C] predictor output; ssim_at [N, C] measured SSIM of each (prompt, seed) at each count."""
    rows = []
    for m in np.round(np.arange(0.05, 1.0, 0.01), 2):
        idx = np.searchsorted(counts, choose_steps(probs, counts, float(m)))  # [N] class index
        rows.append({"margin": float(m), "mean_ssim": float(ssim_at[np.arange(len(idx)), idx].mean()),
                     "mean_steps": float(np.asarray(counts)[idx].mean())})
    ok = [r for r in rows if r["mean_ssim"] >= target_ssim]
    const = next((c for c, v in zip(counts, ssim_at.mean(0)) if v >= target_ssim), counts[-1])
    return {"target_mean_ssim": target_ssim, "chosen": ok[0] if ok else rows[-1], "curve": rows[::5],
            "constant_same_target": {"steps": int(const), "mean_ssim": float(ssim_at[:, counts.index(const)].mean())}}


def save_predictor(model: StepPredictor, cfg: PredictorCfg, info: StepPredictorInfo, out: Path) -> None:
    from safetensors.torch import save_file
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "predictor.safetensors"))
    (out / "predictor.json").write_text(json.dumps({"cfg": asdict(cfg), "dim": model.dim, "info": info.model_dump()},
                                                   indent=1) + "\n")


def load_predictor(src: Path) -> tuple[StepPredictor, StepPredictorInfo]:
    from safetensors.torch import load_file
    meta = json.loads((src / "predictor.json").read_text())
    cfg, info = PredictorCfg(**meta["cfg"]), StepPredictorInfo(**meta["info"])
    model = StepPredictor(len(info.counts), meta["dim"], cfg.hidden, cfg.dropout)
    model.load_state_dict(load_file(str(src / "predictor.safetensors")))
    return model.eval(), info
