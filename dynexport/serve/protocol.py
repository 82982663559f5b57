"""The wire format the server speaks: OpenAI's request bodies as strict pydantic models (an unknown
field is a 400, never silently ignored), their mapping onto the runtime's configs, and the serving
limits. Extensions beside OpenAI's fields: `top_k` and `ignore_eos` (as vLLM names them), `draft`
(a speculative / EAGLE artifact's draft setting), `steps` and `guidance_scale` for images."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

from ..runtime.generation import GenerationConfig

Number = Union[StrictInt, StrictFloat]


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and the queue sizes of Ray Serve. Every default is defined here once."""
    max_body_bytes: int = 1 << 20  # a larger body → 413
    max_new_tokens: int = 1024  # max_tokens above this → 400
    max_texts: int = 256  # texts in one /v1/classify body
    max_text_chars: int = 20_000  # one text or prompt, in characters
    max_images: int = 4  # n in one /v1/images/generations body
    request_timeout_s: float = 120.0  # a call not answered by then → 504
    max_ongoing_requests: int = 8  # per replica, in flight at once (Ray Serve)
    max_queued_requests: int = 64  # per deployment, waiting for a replica; beyond → 503 at once


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StreamOptions(Strict):
    include_usage: StrictBool = False


class _Sampling(Strict):
    """The sampling fields completions and chat completions share."""
    model: StrictStr
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Number = Field(1.0, ge=0, le=2)  # 0: greedy
    top_p: Number = Field(1.0, gt=0, le=1)
    top_k: StrictInt = Field(0, ge=0)
    n: Literal[1] = 1
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = Field(None, ge=0, lt=2**63)
    ignore_eos: StrictBool = False
    draft: StrictInt | Literal["adaptive", "tree"] | None = None
    user: StrictStr | None = None
    presence_penalty: Literal[0, 0.0] = 0
    frequency_penalty: Literal[0, 0.0] = 0
    logprobs: Literal[None, False] = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else v
        if stops is not None and (len(stops) > 4 or any(not s for s in stops)):
            raise ValueError("stop takes at most 4 non-empty strings")
        return v

    def generation(self, limits: Limits, default_max_tokens: int) -> dict:
        """GenerationConfig fields for this request (a dict, so it crosses process boundaries as is)."""
        n = self.requested_max_tokens()
        n = default_max_tokens if n is None else n
        if n > limits.max_new_tokens:
            raise ValueError(f"max_tokens must be at most {limits.max_new_tokens}, got {n}")
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        seed = self.seed if self.seed is not None else secrets.randbits(31)  # sampling without a seed: fresh each call
        cfg = dict(max_new_tokens=n, do_sample=self.temperature > 0, temperature=float(self.temperature or 1.0),
                   top_k=self.top_k, top_p=float(self.top_p), seed=seed, ignore_eos=self.ignore_eos,
                   stop_strings=tuple(stops), draft=self.draft)
        GenerationConfig(**cfg)  # the runtime's own checks, before the request travels
        return cfg

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class CompletionRequest(_Sampling):
    prompt: StrictStr
    echo: Literal[False] = False
    suffix: Literal[None] = None
    best_of: Literal[None, 1] = None


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant", "developer"]
    content: StrictStr
    name: StrictStr | None = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)

    def requested_max_tokens(self) -> int | None:
        if self.max_completion_tokens is not None and self.max_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        return self.max_tokens if self.max_completion_tokens is None else self.max_completion_tokens


class ClassifyRequest(Strict):
    model: StrictStr
    input: StrictStr | list[StrictStr]

    def texts(self, limits: Limits) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts or len(texts) > limits.max_texts:
            raise ValueError(f"input must hold 1 to {limits.max_texts} texts, got {len(texts)}")
        return texts


class ImageRequest(Strict):
    model: StrictStr
    prompt: StrictStr
    n: StrictInt = Field(1, ge=1)
    size: StrictStr | None = None  # "SxS"; must be the artifact's size when given
    response_format: Literal["b64_json"] = "b64_json"
    steps: StrictInt | Literal["auto", "adaptive", "stop", "skip", "combined"] = "auto"
    seed: StrictInt = Field(0, ge=0, lt=2**63)
    guidance_scale: Number | None = None
    user: StrictStr | None = None
