"""Fast tier of serving: the FastAPI app over in-process workers (no Ray), driven over HTTP by
httpx's ASGI test client. Answers equal the pipelines' own; bad input is a 4xx with a message in
OpenAI's error shape (a table, then hypothesis over arbitrary bodies); SSE streams end in [DONE]."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynexport.runtime import load
from dynexport.serve.app import LocalBackend, build_app
from dynexport.serve.protocol import Limits
from dynexport.serve.worker import Worker

LIMITS = Limits(max_body_bytes=20_000, max_new_tokens=64, max_texts=8, max_text_chars=2000)


@pytest.fixture(scope="module")
def client(arts):
    app = build_app({n: LocalBackend(Worker(p)) for n, p in arts.items()}, LIMITS)
    with TestClient(app) as c:
        yield c


def post(client, path, body, **kw):
    return client.post(path, content=json.dumps(body) if not isinstance(body, (bytes, str)) else body, **kw)


def sse_events(text: str) -> list:
    lines = [ln[len("data: "):] for ln in text.split("\n\n") if ln.startswith("data: ")]
    assert lines and lines[-1] == "[DONE]", text[-300:]
    return [json.loads(x) for x in lines[:-1]]


def test_classify_matches_the_pipeline_in_input_order(client, arts):
    texts = ["great match today", "awful service, never again", "ok", "the best day of my life"]
    r = post(client, "/v1/classify", {"model": "clf", "input": texts})
    assert r.status_code == 200, r.text
    want = load(arts["clf"]).run(texts)
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2, 3]
    assert [d["label"] for d in data] == want.labels
    assert [d["exit_layer"] for d in data] == [int(x) for x in want.exit_layers]
    for d, p in zip(data, want.probabilities):
        assert np.allclose(list(d["probabilities"].values()), p, atol=1e-5)
    one = post(client, "/v1/classify", {"model": "clf", "input": texts[1]}).json()["data"]
    assert len(one) == 1 and one[0]["label"] == want.labels[1]


def test_completion_greedy_equals_generate_and_speculative_equals_plain(client, arts):
    prompt = "the quick brown"
    want = load(arts["plain"]).generate(prompt, max_new_tokens=12, ignore_eos=True)
    for model in ("plain", "spec"):
        r = post(client, "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0,
                                             "ignore_eos": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "text_completion" and body["choices"][0]["text"] == want.text
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"] == {"prompt_tokens": want.stats.prompt_tokens, "completion_tokens": 12,
                                 "total_tokens": want.stats.prompt_tokens + 12}
    assert body["dynexport"]["drafted"] > 0 and 0 <= body["dynexport"]["acceptance_rate"] <= 1


def test_streamed_completion_is_the_same_text_then_usage_then_done(client):
    base = {"model": "spec", "prompt": "hello there", "max_tokens": 10, "temperature": 0, "ignore_eos": True}
    whole = post(client, "/v1/completions", base).json()["choices"][0]["text"]
    r = post(client, "/v1/completions", base | {"stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert "".join(e["choices"][0]["text"] for e in events if e["choices"]) == whole
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 10


def test_sampling_is_seeded(client):
    body = {"model": "plain", "prompt": "a", "max_tokens": 8, "temperature": 1.0, "seed": 5, "ignore_eos": True}
    a, b = (post(client, "/v1/completions", body).json()["choices"][0]["text"] for _ in range(2))
    assert a == b


def test_chat_renders_the_template_and_refuses_models_without_one(client, arts):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    r = post(client, "/v1/chat/completions", {"model": "chat", "messages": msgs, "max_tokens": 6, "temperature": 0,
                                              "ignore_eos": True})
    assert r.status_code == 200, r.text
    want = load(arts["chat"]).generate("<system>be brief\n<user>hi\n<assistant>", max_new_tokens=6, ignore_eos=True)
    assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": want.text}
    s = post(client, "/v1/chat/completions", {"model": "chat", "messages": msgs, "max_tokens": 6, "temperature": 0,
                                              "ignore_eos": True, "stream": True})
    events = sse_events(s.text)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == want.text
    r = post(client, "/v1/chat/completions", {"model": "plain", "messages": msgs})
    assert r.status_code == 400 and "no chat template" in r.json()["error"]["message"]


def test_images_are_pngs_of_the_artifact_size(client):
    from PIL import Image
    r = post(client, "/v1/images/generations", {"model": "img", "prompt": "red apple", "n": 2, "steps": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    imgs = [Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))) for d in body["data"]]
    assert [i.size for i in imgs] == [(16, 16)] * 2 and body["dynexport"]["steps"] == [3, 3] == body["dynexport"]["calls"]
    assert post(client, "/v1/images/generations", {"model": "img", "prompt": "x", "size": "64x64"}).status_code == 400


def test_models_health_and_metrics(client):
    ids = {m["id"]: m["dynexport"]["kind"] for m in client.get("/v1/models").json()["data"]}
    assert ids == {"clf": "classify", "spec": "lm", "chat": "lm", "plain": "lm", "img": "images"}
    assert client.get("/healthz").json()["status"] == "ok"
    post(client, "/v1/classify", {"model": "clf", "input": ["x"]})
    text = client.get("/metrics").text
    assert 'dynexport_requests_total{model="clf",path="/v1/classify",status="200"}' in text
    assert "dynexport_exits_total" in text and "dynexport_request_seconds_bucket" in text


BAD = [
    ("/v1/completions", b"{not json", 400, "not valid JSON"),
    ("/v1/completions", {"model": "plain"}, 400, "prompt"),
    ("/v1/completions", {"model": "plain", "prompt": 3}, 400, "prompt"),
    ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "not served here"),
    ("/v1/completions", {"model": "plain", "prompt": ""}, 400, "empty"),
    ("/v1/completions", {"model": "plain", "prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ("/v1/completions", {"model": "plain", "prompt": "x", "max_tokens": 10**6}, 400, "at most 64"),
    ("/v1/completions", {"model": "plain", "prompt": "x", "temprature": 0.5}, 400, "unknown field"),
    ("/v1/completions", {"model": "plain", "prompt": "x", "n": 2}, 400, "n"),
    ("/v1/completions", {"model": "plain", "prompt": "x", "temperature": float("nan")}, 400, "temperature"),
    ("/v1/completions", {"model": "plain", "prompt": "x", "draft": 2}, 400, "no draft"),
    ("/v1/completions", {"model": "clf", "prompt": "x"}, 400, "classify model"),
    ("/v1/completions", {"model": "plain", "prompt": "x" * 2001}, 400, "at most 2000"),
    ("/v1/completions", {"model": "plain", "prompt": "word " * 400, "max_tokens": 64}, 400, "context"),
    ("/v1/completions", "x" * 30_000, 413, "larger than"),
    ("/v1/chat/completions", {"model": "chat", "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": "chat", "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
    ("/v1/classify", {"model": "clf", "input": []}, 400, "1 to 8"),
    ("/v1/classify", {"model": "clf", "input": ["x"] * 9}, 400, "1 to 8"),
    ("/v1/classify", {"model": "clf", "input": [1, 2]}, 400, "input"),
    ("/v1/classify", {"model": "clf", "input": [""]}, 400, "empty"),
    ("/v1/classify", {"model": "spec", "input": ["x"]}, 400, "lm model"),
    ("/v1/images/generations", {"model": "img", "prompt": "x", "n": 9}, 400, "at most 4"),
    ("/v1/images/generations", {"model": "img", "prompt": "x", "steps": 0}, 400, "steps"),
]


@pytest.mark.parametrize("path, body, status, message", BAD, ids=[f"{p}-{m}" for p, _, _, m in BAD])
def test_bad_input_is_a_4xx_with_a_message(client, path, body, status, message):
    r = post(client, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert message in err["message"] and "Traceback" not in err["message"], err


def test_api_key(arts):
    app = build_app({"clf": LocalBackend(Worker(arts["clf"]))}, LIMITS, api_key="s3cret")
    with TestClient(app) as c:
        body = {"model": "clf", "input": ["x"]}
        assert post(c, "/v1/classify", body).status_code == 401
        assert post(c, "/v1/classify", body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert post(c, "/v1/classify", body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes need no key


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
                    max_leaves=12)
FIELDS = st.sampled_from(["model", "prompt", "input", "messages", "max_tokens", "temperature", "top_p", "top_k",
                          "stop", "seed", "stream", "n", "draft", "steps", "size", "ignore_eos"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/classify", "/v1/images/generations"]),
       model=st.sampled_from(["plain", "spec", "clf", "img", "chat", "x"]),
       fields=st.dictionaries(FIELDS, JSON, max_size=5))
def test_any_body_gets_an_answer_or_a_4xx(client, path, model, fields):
    body = {"model": model, **fields}
    if isinstance(body.get("max_tokens"), int) and not isinstance(body["max_tokens"], bool):
        body["max_tokens"] = max(1, min(body["max_tokens"], 4))  # keep the ones that pass cheap
    r = post(client, path, json.dumps(body, allow_nan=True))
    assert r.status_code in (200, 400, 404, 413), (r.status_code, r.text[:300])
    if r.status_code != 200:
        assert r.json()["error"]["message"]
    elif body.get("stream") is True:
        for e in sse_events(r.text):
            assert "choices" in e or "error" in e


def test_cli_serve_refuses_bad_flags_before_starting_ray(arts, tmp_path):
    """One line on stderr, exit 2, and no Ray started (each run returns in seconds); torch is blocked."""
    from helpers import BLOCK_TORCH, run_cli
    cases = [
        ((tmp_path / "missing",), "manifest.json is missing"),
        ((arts["clf"], "--replicas", "0"), "--replicas must be ≥ 1"),
        ((arts["clf"], "--batch-wait-ms", "-1"), "--batch-wait-ms must be ≥ 0"),
        ((arts["clf"], "--api-key-env", "DYNEXPORT_NO_SUCH_VAR"), "empty or not set"),
        ((arts["clf"], arts["clf"]), "two artifacts are named"),
    ]
    for args, message in cases:
        p = run_cli("serve", *args, code_prefix=BLOCK_TORCH, timeout=120)
        assert p.returncode == 2 and message in p.stderr, (args, p.stderr[-500:])
        assert "Traceback" not in p.stderr and "ray" not in p.stdout.lower()


def test_a_slow_call_is_a_504_and_a_saturated_backend_a_503():
    """The request timeout and back-pressure as the app answers them (a stand-in backend: slow, or full)."""
    import asyncio

    from dynexport.serve.app import Unavailable
    from dynexport.serve.worker import ModelInfo

    class Slow:
        info = ModelInfo("slow", "", "bert_exits", "classify", labels=("a",))

        async def call(self, op, payload):
            await asyncio.sleep(5)

    class Full(Slow):
        async def call(self, op, payload):
            raise Unavailable("model 'slow' is saturated; retry later")

    for backend, status, message in ((Slow(), 504, "no answer within 0.2 s"), (Full(), 503, "saturated")):
        app = build_app({"slow": backend}, Limits(request_timeout_s=0.2))
        with TestClient(app) as c:
            r = post(c, "/v1/classify", {"model": "slow", "input": ["x"]})
            assert r.status_code == status and message in r.json()["error"]["message"], r.text
