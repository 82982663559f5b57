"""StepSaver: text → image with a per-prompt step count chosen by the step-predictor graph.

    encode   : text_encoder(prompts) → e [B, 384]
    predict  : predictor(e) → P(steps) [B, C]; steps = smallest count with cumulative P ≥ margin
    denoise  : per group of prompts with the same count, x ~ N(0, 1) [b, 3, S, S] from the prompt's seed,
               numpy scheduler loop (schedulers.py) calling unet(x, t, e) — with classifier-free
               guidance the batch is [conditional; unconditional (zero embedding)]
    decode   : x ∈ [-1, 1] → uint8 [B, S, S, 3]

Step policies (policies.py): `FixedSteps(n)` (shorthand n, the baseline), `PredictedSteps(margin)`
("auto", the predictor, before the loop), and, decided inside the loop (stepcontrol.py):
`InLoopStop(tol)` ("stop"), `AdaptiveSkip(threshold)` ("skip"), `CombinedSteps(margin, tol)`
("combined"); "adaptive" is the in-loop policy the artifact's calibration found best. Open fields (None)
take the artifact's calibrated values. All prompts of a call share each UNet call, each sample at its own
timestep; the noise for prompt i depends only on (seed, i), so every policy starts from the same x.
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
from .policies import (
    STEP_POLICIES,
    STEP_SHORTHANDS,
    CombinedSteps,
    FixedSteps,
    PredictedSteps,
    StepPolicy,
    choose_steps,
)
from .schedulers import make_scheduler
from .stepcontrol import control_for, fill
from .steploop import fixed_plan, run_plans
from .text import TextEncoder, check_texts


@dataclass
class ImageStats:
    steps: list[int] = field(default_factory=list)  # solver steps taken, per prompt
    calls: list[int] = field(default_factory=list)  # UNet evaluations, per prompt (steps − skipped)
    policy: str = ""
    check_s: float = 0.0  # in-loop policy checks (numpy), all prompts
    text_s: float = 0.0
    predictor_s: float = 0.0
    unet_s: float = 0.0  # UNet graph calls
    total_s: float = 0.0
    unet_calls: int = 0

    def to_json(self) -> dict:
        return {**asdict(self), "mean_steps": float(np.mean(self.steps)) if self.steps else 0.0,
                "mean_calls": float(np.mean(self.calls)) if self.calls else 0.0}


def as_step_policy(steps) -> StepPolicy | str:
    """A shorthand ("auto", "stop", "skip", "combined") → its policy with open fields, an int n →
    FixedSteps(n), "adaptive" stays (the artifact resolves it); policy objects pass through."""
    if isinstance(steps, STEP_POLICIES) or steps == "adaptive":
        return steps
    if isinstance(steps, str) and steps in STEP_SHORTHANDS:
        return STEP_SHORTHANDS[steps]()
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        return FixedSteps(int(steps))
    names = ", ".join(repr(k) for k in [*STEP_SHORTHANDS, "adaptive"])
    raise InputError(f"steps must be an integer, one of {names} or a step policy "
                     f"({', '.join(t.__name__ for t in STEP_POLICIES)}), got {steps!r}")


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
        cfg = resolve(ImageConfig, config, overrides, "steps", STEP_POLICIES)
        prompts = [prompts] if isinstance(prompts, str) else prompts
        check_texts(prompts)
        m = self.manifest
        sched = make_scheduler(m.scheduler, cfg.scheduler or m.scheduler["kind"])
        g = m.guidance_scale if cfg.guidance_scale is None else float(cfg.guidance_scale)
        policy = self._filled(cfg.steps)
        stats, t0 = ImageStats(policy=repr(policy)), time.perf_counter()
        emb = self.embed(prompts)
        stats.text_s = time.perf_counter() - t0
        counts = None
        if isinstance(policy, (PredictedSteps, CombinedSteps)):
            self._check_auto(sched.kind, g)
            t1 = time.perf_counter()
            counts = self.predict_steps(emb, policy.margin)
            stats.predictor_s = time.perf_counter() - t1
        n = getattr(policy, "n", None) or getattr(policy, "steps", None)
        if n is not None and not 1 <= n <= m.max_steps:
            raise InputError(f"steps must be in 1..{m.max_steps} for this artifact, got {n}")
        plans = [fixed_plan(sched, int(c)) for c in counts] if counts is not None else [fixed_plan(sched, n)] * len(prompts)
        st = self._denoise(emb, cfg.seed, plans, sched, g, control_for(policy, sched, m.full_steps), stats)
        stats.steps, stats.calls = [int(v) for v in st.steps], [int(v) for v in st.calls]
        stats.check_s = st.check_s
        stats.total_s = time.perf_counter() - t0
        images = np.clip((st.x.transpose(0, 2, 3, 1) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)  # [B, S, S, 3]
        return ImageResult(images, stats)

    def _filled(self, policy: StepPolicy | str) -> StepPolicy:
        """The policy with its open (None) fields taken from the artifact's calibration."""
        info = self.manifest.step_control
        if policy == "adaptive":
            if info is None:
                raise InputError("steps='adaptive' needs an artifact with a calibrated step control "
                                 "(export with --step-control); pass a policy such as InLoopStop(tol=0.01)")
            policy = STEP_SHORTHANDS[info.default]()
        return fill(policy, info.model_dump() if info is not None else {}, self.manifest.full_steps)

    def _check_auto(self, kind: str, g: float) -> None:
        """Predicted counts hold only for the scheduler and guidance the predictor's labels were made with."""
        trained = (self.manifest.step_predictor.training if self.manifest.step_predictor else {}) or {}
        for key, have in (("scheduler", kind), ("guidance", g)):
            if trained.get(key) is not None and trained[key] != have:
                raise InputError(f"steps='auto' predicts counts for {key} {trained[key]!r}, not {have!r}: "
                                 f"pass steps=N, or keep the artifact's {key}")

    def _denoise(self, emb: np.ndarray, seed: int, plans: list, sched, g: float, control,
                 stats: ImageStats):
        s = self.manifest.image_size
        x = np.stack([np.random.default_rng([seed, r]).standard_normal((3, s, s)) for r in range(len(emb))])
        ctx = emb[:, None].astype(np.float32)  # [B, 1, 384]

        def eps(xs: np.ndarray, t: np.ndarray, rows: np.ndarray) -> np.ndarray:  # xs [k, 3, S, S], t [k]
            t0 = time.perf_counter()
            c = ctx[rows]
            if g != 1.0:
                xs, t, c = np.concatenate([xs, xs]), np.concatenate([t, t]), np.concatenate([c, np.zeros_like(c)])
            out = self.graphs["unet"](sample=xs, timestep=t, context=c)["noise"]
            stats.unet_s += time.perf_counter() - t0
            stats.unet_calls += 1
            if g == 1.0:
                return out
            cond, unc = out[: len(out) // 2], out[len(out) // 2:]
            return unc + g * (cond - unc)

        return run_plans(sched, x.astype(np.float32), eps, plans, control)  # st.x [B, 3, S, S] in ~[-1, 1]
