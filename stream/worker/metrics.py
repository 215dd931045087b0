"""The worker's Prometheus metrics, in a registry of its own (so tests can run several workers)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    """Counters and histograms that `GET /metrics` exposes in the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter("sentistream_consumed", "messages read from the input topic", registry=r)
        self.scored = Counter(
            "sentistream_scored", "events written to the scored topic", ["label"], registry=r
        )
        self.dead_lettered = Counter(
            "sentistream_dead_lettered", "events written to the dead-letter topic", ["stage"], registry=r
        )
        self.batch_size = Histogram(
            "sentistream_batch_size", "messages per micro-batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "sentistream_inference_seconds", "model time per micro-batch", buckets=SECONDS_BUCKETS, registry=r
        )
        self.latency_seconds = Histogram(
            "sentistream_latency_seconds",
            "broker timestamp of an input to its scoring",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "sentistream_lag", "messages not yet processed per input partition", ["partition"], registry=r
        )
        self.model_loaded = Gauge("sentistream_model_loaded", "1 when the model is loaded", registry=r)
        self.dropped_revoked = Counter(
            "sentistream_dropped_revoked",
            "outputs not sent because their input partition was revoked (its new owner redoes them)",
            registry=r,
        )
        self.predict_requests = Counter(
            "sentistream_predict_requests", "POST /predict requests by status", ["status"], registry=r
        )

        self.scored_by_model = Counter(
            "sentistream_scored_by_model", "scored events per model", ["model_version"], registry=r
        )
        self.model_info = Gauge(
            "sentistream_model_info",
            "1 for each model this worker serves",
            ["model_version", "role"],
            registry=r,
        )
        self.model_swaps = Counter(
            "sentistream_model_swaps", "deployments switched to between batches", registry=r
        )
        self.model_swap_seconds = Gauge(
            "sentistream_model_swap_seconds", "last switch: seconds from `deploy` to serving", registry=r
        )
        self.model_rejected = Counter(
            "sentistream_model_rejected",
            "deployments refused (load, smoke batch, checksum)",
            ["role"],
            registry=r,
        )
        self.control_records_skipped = Counter(
            "sentistream_control_records_skipped",
            "records on the models topic that are not deployments (malformed, oversized, unknown key)",
            registry=r,
        )
        self.model_untrusted = Counter(
            "sentistream_model_untrusted",
            "deployments refused because their signature does not verify against --trusted-key",
            ["role"],
            registry=r,
        )
        self.shadow_compared = Counter(
            "sentistream_shadow_compared", "events the shadow model scored too", registry=r
        )
        self.shadow_agreed = Counter(
            "sentistream_shadow_agreed", "events the shadow model gave the champion's label", registry=r
        )
        self.shadow_dropped = Counter(
            "sentistream_shadow_dropped", "events the shadow model skipped to keep up", registry=r
        )

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
