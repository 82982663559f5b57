"""StepSaver: text → image with a per-prompt step count chosen by the step-predictor graph.

    encode   : text_encoder(prompts) → e [B, 384]
    predict  : predictor(e) → P(steps) [B, C]; steps = smallest count with cumulative P ≥ margin
    denoise  : per group of prompts with the same count, x ~ N(0, 1) [b, 3, S, S] from the prompt's seed,
               numpy scheduler loop (schedulers.py) calling unet(x, t, e) — with classifier-free
               guidance the batch is [conditional; unconditional (zero embedding)]
    decode   : x ∈ [-1, 1] → uint8 [B, S, S, 3]

The step policy is `PredictedSteps(margin)` (the predictor; shorthand "auto") or `FixedSteps(n)` (a fixed
schedule, the baseline; shorthand n); the noise for prompt i depends only on (seed, i), so the same
seed gives the same start for every step count.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..manifest import DiffusionManifest
from .config import resolve
from .graph import Graph
from .policies import FixedSteps, PredictedSteps, StepPolicy, choose_steps
from .schedulers import make_scheduler, run_loop
from .text import TextEncoder, check_texts


@dataclass
class ImageStats:
    steps: list[int] = field(default_factory=list)  # denoising steps used, per prompt
    text_s: float = 0.0
    predictor_s: float = 0.0
    unet_s: float = 0.0  # UNet graph calls
    total_s: float = 0.0
    unet_calls: int = 0

    def to_json(self) -> dict:
        return {**asdict(self), "mean_steps": float(np.mean(self.steps)) if self.steps else 0.0}


def as_step_policy(steps) -> StepPolicy:
    """"auto" → PredictedSteps(), an int n → FixedSteps(n); policy objects pass through."""
    if isinstance(steps, (FixedSteps, PredictedSteps)):
        return steps
    if steps == "auto":
        return PredictedSteps()
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        return FixedSteps(int(steps))
    raise InputError(f"steps must be 'auto', an integer or a step policy (PredictedSteps, FixedSteps), got {steps!r}")


@dataclass(frozen=True)
class ImageConfig:
    """How `generate` draws. scheduler / guidance_scale None: the artifact's."""
    seed: int = 0
    steps: StepPolicy | int | str = "auto"  # normalised to a step policy
    scheduler: str | None = None  # ddim | dpmsolver++
    guidance_scale: float | None = None

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise InputError(f"seed must be an integer ≥ 0, got {self.seed!r}")
        object.__setattr__(self, "steps", as_step_policy(self.steps))
        g = self.guidance_scale
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not np.isfinite(g) or g < 1):
            raise InputError(f"guidance_scale must be a number ≥ 1, got {g!r}")


@dataclass(frozen=True)
class ImageResult:
    images: np.ndarray  # [B, S, S, 3] uint8
    stats: ImageStats


class StepSaverPipeline:
    def __init__(self, root: Path, manifest: DiffusionManifest, backend: str, device: str = "CPU",
                 threads: int | None = None):
        self.manifest = manifest
        tok = manifest.tokenizer
        self.tokenizer = TextEncoder(root / tok.file, tok.max_length, tok.pad_id)
        self.graphs = {g.name: Graph(root / g.files[backend], backend, device, threads) for g in manifest.all_graphs()}

    def embed(self, prompts: list[str]) -> np.ndarray:
        """Sentence embeddings [B, 384]."""
        b = self.tokenizer(prompts)
        return self.graphs["text_encoder"](input_ids=b.input_ids, attention_mask=b.attention_mask)["text_embedding"]

    def predict_steps(self, emb: np.ndarray, margin: float | None = None) -> np.ndarray:
        """Step count per prompt from the predictor graph → [B] int."""
        info = self.manifest.step_predictor
        if info is None or "predictor" not in self.graphs:
            raise InputError("this artifact has no step predictor: pass steps=N (an int), or export with --predictor")
        probs = self.graphs["predictor"](embedding=emb.astype(np.float32))["probs"]  # [B, C]
        return choose_steps(probs, info.counts, info.margin if margin is None else margin)

    def generate(self, prompts: list[str] | str, config: ImageConfig | StepPolicy | None = None,
                 **overrides) -> ImageResult:
        """Images for `prompts`; `config` (or a step policy, as `ImageConfig(steps=...)`) and keyword
        overrides are ImageConfig fields."""
        cfg = resolve(ImageConfig, config, overrides, "steps", (FixedSteps, PredictedSteps))
        prompts = [prompts] if isinstance(prompts, str) else prompts
        check_texts(prompts)
        m = self.manifest
        sched = make_scheduler(m.scheduler, cfg.scheduler or m.scheduler["kind"])
        g = m.guidance_scale if cfg.guidance_scale is None else float(cfg.guidance_scale)
        stats, t0 = ImageStats(), time.perf_counter()
        emb = self.embed(prompts)
        stats.text_s = time.perf_counter() - t0
        if isinstance(cfg.steps, PredictedSteps):
            self._check_auto(sched.kind, g)
            t1 = time.perf_counter()
            counts = self.predict_steps(emb, cfg.steps.margin)
            stats.predictor_s = time.perf_counter() - t1
        elif cfg.steps.n <= m.max_steps:
            counts = np.full(len(prompts), cfg.steps.n)
        else:
            raise InputError(f"steps must be 'auto' or an integer in 1..{m.max_steps}, got {cfg.steps.n}")
        images = np.zeros((len(prompts), m.image_size, m.image_size, 3), np.uint8)
        for n in np.unique(counts):
            rows = np.flatnonzero(counts == n)
            images[rows] = self._denoise(emb[rows], rows, cfg.seed, int(n), sched, g, stats)
        stats.steps = [int(c) for c in counts]
        stats.total_s = time.perf_counter() - t0
        return ImageResult(images, stats)

    def _check_auto(self, kind: str, g: float) -> None:
        """Predicted counts hold only for the scheduler and guidance the predictor's labels were made with."""
        trained = (self.manifest.step_predictor.training if self.manifest.step_predictor else {}) or {}
        for key, have in (("scheduler", kind), ("guidance", g)):
            if trained.get(key) is not None and trained[key] != have:
                raise InputError(f"steps='auto' predicts counts for {key} {trained[key]!r}, not {have!r}: "
                                 f"pass steps=N, or keep the artifact's {key}")

    def _denoise(self, emb: np.ndarray, rows: np.ndarray, seed: int, n: int, sched, g: float,
                 stats: ImageStats) -> np.ndarray:
        s = self.manifest.image_size
        x = np.stack([np.random.default_rng([seed, int(r)]).standard_normal((3, s, s)) for r in rows]).astype(np.float32)
        ctx = emb[:, None].astype(np.float32)  # [b, 1, 384]
        if g != 1.0:
            ctx = np.concatenate([ctx, np.zeros_like(ctx)])  # [2b, 1, 384]: conditional, unconditional

        def eps(x: np.ndarray, t: int) -> np.ndarray:
            t0 = time.perf_counter()
            xin = x if g == 1.0 else np.concatenate([x, x])
            out = self.graphs["unet"](sample=xin, timestep=np.full(len(xin), t, np.float32), context=ctx)["noise"]
            stats.unet_s += time.perf_counter() - t0
            stats.unet_calls += 1
            if g == 1.0:
                return out
            cond, unc = out[: len(x)], out[len(x):]
            return unc + g * (cond - unc)

        x = run_loop(sched, n, x, eps)  # [b, 3, S, S] in ~[-1, 1]
        return np.clip((x.transpose(0, 2, 3, 1) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
