"""Serving on Ray Serve for real (slow tier: Ray starts in seconds, not milliseconds): `dynexport serve`
as a subprocess driven by the official `openai` client and httpx, dynamic batching under concurrent
requests, SIGTERM leaving no process behind; and on a two-node `ray.cluster_utils.Cluster`, replicas
on both nodes and saturation answered with 503s, never a hang."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from dynexport.runtime import load

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(arts):
    port = free_port()
    env = dict(os.environ, DYNEXPORT_TEST_KEY="k3y", RAY_USAGE_STATS_ENABLED="0")
    cmd = [sys.executable, "-m", "dynexport", "serve", str(arts["clf"]), str(arts["spec"]), str(arts["chat"]),
           "--port", str(port), "--max-batch-size", "16", "--batch-wait-ms", "20", "--api-key-env", "DYNEXPORT_TEST_KEY"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    while not (seen and seen[-1].startswith("serving")):  # Ray may print its own lines first
        seen.append(proc.stdout.readline())
        assert seen[-1] and len(seen) < 50, (seen, proc.stderr.read() if proc.poll() is not None else "")
    yield {"url": f"http://127.0.0.1:{port}", "proc": proc, "key": "k3y"}
    if proc.poll() is None:
        proc.kill()


def test_openai_client_completions_streaming_and_chat(server, arts):
    from openai import OpenAI
    client = OpenAI(base_url=server["url"] + "/v1", api_key=server["key"], max_retries=0)
    want = load(arts["spec"]).generate("the quick brown", max_new_tokens=10, ignore_eos=True)
    r = client.completions.create(model="spec", prompt="the quick brown", max_tokens=10, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].text == want.text and r.usage.completion_tokens == 10
    assert r.model_extra["dynexport"]["drafted"] > 0
    pieces = [c.choices[0].text for c in client.completions.create(
        model="spec", prompt="the quick brown", max_tokens=10, temperature=0, stream=True,
        extra_body={"ignore_eos": True}) if c.choices]
    assert "".join(pieces) == want.text  # (the tiny model's bytes may form whole characters only at the end)
    msgs = [{"role": "user", "content": "hi"}]
    chat = load(arts["chat"]).generate("<user>hi\n<assistant>", max_new_tokens=6, ignore_eos=True)
    r = client.chat.completions.create(model="chat", messages=msgs, max_tokens=6, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert r.choices[0].message.content == chat.text
    stream = client.chat.completions.create(model="chat", messages=msgs, max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.text
    assert chunks[-1].usage.completion_tokens == 6
    models = {m.id for m in client.models.list()}
    assert models == {arts["clf"].name, "spec", "chat"}


def test_concurrent_classify_is_batched_and_answers_in_order(server, arts):
    texts = [f"text number {i} {'good' * (i % 3)}" for i in range(48)]
    want = load(arts["clf"]).run(texts).labels
    headers = {"Authorization": f"Bearer {server['key']}"}

    async def go():
        async with httpx.AsyncClient(base_url=server["url"], headers=headers, timeout=60) as c:
            return await asyncio.gather(*(c.post("/v1/classify", json={"model": arts["clf"].name, "input": t})
                                          for t in texts))

    rs = asyncio.run(go())
    assert [r.status_code for r in rs] == [200] * len(texts)
    assert [r.json()["data"][0]["label"] for r in rs] == want
    assert max(r.json()["batch_size"] for r in rs) > 1  # requests shared a graph call
    assert httpx.post(server["url"] + "/v1/classify", json={"model": "x", "input": "y"}).status_code == 401
    metrics = httpx.get(server["url"] + "/metrics").text
    assert f'dynexport_requests_total{{model="{arts["clf"].name}",path="/v1/classify",status="200"}} 48.0' in metrics


def test_sigterm_stops_everything_it_started(server):
    proc = psutil.Process(server["proc"].pid)
    children = proc.children(recursive=True)
    assert any("raylet" in " ".join(c.cmdline()) for c in children if c.is_running())
    server["proc"].send_signal(signal.SIGTERM)
    assert server["proc"].wait(timeout=60) == 0, server["proc"].stderr.read()[-2000:]
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(c) for c in children):
        time.sleep(0.5)
    assert not [c.pid for c in children if _alive(c)]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_two_node_cluster_spreads_replicas_and_saturation_is_a_503(arts):
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from dynexport.serve.protocol import Limits
    from dynexport.serve.ray_app import APP_NAME, ServeOptions, application
    from dynexport.serve.worker import model_info
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    port = free_port()
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        opts = ServeOptions(replicas=2, limits=Limits(max_ongoing_requests=1, max_queued_requests=1))
        serve.run(application([model_info("spec", arts["spec"])], opts, None), name=APP_NAME, route_prefix="/")
        handle = serve.get_deployment_handle("model-spec", APP_NAME)
        nodes = {handle.where.remote().result()["node_id"] for _ in range(40)}
        assert len(nodes) == 2 and nodes <= {n["NodeID"] for n in ray.nodes()}

        async def flood():
            body = {"model": "spec", "prompt": "go", "max_tokens": 100, "temperature": 0, "ignore_eos": True}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                t0 = time.perf_counter()
                rs = await asyncio.gather(*(c.post("/v1/completions", json=body) for _ in range(24)))
                return rs, time.perf_counter() - t0

        rs, wall = asyncio.run(flood())
        codes = sorted(r.status_code for r in rs)
        # how many of the 24 get in depends on when the proxy's router sees the queued one go out
        # (a CI run had 1 answered, earlier runs 2 or more), so only "some answered, the rest refused"
        assert set(codes) == {200, 503}, codes
        # one artifact: its deployment is the HTTP entry, so Ray's proxy itself refuses (its own body)
        assert all(r.text for r in rs if r.status_code == 503)
        assert wall < 45
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:  # saturation passed: served again
            assert c.post("/v1/completions", json={"model": "spec", "prompt": "go", "max_tokens": 4}).status_code == 200
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
