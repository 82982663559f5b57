"""The training loop pieces the LM trainers share (draft.py, eagle.py): AdamW with linear warm-up and
cosine decay, and resumable checkpoints (trainable tensors + optimizer + schedule + step)."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def adamw_cosine(params, lr: float, steps: int, warmup: int = 30):
    """(optimizer, schedule): lr ramps up over `warmup` steps, then follows a cosine to 0 at `steps`."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(s, steps) / steps)))
    return opt, sched


def resume(ckpt: Path, model: torch.nn.Module, opt, sched, log=print) -> int:
    """Load a checkpoint written by `save` if there is one → the step to continue from (0 if none)."""
    if not ckpt.is_file():
        return 0
    state = torch.load(ckpt, weights_only=True)
    model.load_state_dict(state["model"], strict=False)
    opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
    log(f"resumed at step {state['step']}")
    return int(state["step"])


def save(ckpt: Path, trainable: dict[str, torch.Tensor], opt, sched, step: int) -> None:
    """Write atomically (temp file, then rename): an interrupted save keeps the previous checkpoint."""
    torch.save({"model": trainable, "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step},
               ckpt.with_suffix(".tmp"))
    ckpt.with_suffix(".tmp").replace(ckpt)
