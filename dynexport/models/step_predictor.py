"""StepSaver's step predictor: from a prompt's sentence embedding, the distribution over step counts
(a small MLP classifier over the candidate counts), with its save/load format.

    predictor.json         {"cfg": PredictorCfg fields, "dim": D, "info": StepPredictorInfo}
    predictor.safetensors  the MLP weights
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import AssetError
from ..manifest import StepPredictorInfo


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


def save_predictor(model: StepPredictor, cfg: PredictorCfg, info: StepPredictorInfo, out: Path) -> None:
    from safetensors.torch import save_file
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "predictor.safetensors"))
    (out / "predictor.json").write_text(json.dumps({"cfg": asdict(cfg), "dim": model.dim, "info": info.model_dump()},
                                                   indent=1) + "\n")


def load_predictor(src: Path) -> tuple[StepPredictor, StepPredictorInfo]:
    from safetensors.torch import load_file
    src = Path(src)
    if not (src / "predictor.json").is_file() or not (src / "predictor.safetensors").is_file():
        raise AssetError(f"{src} is not a step predictor dir (predictor.json + predictor.safetensors; "
                         "train one with scripts/train_step_predictor.py)")
    meta = json.loads((src / "predictor.json").read_text())
    cfg, info = PredictorCfg(**meta["cfg"]), StepPredictorInfo(**meta["info"])
    model = StepPredictor(len(info.counts), meta["dim"], cfg.hidden, cfg.dropout)
    model.load_state_dict(load_file(str(src / "predictor.safetensors")))
    return model.eval(), info
