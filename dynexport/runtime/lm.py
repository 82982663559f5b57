"""A plain causal-LM artifact: `LMPipeline.generate(prompt, GenerationConfig, streamer) → GenResult`
(one sequence, the shared generate loop) and `pipe.batch() → BatchLM` over the same graph (many
sequences of one prompt at once: the inference strategies' sampler and scorer). Each view compiles
the graph when first used, so a pipeline that only samples in batches holds one compiled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..manifest import LMManifest
from .batch import BatchLM
from .generation import Decoder, GenerationConfig, GenResult, GenStats, Streamer, generate, pick_next
from .kv import LMSession
from .text import load_tokenizer


class LMPipeline:
    def __init__(self, root: Path, manifest: LMManifest, backend: str, device: str = "CPU",
                 threads: int | None = None):
        self.root, self.manifest, self.backend = root, manifest, backend
        self._where = (device, threads)
        self.tokenizer = load_tokenizer(root / manifest.tokenizer.file)
        self._session: LMSession | None = None
        self._batch: BatchLM | None = None

    def generate(self, prompt: str | list[str], config: GenerationConfig | None = None, streamer: Streamer | None = None,
                 **overrides) -> GenResult:
        """Complete `prompt` (or each of a list): greedy or sampled, one token per model call."""
        tok = self.manifest.tokenizer
        return generate(self.tokenizer, tok.eos_ids, tok.max_context, prompt, config, streamer, overrides,
                        self._decoder)

    @property
    def session(self) -> LMSession:
        """The one-sequence view of this model's graph (compiled on first use, then reused)."""
        if self._session is None:
            device, threads = self._where
            self._session = LMSession(self.root, self.manifest.model, self.backend, device, threads,
                                      cpu_config=self.manifest.cpu_config)
        return self._session

    def batch(self) -> BatchLM:
        """The batched view of this model's graph (compiled on first use, then reused; it holds its own
        cache, so generate() and batched strategies do not disturb each other)."""
        if self._batch is None:
            device, threads = self._where
            self._batch = BatchLM(self.root, self.manifest.model, self.backend, device, threads,
                                  cpu_config=self.manifest.cpu_config)
        return self._batch

    def _decoder(self, cfg: GenerationConfig, rng: np.random.Generator, stats: GenStats) -> Decoder:
        if cfg.draft is not None:
            raise InputError("a plain LM artifact has no draft; export speculative or eagle to draft")
        s, sampling = self.session, cfg.sampling

        def start(ids: list[int]) -> int:
            s.reset()
            return pick_next(s, ids, sampling, rng)

        return Decoder(start, lambda x, remaining: [pick_next(s, [x], sampling, rng)], (s,))
