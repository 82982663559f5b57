"""Train the small text-to-image diffusion model of StepSaver: a pixel-space `UNet2DConditionModel`
on OpenMoji (32×32), conditioned on the all-MiniLM-L6-v2 sentence embedding of the caption.

The caption embedding is one D-dim vector (D = 384; mean-pooled, L2-normalised: the encoder's own
sentence embedding) fed as a one-token cross-attention context [B, 1, D]; 10% of captions are dropped to
the zero vector so classifier-free guidance works. DDPM noise schedule, ε-prediction, AdamW, EMA of
the weights. Everything resumes from `work/` (checkpoint every `ckpt_every` steps, log lines with
s/step); the final EMA weights are saved with `models.unet.save_unet`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.unet import UNetCfg, build_unet, noise_scheduler, to_unit


@dataclass(frozen=True)
class TrainCfg:
    steps: int = 6000
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 200
    cond_dropout: float = 0.1
    ema_decay: float = 0.999
    ckpt_every: int = 100
    seed: int = 0
    bf16: bool = False  # autocast to bfloat16 (CPU AVX512-BF16: 1.25x faster per step here; weights stay fp32)
    device: str = "cpu"  # "cuda" where a GPU is lent (the randomness then differs from a CPU run)
    minutes: float = 0.0  # > 0: a wall-time budget; every `probe` steps `steps` is re-planned to fit it
    probe: int = 100
    planned: int = 0  # the step count asked for, kept while a time budget re-plans `steps`


def _save_ckpt(path: Path, unet, ema, opt, step: int) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
    tmp.replace(path)


def train(images: np.ndarray, emb: torch.Tensor, ucfg: UNetCfg, tcfg: TrainCfg, work: Path, log=print,
          init: dict[str, torch.Tensor] | None = None) -> tuple[nn.Module, TrainCfg]:
    """Train (or resume) → (EMA UNet on the CPU, the config as run: `steps` re-planned under a time budget).
    images [N, H, W, 3] uint8, emb [N, D]; init: weights to start from when `work` has no checkpoint yet
    (a fine-tune: the weights and their EMA start there, the optimizer and schedule start fresh)."""
    torch.manual_seed(tcfg.seed)
    dev = torch.device(tcfg.device)
    torch.backends.cudnn.benchmark = dev.type == "cuda"  # fixed shapes: let cuDNN pick its conv kernels
    unet, ema = build_unet(ucfg).to(dev), build_unet(ucfg).to(dev)
    opt = torch.optim.AdamW(unet.parameters(), lr=tcfg.lr, weight_decay=0.01)
    work.mkdir(parents=True, exist_ok=True)
    ckpt, start = work / "unet_ckpt.pt", 0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=True, map_location=dev)
        unet.load_state_dict(state["unet"]), ema.load_state_dict(state["ema"]), opt.load_state_dict(state["opt"])
        start = state["step"]
        log(f"resumed at step {start}")
    else:
        if init is not None:
            unet.load_state_dict(init)
        ema.load_state_dict(unet.state_dict())
    x_all, emb = to_unit(images).to(dev), emb.to(dev)  # [N, 3, H, W], [N, D]
    alphas = noise_scheduler(ucfg).alphas_cumprod.to(dev)  # [T]
    gen = torch.Generator(dev).manual_seed(tcfg.seed + start)
    t0 = time.time()
    for step in range(start, tcfg.steps):
        if tcfg.minutes > 0 and step > start and (step - start) % tcfg.probe == 0:
            tcfg = _fit_budget(tcfg, start, step, time.time() - t0)
            if step == start + tcfg.probe:
                log(f"time budget {tcfg.minutes} min: training to step ~{tcfg.steps} (re-planned every {tcfg.probe})")
        if step >= tcfg.steps:  # the budget moved the end
            break
        loss = _train_step(unet, opt, x_all, emb, alphas, gen, tcfg, ucfg, step)
        _ema_update(ema, unet, min(tcfg.ema_decay, (1 + step) / (10 + step)))
        if (step + 1) % 10 == 0:
            log(f"step {step + 1}/{tcfg.steps} loss {loss.item():.4f} lr {_lr(step, tcfg):.2e} "
                f"{(time.time() - t0) / (step + 1 - start):.3f} s/step")
        if (step + 1) % tcfg.ckpt_every == 0 or step + 1 == tcfg.steps:
            _save_ckpt(ckpt, unet, ema, opt, step + 1)
    return ema.cpu().eval(), tcfg


def _train_step(unet, opt, x_all, emb, alphas, gen, tcfg: TrainCfg, ucfg: UNetCfg, step: int) -> torch.Tensor:
    """One ε-prediction step on a random batch (10% of captions zeroed for CFG); returns the loss."""
    dev = x_all.device
    rows = torch.randint(0, len(x_all), (tcfg.batch,), generator=gen, device=dev)
    x0, cond = x_all[rows], emb[rows].clone()  # [B, 3, H, W], [B, D]
    cond[torch.rand(tcfg.batch, generator=gen, device=dev) < tcfg.cond_dropout] = 0.0  # unconditional for CFG
    t = torch.randint(0, ucfg.train_timesteps, (tcfg.batch,), generator=gen, device=dev)
    noise = torch.randn(x0.shape, generator=gen, device=dev)
    a = alphas[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=tcfg.bf16):
        pred = unet(xt, t, cond[:, None]).sample
    loss = nn.functional.mse_loss(pred.float(), noise)
    for g in opt.param_groups:
        g["lr"] = _lr(step, tcfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    opt.step()
    return loss


def _fit_budget(tcfg: TrainCfg, start: int, step: int, elapsed: float) -> TrainCfg:
    """Re-plan `steps` (and so the cosine schedule) to the wall-time budget at the pace so far. Called every
    `probe` steps: the first pace includes warm-up (cuDNN autotuning: 1.8x the later pace on a GPU), so
    one early estimate would stop far short of the budget. The cap is the step count asked for."""
    cap = tcfg.planned or tcfg.steps
    pace = elapsed / (step - start)
    return replace(tcfg, steps=max(min(cap, step + int((tcfg.minutes * 60 - elapsed) / pace)), step + 1), planned=cap)


def load_checkpoint_ema(work: Path, ucfg: UNetCfg) -> tuple[nn.Module, int]:
    """The EMA UNet of the latest training checkpoint in `work` and its step (a snapshot while training)."""
    state = torch.load(work / "unet_ckpt.pt", weights_only=True, map_location="cpu")
    ema = build_unet(ucfg)
    ema.load_state_dict(state["ema"])
    return ema.eval(), int(state["step"])


@torch.no_grad()
def preview(unet: nn.Module, ucfg: UNetCfg, emb: torch.Tensor, steps: int = 50, guidance: float = 1.0,
            seed: int = 0) -> np.ndarray:
    """Samples for a look at training progress: torch UNet + diffusers DDIM (trailing), [B, S, S, 3] uint8."""
    from diffusers import DDIMScheduler
    size = ucfg.size
    sched = DDIMScheduler(num_train_timesteps=ucfg.train_timesteps, beta_schedule=ucfg.beta_schedule,
                          timestep_spacing="trailing", clip_sample=True)
    sched.set_timesteps(steps)
    x = torch.randn(len(emb), 3, size, size, generator=torch.Generator().manual_seed(seed))
    ctx = torch.cat([emb[:, None], torch.zeros_like(emb[:, None])])
    for t in sched.timesteps:
        out = unet(torch.cat([x, x]), t, ctx).sample
        eps = out[len(x):] + guidance * (out[: len(x)] - out[len(x):])
        x = sched.step(eps, t, x).prev_sample
    return ((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)


@torch.no_grad()
def sample_dpm(unet, ucfg, ctx: torch.Tensor, steps: int, seed: int, batch: int = 128) -> np.ndarray:
    """The recipe's sampler in torch + diffusers (DPM-Solver++ 2M, guidance 1) for judging trained UNets:
    images [N, S, S, 3] uint8 for contexts [N, D]; prompt i starts from noise rng([seed, i])."""
    from diffusers import DPMSolverMultistepScheduler

    from ..runtime.schedulers import DIFFUSERS_SETTINGS
    s = ucfg.size
    out = []
    for lo in range(0, len(ctx), batch):
        sched = DPMSolverMultistepScheduler(num_train_timesteps=ucfg.train_timesteps, beta_schedule=ucfg.beta_schedule,
                                            **DIFFUSERS_SETTINGS["dpmsolver++"])
        sched.set_timesteps(steps)
        rows = range(lo, min(lo + batch, len(ctx)))
        x = torch.from_numpy(np.stack([np.random.default_rng([seed, i]).standard_normal((3, s, s)) for i in rows])
                             .astype(np.float32))  # [b, 3, S, S]
        for t in sched.timesteps:
            x = sched.step(unet(x, t, ctx[lo:lo + len(x), None]).sample, t, x).prev_sample
        out.append(((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5 + 0.5).clip(0, 255).astype(np.uint8))
    return np.concatenate(out)


def _lr(step: int, cfg: TrainCfg) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup)
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)
