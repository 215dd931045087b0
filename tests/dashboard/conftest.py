"""Helpers of the dashboard tests: build scored events through the real schema and produce them."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydantic import BaseModel

from stream.events import ScoredTweet, SentimentStats
from stream.settings import KafkaSettings

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

LABELS = ("negative", "neutral", "positive")
APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


def scored(
    text: str,
    label: str,
    score: float = 0.9,
    *,
    age_s: float = 0.0,
    latency_ms: float = 10.0,
    true_label: str | None = None,
    model: str = "tiny@1",
    model_version: str = "",
) -> ScoredTweet:
    """A `tweets-scored` event as the worker writes it, scored `age_s` seconds ago."""
    rest = (1.0 - score) / (len(LABELS) - 1)
    return ScoredTweet(
        id=uuid.uuid4().hex,
        text=text,
        label=label,
        score=score,
        scores={name: (score if name == label else rest) for name in LABELS},
        model=model,
        model_version=model_version,
        scored_at=datetime.now(UTC) - timedelta(seconds=age_s),
        latency_ms=latency_ms,
        true_label=true_label,
    )


def stats_window(
    worker: str, end: datetime, count: int = 0, size_s: float = 10.0, **fields
) -> SentimentStats:
    """A `sentiment-stats` window of `worker` ending at `end`, as stream/worker/stats.py publishes it."""
    return SentimentStats(
        window_start=end - timedelta(seconds=size_s),
        window_end=end,
        worker=worker,
        count=count,
        counts={"positive": count} if count else {},
        mean_score=0.8 if count else 0.0,
        events_per_s=count / size_s,
        latency_p50_ms=5.0,
        latency_p95_ms=8.0,
        latency_p99_ms=9.0,
        **fields,
    )


def produce(broker_url: str, topic: str, events: list[BaseModel]) -> None:
    """Send `events` (pydantic models) to `topic` as the stream does: JSON values keyed by id."""
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=KafkaSettings(broker=broker_url).bootstrap)
        await producer.start()
        try:
            for event in events:
                key = getattr(event, "id", None)
                await producer.send(
                    topic, event.model_dump_json().encode(), key=key.encode() if key else None
                )
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


@pytest.fixture
def topics(topic_name: str) -> dict[str, str]:
    """Unique names for the five topics of one test."""
    return {
        "SENTISTREAM_TOPIC": f"{topic_name}-in",
        "SENTISTREAM_SCORED_TOPIC": f"{topic_name}-scored",
        "SENTISTREAM_DLQ_TOPIC": f"{topic_name}-dlq",
        "SENTISTREAM_STATS_TOPIC": f"{topic_name}-stats",
        "SENTISTREAM_MODELS_TOPIC": f"{topic_name}-models",
    }


@pytest.fixture
def app_env(monkeypatch, broker_url, topics, dead_port):
    """Point the app at the session broker, this test's topics, and no worker."""
    monkeypatch.setenv("SENTISTREAM_BROKER", broker_url)
    monkeypatch.setenv("SENTISTREAM_DASHBOARD_WORKER_URL", f"http://127.0.0.1:{dead_port}")
    for name, value in topics.items():
        monkeypatch.setenv(name, value)
    return topics


def run_until(at: AppTest, predicate, timeout: float = 30.0) -> AppTest:
    """Rerun the page until `predicate(at)` holds (the feed fills in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if predicate(at) or time.monotonic() > deadline:
            return at
        time.sleep(0.3)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


@pytest.fixture(autouse=True)
def stop_feeds_afterwards():
    """Stop the feeds the app started in this process (AppTest keeps them in Streamlit's cache): the
    page's feed and the alert feed, which otherwise retry a missing broker every 5 s for the rest of the
    run and make Kafka clients in the middle of other tests."""
    import threading

    yield
    for thread in threading.enumerate():
        feed = getattr(getattr(thread, "_target", None), "__self__", None)
        if thread.name == "dashboard-feed" and feed is not None:
            feed.stop(timeout=5)
        elif thread.name == "alert-feed" and feed is not None:
            feed.stop()


class WorkerStub:
    """A real HTTP server answering GET /health and POST /predict as the worker does, limits included.

    It labels a text "positive" when it contains "good", else "negative", and records every
    /predict body it receives; `refuse` makes it answer (status, body) to every /predict instead.
    """

    def __init__(self, max_texts: int = 256, max_bytes: int = 1_048_576) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.max_texts, self.max_bytes = max_texts, max_bytes
        self.bodies: list[bytes] = []
        self.refuse: tuple[int, bytes] | None = None
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: the test output is about the dashboard
                pass

            def do_GET(self) -> None:
                self._answer(200, {"status": "ok", "model": "stub@1", "backend": "stub"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.bodies.append(body)
                if stub.refuse:
                    self._raw(*stub.refuse)
                elif len(body) > stub.max_bytes:
                    self._answer(413, {"error": f"body is {len(body)} bytes; send at most {stub.max_bytes}"})
                elif len(texts := json.loads(body)["texts"]) > stub.max_texts:
                    self._answer(
                        413, {"error": f"{len(texts)} texts in one request; send at most {stub.max_texts}"}
                    )
                else:
                    self._answer(200, {"model": "stub@1", "predictions": [stub.predict(t) for t in texts]})

            def _answer(self, status: int, payload: dict) -> None:
                self._raw(status, json.dumps(payload).encode())

            def _raw(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: bound here, no race
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def predict(text: str) -> dict:
        label = "positive" if "good" in text.lower() else "negative"
        scores = (
            {"negative": 0.2, "positive": 0.8} if label == "positive" else {"negative": 0.7, "positive": 0.3}
        )
        return {"label": label, "score": scores[label], "scores": scores, "truncated": False}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def worker_stub():
    stub = WorkerStub()
    yield stub
    stub.close()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`; `close()` makes the address refuse connections.

    Kafka clients bootstrap through it, then read from the broker's advertised address; the
    dashboard's liveness check dials the bootstrap address, so closing the proxy is a lost broker.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        import socket
        import threading

        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        import socket

        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
