"""StepSaver's denoiser: a pixel-space diffusers `UNet2DConditionModel` — its config, build, save/load,
the DDPM training schedule it was trained with, and `UNetStep`, the one-call module that gets exported.

A trained UNet is a directory (small enough to commit):

    unet.json         {"unet": UNetCfg fields, "training": {...}}
    unet.safetensors  fp16 EMA weights
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import AssetError


@dataclass(frozen=True)
class UNetCfg:
    size: int = 32
    channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 8
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    text_encoder: str = "all-MiniLM-L6-v2"  # embedded asset id or a local BERT dir: the conditioning encoder
    context_dim: int = 384  # its hidden size


def build_unet(cfg: UNetCfg) -> nn.Module:
    from diffusers import UNet2DConditionModel
    n = len(cfg.channels)
    return UNet2DConditionModel(
        sample_size=cfg.size, in_channels=3, out_channels=3, layers_per_block=cfg.layers_per_block,
        block_out_channels=cfg.channels, down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",), cross_attention_dim=cfg.context_dim,
        attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_num_groups)


def noise_scheduler(cfg: UNetCfg):
    """The training (DDPM) scheduler; its config is what the runtime's numpy schedulers re-space."""
    from diffusers import DDPMScheduler
    return DDPMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type="epsilon", clip_sample=False)


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] → float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class UNetStep(nn.Module):
    """One noise prediction: the diffusers UNet with plain tensor outputs.
    sample [B, 3, S, S], timestep [B], context [B, 1, D] → noise [B, 3, S, S]."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, context, return_dict=False)[0]


def save_unet(unet: nn.Module, ucfg: UNetCfg, out: Path, training: dict) -> None:
    """EMA weights as fp16 safetensors + the config and training record (what export reads)."""
    from safetensors.torch import save_file
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in unet.state_dict().items()}, str(out / "unet.safetensors"))
    (out / "unet.json").write_text(json.dumps({"unet": asdict(ucfg), "training": training}, indent=1) + "\n")


def load_unet(src: Path) -> tuple[nn.Module, UNetCfg]:
    from safetensors.torch import load_file
    src = Path(src)
    if not (src / "unet.json").is_file() or not (src / "unet.safetensors").is_file():
        raise AssetError(f"{src} is not a UNet dir (unet.json + unet.safetensors; train one with "
                         "scripts/train_diffusion.py)")
    meta = json.loads((src / "unet.json").read_text())
    ucfg = UNetCfg(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["unet"].items()})
    unet = build_unet(ucfg)
    unet.load_state_dict({k: v.float() for k, v in load_file(str(src / "unet.safetensors")).items()})
    return unet.eval(), ucfg
