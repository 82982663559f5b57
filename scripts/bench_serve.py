"""Serving benchmark → benchmarks/serve.json + benchmarks/serve.png (loopback only, bounded, stops by itself).

    python scripts/bench_serve.py [--classifier exported_models/bert-exits-4-8]
        [--lm exported_models/smollm2-speculative] [--requests 256] [--rounds 3] [--port 8765]

This process is the Ray driver: it serves both artifacts, each as its own Serve application (the
classifier at /, the LM at /lm; one replica each, one inference thread), loads them in-process too,
then alternates, per round, on the same texts:
- classifier in-process at batch 1 and batch 32 (throughput, per-text latency);
- classifier served at concurrency 1, 4, 16, 64 with dynamic batching (max 32, 5 ms wait) and with
  batching off (max 1), switched live through the deployment's user_config (no restart);
- the LM streamed at concurrency 1 (served TPOT vs the same pipeline's in-process TPOT) and 4 (TTFT
  p50 / p99, tokens/s; one replica serves one generation at a time, first come first served).
Then 1 vs 2 classifier replicas, and the fault run: SIGKILL of one replica's process during load;
every request must end in a response (200 or an explicit 5xx); then recovery.
A request with no HTTP response, or a stream without [DONE] or an error event, counts as lost.
Medians over rounds; the client shares the 2 cores with the server (recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import time
from pathlib import Path

import httpx
import numpy as np

from dynexport.bench.env import environment, write_json
from dynexport.evaluate import artifact_split
from dynexport.runtime import load

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 4, 16, 64)
BATCH, WAIT_MS = 32, 5.0
PROMPTS = ["The city council met on Tuesday to discuss", "Once upon a time, in a small village,",
           "The best way to learn a new language is", "Scientists announced today that",
           "Here is a short recipe for pancakes:", "The history of the bicycle begins"]


def percentiles(xs: list[float]) -> dict:
    a = np.asarray(xs) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99))} if len(a) else {}


async def load_run(url: str, bodies: list[dict], path: str, concurrency: int, time_limit: float = 120) -> dict:
    """POST every body with `concurrency` requests in flight; latency per request, statuses, lost ones."""
    queue, lat, codes, lost = list(reversed(bodies)), [], [], 0
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=concurrency)) as c:
        deadline = time.monotonic() + time_limit

        async def worker():
            nonlocal lost
            while queue and time.monotonic() < deadline:
                body, t0 = queue.pop(), time.perf_counter()
                try:
                    r = await c.post(path, json=body)
                    codes.append(r.status_code)
                    if r.status_code == 200:
                        lat.append(time.perf_counter() - t0)
                except httpx.HTTPError:
                    lost += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ok = codes.count(200)
    return {"requests": len(codes) + lost, "ok": ok, "errors_5xx": sum(c >= 500 for c in codes),
            "errors_4xx": sum(400 <= c < 500 for c in codes), "lost": lost, "wall_s": wall,
            "throughput_rps": ok / wall, **percentiles(lat)}


async def stream_one(c: httpx.AsyncClient, model: str, prompt: str, n: int) -> dict:
    """One streamed completion: TTFT, TPOT from the client's clock, whether it ended properly."""
    body = {"model": model, "prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    t0, first, last, tokens, ended = time.perf_counter(), None, None, 0, False
    try:
        async with c.stream("POST", "/v1/completions", json=body) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    ended = True
                    break
                ev = json.loads(data)
                if "error" in ev:
                    ended = True
                elif ev["choices"] and ev["choices"][0]["text"]:
                    now = time.perf_counter()
                    first, last = first or now, now
                elif ev.get("usage"):
                    tokens = ev["usage"]["completion_tokens"]
    except httpx.HTTPError:
        pass
    if first is None or tokens < 2:
        return {"ended": ended, "ok": False}
    return {"ended": ended, "ok": True, "ttft_s": first - t0, "tpot_s": (last - first) / (tokens - 1), "tokens": tokens,
            "total_s": last - t0}


async def stream_run(url: str, model: str, concurrency: int, n_tokens: int, rounds: int = 1) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        t0 = time.perf_counter()
        res = []
        for r in range(rounds):
            prompts = [PROMPTS[(r * concurrency + i) % len(PROMPTS)] for i in range(concurrency)]
            res += await asyncio.gather(*(stream_one(c, model, p, n_tokens) for p in prompts))
        wall = time.perf_counter() - t0
    ok = [x for x in res if x["ok"]]
    return {"streams": len(res), "ok": len(ok), "lost": sum(not x["ended"] for x in res),
            "ttft": percentiles([x["ttft_s"] for x in ok]), "tpot_ms": 1e3 * statistics.median(x["tpot_s"] for x in ok),
            "tokens_per_s": sum(x["tokens"] for x in ok) / wall}


async def floor_run(url: str, n: int = 100) -> dict:
    """GET /healthz one at a time: the HTTP round trip through Ray's proxy and a replica, no inference."""
    lat = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            await c.get("/healthz")
            lat.append(time.perf_counter() - t0)
    return percentiles(lat)


def inprocess_classifier(pipe, texts: list[str]) -> dict:
    """batch 1 (one text per call: latency and throughput) and batch 32, one thread, the same texts."""
    lat = []
    for t in texts:
        t0 = time.perf_counter()
        pipe.run([t], batch_size=1, sort_by_length=False)
        lat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    pipe.run(texts, batch_size=BATCH)
    b32 = time.perf_counter() - t0
    return {"batch1_rps": len(texts) / sum(lat), "batch32_rps": len(texts) / b32, **percentiles(lat)}


def inprocess_lm(pipe, n_tokens: int) -> dict:
    tpot, ttft = [], []
    for p in PROMPTS[:4]:
        s = pipe.generate(p, max_new_tokens=n_tokens, ignore_eos=True, streamer=lambda _: None).stats
        tpot.append(s.tpot_s)
        ttft.append(s.ttft_s)
    return {"tpot_ms": 1e3 * statistics.median(tpot), "ttft_ms": 1e3 * statistics.median(ttft)}


def deploy(info, replicas: int, max_batch: int, prefix: str = "/"):
    """One artifact as its own Serve application (its deployment is the HTTP entry) at `prefix`."""
    from ray import serve

    from dynexport.serve.ray_app import ServeOptions, application
    opts = ServeOptions(replicas=replicas, max_batch_size=max_batch, batch_wait_ms=WAIT_MS)
    serve.run(application([info], opts, None), name=info.name, route_prefix=prefix)


def replica_pids(name: str, want: int, tries: int = 200) -> set[int]:
    from ray import serve
    h = serve.get_deployment_handle(f"model-{name}", name)
    pids = set()
    for _ in range(tries):
        pids.add(h.where.remote().result()["pid"])
        if len(pids) >= want:
            break
    return pids


def wait_healthy(name: str, replicas: int, timeout: float = 180) -> float:
    """Seconds until the deployment reports `replicas` running replicas again."""
    from ray import serve
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        d = serve.status().applications[name].deployments[f"model-{name}"]
        if d.status == "HEALTHY" and d.replica_states.get("RUNNING", 0) == replicas:
            return time.perf_counter() - t0
        time.sleep(0.5)
    raise RuntimeError(f"{name} did not recover {replicas} replicas within {timeout} s")


def fault_run(url: str, name: str, texts: list[str], n: int) -> dict:
    """Load at concurrency 16 on 2 replicas; one replica's process is SIGKILLed after 1 s."""
    pids = replica_pids(name, 2)
    bodies = [{"model": name, "input": texts[i % len(texts)]} for i in range(n)]

    async def go():
        async def killer():
            await asyncio.sleep(1.0)
            os.kill(min(pids), signal.SIGKILL)
        task = asyncio.create_task(killer())
        out = await load_run(url, bodies, "/v1/classify", 16)
        await task
        return out

    during = asyncio.run(go())
    recovery_s = wait_healthy(name, 2)
    after = asyncio.run(load_run(url, bodies[:100], "/v1/classify", 16))
    return {"killed_pid": min(pids), "during": during, "recovery_s": recovery_s, "after": after,
            "replaced": min(pids) not in replica_pids(name, 2)}


def classifier_round(url, name, texts, pipe, out, n, redeploy, r: int) -> None:
    """One round of every classifier configuration (order rotated per round), appended to `out`."""
    out["inprocess"].append(inprocess_classifier(pipe, texts[:n]))
    modes = [("batched", BATCH), ("unbatched", 1)]
    for mode, max_batch in modes[r % 2:] + modes[: r % 2]:
        redeploy(max_batch)
        if mode == "unbatched":
            out["floor"].append(asyncio.run(floor_run(url)))
        for c in CONCURRENCY:
            bodies = [{"model": name, "input": t} for t in texts[: max(n, 2 * c)]]
            out[mode][str(c)].append(asyncio.run(load_run(url, bodies, "/v1/classify", c)))


def med(runs: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def summarize_classifier(raw: dict) -> dict:
    inproc = {k: med(raw["inprocess"], k) for k in ("batch1_rps", "batch32_rps", "p50_ms")}
    served = {mode: {c: {k: med(runs, k) for k in ("throughput_rps", "p50_ms", "p95_ms", "p99_ms")}
                     | {"lost": sum(r["lost"] for r in runs), "errors_5xx": sum(r["errors_5xx"] for r in runs)}
                     for c, runs in raw[mode].items()} for mode in ("batched", "unbatched")}
    gains = {c: served["batched"][c]["throughput_rps"] / served["unbatched"][c]["throughput_rps"] for c in served["batched"]}
    gain = min(g for c, g in gains.items() if int(c) >= 16)  # where batches can fill; the lower one
    inproc_ratio = inproc["batch32_rps"] / inproc["batch1_rps"]
    overhead = served["unbatched"]["1"]["p50_ms"] - inproc["p50_ms"]
    return {"inprocess": inproc, "served": served, "batching_throughput_gain": gain, "gain_by_concurrency": gains,
            "inprocess_batch_ratio": inproc_ratio, "batching_vs_inprocess": gain / inproc_ratio,
            "overhead_ms": overhead, "overhead_pct": 100 * overhead / inproc["p50_ms"],
            "overhead_batched_ms": served["batched"]["1"]["p50_ms"] - inproc["p50_ms"],
            "http_floor_p50_ms": med(raw["floor"], "p50_ms")}


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    served = res["classifier"]["served"]
    for mode, style in (("batched", "o-"), ("unbatched", "s--")):
        cs = [int(c) for c in served[mode]]
        a.plot(cs, [served[mode][str(c)]["throughput_rps"] for c in cs], style, label=f"served, {mode}")
        b.plot(cs, [served[mode][str(c)]["p99_ms"] for c in cs], style, label=f"served, {mode} (p99)")
    inp = res["classifier"]["inprocess"]
    a.axhline(inp["batch32_rps"], color="gray", ls=":", label="in-process batch 32")
    a.axhline(inp["batch1_rps"], color="black", ls=":", label="in-process batch 1")
    for ax, title in ((a, "classifier throughput (req/s)"), (b, "classifier p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests")
        ax.set_title(title)
        ax.legend(fontsize=8)
    b.set_yscale("log")
    fig.suptitle("dynexport serve on Ray Serve (2 cores, 1 replica, 1 thread; client on the same cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", type=Path, default=ROOT / "exported_models/bert-exits-4-8")
    ap.add_argument("--lm", type=Path, default=ROOT / "exported_models/smollm2-speculative")
    ap.add_argument("--requests", type=int, default=256, help="classifier requests per configuration")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lm-tokens", type=int, default=48)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/serve.json")
    args = ap.parse_args()
    import ray
    from ray import serve

    from dynexport.serve.worker import model_info
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    clf, lm = model_info(args.classifier.name, args.classifier), model_info(args.lm.name, args.lm)
    url = f"http://127.0.0.1:{args.port}"
    texts, _ = artifact_split(load(clf.path).manifest, "test")
    pipe, lm_pipe = load(clf.path, threads=1), load(lm.path, threads=1)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": args.port})
        res = run_all(args, clf, lm, url, texts, pipe, lm_pipe)
    finally:
        serve.shutdown()
        ray.shutdown()
    res["env"] = environment(ROOT)
    write_json(args.out, res)
    plot(res, args.out.with_suffix(".png"))
    print(json.dumps(res["summary"], indent=1))


def run_all(args, clf, lm, url, texts, pipe, lm_pipe) -> dict:
    n = args.requests
    redeploy = lambda max_batch, replicas=1: deploy(clf, replicas, max_batch)
    deploy(lm, 1, 1, "/lm")  # the LM beside it, under /lm/v1/...
    raw = {"inprocess": [], "floor": [], "batched": {str(c): [] for c in CONCURRENCY},
           "unbatched": {str(c): [] for c in CONCURRENCY}}
    lm_raw = {"inprocess": [], "c1": [], "c4": []}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        classifier_round(url, clf.name, texts, pipe, raw, n, redeploy, r)
        lm_raw["inprocess"].append(inprocess_lm(lm_pipe, args.lm_tokens))
        lm_raw["c1"].append(asyncio.run(stream_run(url + "/lm", lm.name, 1, args.lm_tokens, rounds=4)))
        lm_raw["c4"].append(asyncio.run(stream_run(url + "/lm", lm.name, 4, args.lm_tokens)))
    replicas = {}
    for k in (1, 2, 1, 2):  # interleaved
        redeploy(BATCH, k)
        bodies = [{"model": clf.name, "input": t} for t in texts[:n]]
        replicas.setdefault(str(k), []).append(asyncio.run(load_run(url, bodies, "/v1/classify", 16)))
    print("fault run", flush=True)
    fault = fault_run(url, clf.name, texts, 4 * n)
    return assemble(args, raw, lm_raw, replicas, fault)


def assemble(args, raw, lm_raw, replicas, fault) -> dict:
    c = summarize_classifier(raw)
    lm_in, c1, c4 = lm_raw["inprocess"], lm_raw["c1"], lm_raw["c4"]
    tpot_in, tpot_served = med(lm_in, "tpot_ms"), med(c1, "tpot_ms")
    lm = {"inprocess_tpot_ms": tpot_in, "served_tpot_ms": tpot_served,
          "tpot_overhead_pct": 100 * (tpot_served - tpot_in) / tpot_in,
          "c4_ttft_p50_ms": statistics.median(x["ttft"]["p50_ms"] for x in c4),
          "c4_ttft_p99_ms": statistics.median(x["ttft"]["p99_ms"] for x in c4),
          "c4_tokens_per_s": med(c4, "tokens_per_s"), "c1_tokens_per_s": med(c1, "tokens_per_s"),
          "lost": sum(x["lost"] for x in c1 + c4), "raw": lm_raw}
    rep = {k: med(v, "throughput_rps") for k, v in replicas.items()}
    lost = (sum(v["lost"] for m in ("batched", "unbatched") for v in c["served"][m].values()) + lm["lost"]
            + fault["during"]["lost"] + fault["after"]["lost"] + sum(r["lost"] for v in replicas.values() for r in v))
    summary = {
        "batching_throughput_gain": c["batching_throughput_gain"], "batching_vs_inprocess": c["batching_vs_inprocess"],
        "inprocess_batch_ratio": c["inprocess_batch_ratio"], "overhead_ms": c["overhead_ms"],
        "http_floor_p50_ms": c["http_floor_p50_ms"],
        "overhead_pct": c["overhead_pct"], "lm_tpot_overhead_pct": lm["tpot_overhead_pct"], "lost_requests": lost,
        "p99_ms": {k: v["p99_ms"] for k, v in c["served"]["batched"].items()},
        "p99_ms_unbatched": {k: v["p99_ms"] for k, v in c["served"]["unbatched"].items()},
        "lm_c4_ttft_p99_ms": lm["c4_ttft_p99_ms"], "replicas_2_vs_1": rep["2"] / rep["1"],
        "fault": {"answered": fault["during"]["ok"], "explicit_5xx": fault["during"]["errors_5xx"],
                  "lost": fault["during"]["lost"], "recovery_s": fault["recovery_s"],
                  "after_recovery_ok": f"{fault['after']['ok']}/{fault['after']['requests']}"},
        "targets": {"batching_vs_inprocess": 0.8, "overhead": "<= max(10%, 3 ms)", "lm_tpot_overhead_pct": 10,
                    "lost_requests": 0},
        "batching_gain_by_concurrency": c["gain_by_concurrency"],
        "met": {"batching_vs_inprocess": c["batching_vs_inprocess"] >= 0.8
                and all(c["served"]["batched"][k]["p99_ms"] <= c["served"]["unbatched"][k]["p99_ms"] for k in ("16", "64")),
                "overhead": c["overhead_ms"] <= max(0.1 * c["inprocess"]["p50_ms"], 3.0),
                "lm_tpot_overhead": lm["tpot_overhead_pct"] <= 10, "lost_requests": lost == 0}}
    return {"summary": summary, "classifier": c, "classifier_raw": raw, "lm": lm, "replicas": rep,
            "replicas_raw": replicas, "fault": fault,
            "config": {"concurrency": CONCURRENCY, "max_batch_size": BATCH, "batch_wait_ms": WAIT_MS,
                       "requests": args.requests, "rounds": args.rounds, "lm_tokens": args.lm_tokens,
                       "threads_per_replica": 1, "classifier": str(args.classifier), "lm": str(args.lm),
                       "client": "httpx.AsyncClient in the same process, same cores"}}


if __name__ == "__main__":
    main()
