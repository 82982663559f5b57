"""Prometheus metrics of one server process (its own registry): requests by path, model and status,
request latency, prompt / generated tokens, exits per layer, drafted / accepted tokens."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/classify", "/v1/images/generations", "/v1/models",
         "/healthz", "/metrics")  # label values; any other path counts as "other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("dynexport_requests", "HTTP requests", ["path", "model", "status"], registry=r)
        self.latency = Histogram("dynexport_request_seconds", "time to the response head", ["path", "model"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("dynexport_tokens", "tokens", ["model", "kind"], registry=r)  # prompt | generated
        self.exit_counter = Counter("dynexport_exits", "classified texts by exit layer", ["model", "layer"], registry=r)
        self.drafts = Counter("dynexport_draft_tokens", "draft tokens", ["model", "outcome"], registry=r)

    def observe(self, path: str, model: str, status: int, seconds: float) -> None:
        path = path if path in PATHS else "other"
        self.requests.labels(path, model, str(status)).inc()
        self.latency.labels(path, model).observe(seconds)

    def generation(self, model: str, final: dict) -> None:
        """final: a worker's completion (usage and stats)."""
        self.tokens.labels(model, "prompt").inc(final["usage"]["prompt_tokens"])
        self.tokens.labels(model, "generated").inc(final["usage"]["completion_tokens"])
        s = final["stats"]
        self.drafts.labels(model, "proposed").inc(s["drafted"])
        self.drafts.labels(model, "accepted").inc(s["accepted"])

    def exits(self, model: str, layers: list[int]) -> None:
        for layer in layers:
            self.exit_counter.labels(model, str(layer)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
