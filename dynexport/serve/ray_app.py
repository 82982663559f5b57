"""Ray Serve deployments of the server: one `ArtifactDeployment` per artifact (replicas, threads, a
dynamic batch for classification) behind one `Ingress` running the FastAPI app (app.py), and
`start(...)` / `stop(...)`, which bring Ray and the application up and down.

Nothing here knows HTTP or a method's details: the worker (worker.py) answers, the app speaks OpenAI.
The same application runs on one machine or on a Ray cluster (`address`): replicas land wherever the
cluster has CPUs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RayServeException

from ..errors import DynexportError
from .app import Unavailable, build_app
from .protocol import Limits
from .worker import ModelInfo, Worker, model_info, stream_events

APP_NAME = "dynexport"


@dataclass(frozen=True)
class ServeOptions:
    """How `dynexport serve` runs; every default is defined here once (the CLI reads them)."""
    replicas: int = 1
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 32  # classification requests per dynamic batch (1: no batching)
    batch_wait_ms: float = 5.0  # how long a batch waits to fill
    threads_per_replica: int = 1  # inference threads (and Ray CPUs) of each replica
    backend: str = "openvino"
    address: str | None = None  # an existing Ray cluster ("auto", "ray://…"); None: start one here
    limits: Limits = field(default_factory=Limits)


class Replica:
    """One replica of one artifact: the worker on a one-thread executor (calls run in arrival order)."""

    def __init__(self, name: str, path: str, backend: str, threads: int):
        self.worker = Worker(path, backend, threads, name)
        self.pool = ThreadPoolExecutor(1)

    def reconfigure(self, config: dict) -> None:
        """The deployment's user_config: {"max_batch_size", "batch_wait_ms"}; Ray applies a change to
        running replicas without restarting them (`serve.run` again with a new user_config)."""
        self.classify_batch.set_max_batch_size(int(config["max_batch_size"]))
        self.classify_batch.set_batch_wait_timeout_s(float(config["batch_wait_ms"]) / 1000)

    @serve.batch
    async def classify_batch(self, requests: list[list[str]]) -> list[dict]:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.worker.classify, requests)

    async def classify(self, texts: list[str]) -> dict:
        return await self.classify_batch(texts)

    async def complete(self, payload: dict) -> dict:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.worker.complete, payload)

    async def images(self, payload: dict) -> dict:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.worker.images, payload)

    async def stream(self, payload: dict) -> AsyncIterator[dict]:
        async for ev in stream_events(self.worker, payload, self.pool):
            yield ev

    def where(self) -> dict:
        """This replica's node and process (operators' and the multi-node test's view of placement)."""
        import os

        import ray
        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


ArtifactDeployment = serve.deployment(Replica, name="ArtifactDeployment")  # behind the Ingress, via handles


@serve.deployment
@serve.ingress()
class ArtifactServer(Replica):
    """A single artifact's replica as the HTTP entry itself (its own app over itself): one hop less
    per request than ArtifactDeployment behind the Ingress (Serve allows one ingress per application)."""

    def __init__(self, name: str, path: str, backend: str, threads: int, limits: Limits, api_key: str | None):
        super().__init__(name, path, backend, threads)
        self._app = build_app({name: SelfBackend(self)}, limits, api_key)

    def __serve_build_asgi_app__(self):
        return self._app


class SelfBackend:
    """The replica's own methods as the backend of its app (single-artifact serving)."""

    def __init__(self, deployment: Replica):
        self.dep, self.info = deployment, deployment.worker.info

    async def call(self, op: str, payload) -> dict:
        return await getattr(self.dep, op)(payload)

    def stream(self, payload: dict) -> AsyncIterator[dict]:
        return self.dep.stream(payload)


class RayBackend:
    """An artifact deployment as the app's backend; Ray's refusals and lost replicas become 503s
    (an error in the replica's own code stays an error: a 500)."""

    def __init__(self, info: ModelInfo, handle):
        self.info, self.handle = info, handle

    async def call(self, op: str, payload) -> dict:
        try:
            return await getattr(self.handle, op).remote(payload)
        except (RayError, RayServeException) as e:
            raise self._unavailable(e) from None

    async def stream(self, payload: dict) -> AsyncIterator[dict]:
        try:
            async for ev in self.handle.options(stream=True).stream.remote(payload):
                yield ev
        except (RayError, RayServeException) as e:
            raise self._unavailable(e) from None

    def _unavailable(self, e: Exception) -> Exception:
        if isinstance(e, RayTaskError):
            return RuntimeError(f"model {self.info.name!r}: {e.cause!r}".splitlines()[0])
        if isinstance(e, (BackPressureError, DeploymentUnavailableError)):
            return Unavailable(f"model {self.info.name!r} is saturated (all replicas and their queue are full); "
                               f"retry later: {type(e).__name__}")
        return Unavailable(f"model {self.info.name!r}: its replica failed during the request ({type(e).__name__}); retry")


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Ingress:
    """The HTTP entry: the FastAPI app over every artifact deployment (their handles come bound)."""

    def __init__(self, infos: list[ModelInfo], limits: Limits, api_key: str | None, **handles):
        backends = {i.name: RayBackend(i, handles[i.name]) for i in infos}
        self._app = build_app(backends, limits, api_key)

    def __serve_build_asgi_app__(self):
        return self._app


def application(infos: list[ModelInfo], opts: ServeOptions, api_key: str | None):
    """The bound Serve application: one artifact's deployment as its own HTTP entry, or an
    ArtifactDeployment per artifact and the Ingress over them."""
    lim = opts.limits
    handles = {}
    alone = len(infos) == 1
    for info in infos:
        args = (info.name, info.path, opts.backend, opts.threads_per_replica) + ((lim, api_key) if alone else ())
        d = (ArtifactServer if alone else ArtifactDeployment).options(
            name=f"model-{info.name}", num_replicas=opts.replicas,
            ray_actor_options={"num_cpus": opts.threads_per_replica},
            max_ongoing_requests=ongoing(info, opts),
            max_queued_requests=lim.max_queued_requests,
            user_config={"max_batch_size": opts.max_batch_size, "batch_wait_ms": opts.batch_wait_ms})
        handles[info.name] = d.bind(*args)
    if alone:
        return handles[infos[0].name]
    ingress = Ingress.options(max_ongoing_requests=10_000, max_queued_requests=-1)
    return ingress.bind(infos, lim, api_key, **handles)


def ongoing(info: ModelInfo, opts: ServeOptions) -> int:
    """Requests a replica takes at once. A classifier takes 4 batches' worth: they wait in its batch
    queue, which is cheap, while requests Ray's router holds back wait with a backoff that left the
    replica idle (measured: served throughput at 64 concurrent requests fell to half of 16's)."""
    return max(opts.limits.max_ongoing_requests, 4 * opts.max_batch_size if info.kind == "classify" else 1)


def check_names(infos: list[ModelInfo]) -> None:
    names = [i.name for i in infos]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DynexportError(f"two artifacts are named {', '.join(dup)}: serve each name once (rename a directory)")


def run_server(paths: list[str], opts: ServeOptions, api_key: str | None, ready=print) -> None:
    """Serve the artifacts until SIGINT / SIGTERM, then stop what this call started: the application,
    and Ray itself when this call started it (with `opts.address`, the cluster stays up)."""
    import os
    import signal
    import threading
    import warnings
    from pathlib import Path

    import ray

    infos = [model_info(Path(p).name, p) for p in paths]  # verifies every manifest before Ray starts
    check_names(infos)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    need = len(infos) * opts.replicas * opts.threads_per_replica
    cpus = None if opts.address else max(os.cpu_count() or 1, need)  # here: replicas may share cores
    if cpus is not None and need > (os.cpu_count() or 1):
        warnings.warn(f"{need} replica threads on {os.cpu_count()} cores: the replicas share them", stacklevel=2)
    ray.init(address=opts.address, num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs handlers of its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        check_capacity(need, ray.cluster_resources().get("CPU", 0))
        serve.start(proxy_location="HeadOnly", http_options={
            "host": opts.host, "port": opts.port, "request_timeout_s": opts.limits.request_timeout_s + 5})
        serve.run(application(infos, opts, api_key), name=APP_NAME, route_prefix="/")
        ready(f"serving {', '.join(i.name for i in infos)} on http://{opts.host}:{opts.port} "
              f"({opts.replicas} replica(s) each; Ctrl-C stops)")
        stop.wait()
    finally:
        if opts.address is None:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
        ray.shutdown()


def check_capacity(need: int, cpus: float) -> None:
    """A cluster without the CPUs the replicas reserve would leave them pending: refuse at once."""
    if need > cpus:
        raise DynexportError(f"the replicas need {need} CPUs (artifacts × --replicas × --threads-per-replica); the "
                             f"Ray cluster has {cpus:g}: lower --replicas or --threads-per-replica, or add nodes")
