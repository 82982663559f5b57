"""What one served artifact does per request, with neither Ray nor HTTP in it: `model_info` reads
what the HTTP layer must know from the manifest; a `Worker` holds the loaded pipeline and answers
classify / complete / stream / images with plain dicts (errors as values, so they cross Ray's process
boundary unchanged); `stream_events` turns a blocking streamed generation into an async iterator.

One worker runs one call at a time (pipelines keep a KV cache): the caller gives it a one-thread
executor, so requests to one replica are served first come, first served.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DynexportError
from ..manifest import read_manifest
from ..runtime import ClassifyConfig, GenerationConfig, ImageConfig, load

KINDS = {"bert_exits": "classify", "lm": "lm", "speculative": "lm", "eagle": "lm", "stepsaver": "images"}


@dataclass(frozen=True)
class ModelInfo:
    """A served artifact as the HTTP layer sees it."""
    name: str
    path: str
    method: str  # the manifest's method
    kind: str  # classify | lm | images
    max_context: int = 0  # lm: prompt + generated tokens
    chat: bool = False  # lm: the artifact carries a chat template
    labels: tuple[str, ...] = ()  # classify
    image_size: int = 0  # images
    max_steps: int = 0  # images


def model_info(name: str, path: str | Path, manifest=None) -> ModelInfo:
    """From `manifest`, or the artifact's own, read and verified here (no graph is compiled)."""
    m = read_manifest(Path(path)) if manifest is None else manifest
    kind = KINDS[m.method]
    extra = {}
    if kind == "lm":
        extra = dict(max_context=m.tokenizer.max_context, chat=chat_template(Path(path), m.tokenizer) is not None)
    elif kind == "classify":
        extra = dict(labels=tuple(m.labels))
    else:
        extra = dict(image_size=m.image_size, max_steps=m.max_steps)
    return ModelInfo(name, str(path), m.method, kind, **extra)


def chat_template(root: Path, tok) -> str | None:
    """The artifact's chat template: its chat_template.jinja, else tokenizer_config.json's `chat_template`."""
    files = {Path(f).name: root / f for f in tok.extra_files}
    if "chat_template.jinja" in files:
        return files["chat_template.jinja"].read_text()
    if "tokenizer_config.json" in files:
        t = json.loads(files["tokenizer_config.json"].read_text()).get("chat_template")
        if isinstance(t, list):  # named templates: the default one
            t = next((x.get("template") for x in t if x.get("name") == "default"), None)
        return t if isinstance(t, str) else None
    return None


def render_chat(template: str, messages: list[dict], special: dict) -> str:
    """The prompt text for `messages`, rendered as transformers does (sandboxed Jinja, generation prompt on)."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def fail(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = fail
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=True, **special)
    except TemplateError as e:
        raise DynexportError(f"the chat template refused these messages: {e}") from None


def error(status: int, message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "status": status}}


def guarded(fn: Callable[..., dict]) -> Callable[..., dict]:
    """A worker call whose refusals (DynexportError: bad input for this artifact) come back as 400s."""
    def call(*args, **kwargs) -> dict:
        try:
            return fn(*args, **kwargs)
        except DynexportError as e:
            return error(400, str(e))
    return call


class Worker:
    """One loaded artifact. Methods are blocking; run them on the worker's own one-thread executor."""

    def __init__(self, path: str | Path, backend: str = "openvino", threads: int | None = None,
                 name: str | None = None):
        self.root = Path(path)
        self.pipe = load(self.root, backend, threads=threads)
        tok = self.pipe.manifest.tokenizer  # load() has verified it: not read and hashed again
        self.info = model_info(name or self.root.name, self.root, self.pipe.manifest)  # served as `name`
        self._template = chat_template(self.root, tok) if self.info.kind == "lm" else None
        self._special = _special_tokens(self.root, tok) if self._template is not None else {}

    def classify(self, requests: list[list[str]]) -> list[dict]:
        """One answer per request, for many requests at once (the dynamic batch): one pipeline call."""
        flat = [t for texts in requests for t in texts]
        try:
            r = self.pipe.run(flat, ClassifyConfig(batch_size=max(len(flat), 1)))
        except DynexportError as e:
            return [error(400, str(e))] * len(requests)
        labels = self.pipe.manifest.labels
        rows = [{"label": r.labels[i], "exit_layer": int(r.exit_layers[i]),
                 "probabilities": {lab: float(p) for lab, p in zip(labels, r.probabilities[i])}}
                for i in range(len(flat))]
        out, i = [], 0
        for texts in requests:
            out.append({"data": [dict(index=j, **rows[i + j]) for j in range(len(texts))],
                        "batch_size": len(flat), "usage": {"texts": len(texts)}})
            i += len(texts)
        return out

    @guarded
    def complete(self, req: dict) -> dict:
        """req: {"prompt" | "messages", "config": GenerationConfig fields} → text, finish reason, usage, stats."""
        prompt, cfg = self._prompt(req), GenerationConfig(**req["config"])
        r = self.pipe.generate(prompt, cfg)
        return _final(r.stats, len(r.tokens[0]), cfg) | {"text": r.text}

    def stream(self, req: dict, emit: Callable[[dict], None], stop: threading.Event) -> None:
        """Emits {"text": piece}… then one final event (finish reason, usage, stats) or an error event;
        generation stops early when `stop` is set (the client went away)."""
        try:
            prompt, cfg = self._prompt(req), GenerationConfig(**req["config"])
            r = self.pipe.generate(prompt, cfg, streamer=lambda piece: emit({"text": piece}) or stop.is_set())
            emit(_final(r.stats, len(r.tokens[0]), cfg))
        except DynexportError as e:
            emit(error(400, str(e)))

    @guarded
    def images(self, req: dict) -> dict:
        """req: {"prompt", "n", "steps", "seed", "guidance_scale"} → base64 PNGs, the steps and UNet calls used."""
        from PIL import Image
        cfg = ImageConfig(seed=req["seed"], steps=req["steps"], guidance_scale=req.get("guidance_scale"))
        r = self.pipe.generate([req["prompt"]] * req["n"], cfg)
        pngs = []
        for img in r.images:  # [S, S, 3] uint8
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG")
            pngs.append(base64.b64encode(buf.getvalue()).decode())
        return {"data": [{"b64_json": p} for p in pngs], "steps": r.stats.steps, "calls": r.stats.calls}

    def _prompt(self, req: dict) -> str:
        if req.get("messages") is None:
            return req["prompt"]
        if self._template is None:
            raise DynexportError(f"model {self.info.name!r} has no chat template: use /v1/completions")
        return render_chat(self._template, req["messages"], self._special)


def _special_tokens(root: Path, tok) -> dict:
    """bos_token / eos_token for the chat template, from tokenizer_config.json ("" when not given)."""
    cfg_file = next((root / f for f in tok.extra_files if Path(f).name == "tokenizer_config.json"), None)
    if cfg_file is None:
        return {}
    cfg = json.loads(cfg_file.read_text())
    pick = lambda v: v.get("content") if isinstance(v, dict) else v
    return {k: pick(cfg.get(k)) or "" for k in ("bos_token", "eos_token")}


def _final(stats, n_tokens: int, cfg: GenerationConfig) -> dict:
    finish = "length" if n_tokens >= cfg.max_new_tokens else "stop"
    usage = {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.new_tokens,
             "total_tokens": stats.prompt_tokens + stats.new_tokens}
    keep = ("ttft_s", "total_s", "tpot_s", "tokens_per_s", "target_calls", "draft_calls", "drafted", "accepted",
            "acceptance_rate", "mean_accepted_length")
    s = stats.to_json()
    return {"finish_reason": finish, "usage": usage, "stats": {k: s[k] for k in keep}}


async def stream_events(worker: Worker, req: dict, executor: Executor) -> AsyncIterator[dict]:
    """worker.stream on `executor`, as an async iterator of its events; closing the iterator early
    (the client disconnected) stops the generation at its next token."""
    loop, queue, stop = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()
    done = object()

    def run():
        try:
            worker.stream(req, lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev), stop)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, done)

    fut = loop.run_in_executor(executor, run)
    try:
        while (ev := await queue.get()) is not done:
            yield ev
    finally:
        stop.set()
        await fut
