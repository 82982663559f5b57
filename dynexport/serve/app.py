"""The HTTP face of the server: one FastAPI app over named model backends, in OpenAI's wire format.

`build_app(backends, limits, api_key)` routes /v1/completions, /v1/chat/completions (server-sent
events with `stream: true`), /v1/classify, /v1/images/generations, /v1/models, /healthz and /metrics
(Prometheus). A backend is anything with `.info` (a ModelInfo), `async call(op, payload) → dict` and
`stream(payload) → async iterator of events`: Ray Serve handles (ray_app.py) or an in-process worker
(`LocalBackend`). The app reads and checks every body itself, so bad input is a 4xx with a message in
OpenAI's error shape, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from ..errors import DynexportError
from .metrics import Metrics
from .protocol import ChatRequest, ClassifyRequest, CompletionRequest, ImageRequest, Limits
from .worker import ModelInfo, Worker, stream_events

DEFAULT_MAX_TOKENS = 16  # /v1/completions without max_tokens (OpenAI's default)
DEFAULT_CHAT_MAX_TOKENS = 256  # /v1/chat/completions without max_tokens (OpenAI's is "up to the context")


class Unavailable(Exception):
    """No replica can take the request now (queues full, replica lost): a 503 the client may retry."""


class HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.kind = status, kind


class Backend(Protocol):
    info: ModelInfo

    async def call(self, op: str, payload) -> dict: ...

    def stream(self, payload: dict) -> AsyncIterator[dict]: ...


class LocalBackend:
    """A worker in this process, on its own one-thread executor (tests; one-process serving)."""

    def __init__(self, worker: Worker):
        self.worker, self.info, self._pool = worker, worker.info, ThreadPoolExecutor(1)

    async def call(self, op: str, payload) -> dict:
        fn = getattr(self.worker, op)
        loop = asyncio.get_running_loop()
        if op == "classify":
            return (await loop.run_in_executor(self._pool, fn, [payload]))[0]
        return await loop.run_in_executor(self._pool, fn, payload)

    def stream(self, payload: dict) -> AsyncIterator[dict]:
        return stream_events(self.worker, payload, self._pool)


def error_body(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}}, status)


def build_app(backends: dict[str, Backend], limits: Limits = Limits(), api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="dynexport", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics()
    app.state.metrics = metrics

    @app.middleware("http")
    async def guard(request: Request, call_next):  # every error of a route becomes its JSON answer here
        t0 = time.perf_counter()
        try:
            if api_key is not None and request.url.path.startswith("/v1/"):
                sent = request.headers.get("authorization", "")
                if not secrets.compare_digest(sent.encode(), f"Bearer {api_key}".encode()):
                    raise HTTPError(401, "missing or wrong API key (Authorization: Bearer …)", "authentication_error")
            response = await call_next(request)
        except HTTPError as e:
            response = error_body(e.status, str(e), e.kind)
        except Unavailable as e:
            response = error_body(503, str(e), "server_overloaded")
        except Exception as e:  # answered as a one-line 500, never a traceback
            response = error_body(500, f"internal error: {type(e).__name__}: {e}".splitlines()[0], "server_error")
        metrics.observe(request.url.path, getattr(request.state, "model", ""), response.status_code,
                        time.perf_counter() - t0)
        return response

    async def parse(request: Request, model_cls: type[BaseModel], kind: str):
        body = await read_body(request, limits.max_body_bytes)
        try:
            obj = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HTTPError(400, f"the body is not valid JSON: {e}") from None
        try:
            req = model_cls.model_validate(obj)
        except ValidationError as e:
            raise HTTPError(400, validation_message(e)) from None
        backend = backends.get(req.model)
        if backend is None:
            raise HTTPError(404, f"model {req.model!r} is not served here; GET /v1/models lists "
                                 f"{', '.join(sorted(backends))}", "not_found_error")
        if backend.info.kind != kind:
            raise HTTPError(400, f"model {req.model!r} is a {backend.info.kind} model ({backend.info.method}); "
                                 f"this endpoint takes {kind} models")
        request.state.model = req.model
        return req, backend

    async def answer(backend: Backend, op: str, payload) -> dict:
        try:
            out = await asyncio.wait_for(backend.call(op, payload), limits.request_timeout_s)
        except TimeoutError:
            raise HTTPError(504, f"no answer within {limits.request_timeout_s:g} s", "timeout") from None
        if "error" in out:
            raise HTTPError(out["error"]["status"], out["error"]["message"], out["error"]["type"])
        return out

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "models": sorted(backends)}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [
            {"id": n, "object": "model", "created": 0, "owned_by": "dynexport",
             "dynexport": {"method": b.info.method, "kind": b.info.kind, "chat": b.info.chat}}
            for n, b in sorted(backends.items())]}

    @app.post("/v1/classify")
    async def classify(request: Request):
        req, backend = await parse(request, ClassifyRequest, "classify")
        texts = checked(lambda: req.texts(limits))
        if any(len(t) > limits.max_text_chars for t in texts):
            raise HTTPError(400, f"each text must be at most {limits.max_text_chars} characters")
        out = await answer(backend, "classify", texts)
        metrics.exits(req.model, [d["exit_layer"] for d in out["data"]])
        return {"object": "list", "model": req.model, **out}

    @app.post("/v1/images/generations")
    async def images(request: Request):
        req, backend = await parse(request, ImageRequest, "images")
        size = backend.info.image_size
        if req.size is not None and req.size != f"{size}x{size}":
            raise HTTPError(400, f"size must be {size}x{size} for model {req.model!r}, got {req.size!r}")
        if req.n > limits.max_images:
            raise HTTPError(400, f"n must be at most {limits.max_images}, got {req.n}")
        check_prompt(req.prompt, limits)
        payload = req.model_dump(include={"prompt", "n", "steps", "seed", "guidance_scale"})
        out = await answer(backend, "images", payload)
        return {"created": int(time.time()), "data": out["data"],
                "dynexport": {"steps": out["steps"], "calls": out["calls"]}}

    @app.post("/v1/completions")
    async def completions(request: Request):
        req, backend = await parse(request, CompletionRequest, "lm")
        check_prompt(req.prompt, limits)
        payload = {"prompt": req.prompt, "config": checked(lambda: req.generation(limits, DEFAULT_MAX_TOKENS))}
        return await complete(req, backend, payload, "text_completion")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req, backend = await parse(request, ChatRequest, "lm")
        if not backend.info.chat:
            raise HTTPError(400, f"model {req.model!r} has no chat template: use /v1/completions")
        for m in req.messages:
            check_prompt(m.content, limits, empty_ok=True)
        cfg = checked(lambda: req.generation(limits, DEFAULT_CHAT_MAX_TOKENS))
        payload = {"messages": [m.model_dump(exclude_none=True) for m in req.messages], "config": cfg}
        return await complete(req, backend, payload, "chat.completion")

    async def complete(req, backend: Backend, payload: dict, obj: str):
        rid = f"{'chatcmpl' if obj.startswith('chat') else 'cmpl'}-{secrets.token_hex(12)}"
        head = {"id": rid, "created": int(time.time()), "model": req.model}
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = sse(backend, payload, head, obj, include_usage, metrics, limits)
            return StreamingResponse(events, media_type="text/event-stream")
        out = await answer(backend, "complete", payload)
        metrics.generation(req.model, out)
        if obj == "chat.completion":
            choice = {"index": 0, "message": {"role": "assistant", "content": out["text"]}}
        else:
            choice = {"index": 0, "text": out["text"], "logprobs": None}
        choice["finish_reason"] = out["finish_reason"]
        return {**head, "object": obj, "choices": [choice], "usage": out["usage"], "dynexport": out["stats"]}

    return app


async def sse(backend: Backend, payload: dict, head: dict, obj: str, include_usage: bool, metrics: Metrics,
              limits: Limits) -> AsyncIterator[str]:
    """Server-sent events of one streamed completion: text chunks, the finish chunk, usage (asked for),
    `[DONE]`; a failure after the stream has started becomes an error event (then `[DONE]`)."""
    chat = obj == "chat.completion"
    chunk_obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str | None, finish: str | None, first: bool = False) -> str:
        if chat:
            delta = ({"role": "assistant"} if first else {}) | ({"content": text} if text is not None else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return event({**head, "object": chunk_obj, "choices": [choice]})

    first, deadline = True, time.monotonic() + limits.request_timeout_s
    try:
        async for ev in backend.stream(payload):
            if "error" in ev:
                yield event({"error": ev["error"]})
                break
            if "text" in ev:
                yield chunk(ev["text"], None, first)
                first = False
            else:
                metrics.generation(head["model"], ev)
                yield chunk(None if chat else "", ev["finish_reason"], first)
                if include_usage:
                    yield event({**head, "object": chunk_obj, "choices": [], "usage": ev["usage"],
                                 "dynexport": ev["stats"]})
            if time.monotonic() > deadline:
                yield event({"error": {"message": "the stream ran past the request timeout", "type": "timeout"}})
                break
    except Unavailable as e:
        yield event({"error": {"message": str(e), "type": "server_overloaded"}})
    except Exception as e:  # the stream has started: the client learns of the failure in-band
        yield event({"error": {"message": f"{type(e).__name__}: {e}".splitlines()[0], "type": "server_error"}})
    yield "data: [DONE]\n\n"


def event(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"


async def read_body(request: Request, cap: int) -> bytes:
    """The body, refused with 413 past `cap` bytes whether or not Content-Length is sent."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > cap):
        raise HTTPError(413, f"the body is larger than {cap} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > cap:
            raise HTTPError(413, f"the body is larger than {cap} bytes")
    return bytes(body)


def validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        where = ".".join(str(x) for x in err["loc"]) or "body"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def checked(fn):
    """A request method's own checks (ValueError / DynexportError) as a 400."""
    try:
        return fn()
    except (ValueError, DynexportError) as e:
        raise HTTPError(400, str(e)) from None


def check_prompt(text: str, limits: Limits, empty_ok: bool = False) -> None:
    if not text and not empty_ok:
        raise HTTPError(400, "the prompt is empty")
    if len(text) > limits.max_text_chars:
        raise HTTPError(400, f"the prompt must be at most {limits.max_text_chars} characters, got {len(text)}")

