"""Why the mood moved (#27): a share alert carries the words that drove the label that rose, from a
worker's POST /explain on that label's latest tweets, within a budget; without an answer it goes
out on time with a note instead."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import ClassVar

import pytest

from stream.events import Change, ScoredTweet, SentimentAlert
from stream.monitor.app import ShiftMonitor
from stream.monitor.drivers import DriverSource, drivers_for, risen_label, top_drivers
from stream.monitor.settings import MonitorSettings
from stream.worker_api import Explained, ExplainResponse, TokenWeight
from tests.stream.test_monitor import START, WINDOW_S, Producer, WindowedTable, feed, one_worker, windows


def explained(text: str, label: str, weights: dict[str, float]) -> Explained:
    return Explained(text=text, label=label, score=0.9, tokens=[TokenWeight(token=w, weight=v) for w, v in weights.items()])  # fmt: skip


def share_alert(*changes: tuple[str, float]) -> SentimentAlert:
    return SentimentAlert(
        kind="share", since=START, window_start=START, window_end=START, events=200, summary="s",
        changes=[Change(what=w, baseline=0.2, value=0.2 + c, change=c, z=5.0) for w, c in changes],
    )  # fmt: skip


def test_drivers_sum_positive_weight_towards_the_label_over_its_own_texts():
    got = top_drivers(
        [
            explained("Delayed again!", "negative", {"Delayed": 0.4, "again!": 0.1}),
            explained("delayed, cancelled", "negative", {"delayed,": 0.3, "cancelled": 0.35, "the": -0.2}),
            explained("love it", "positive", {"love": 0.9}),  # another label: not counted
            explained("so bad", "negative", {"so": -0.1, "...": 0.5, "bad": 0.05}),  # punctuation is no word
        ],
        "negative",
        k=3,
    )
    assert [(d.word, d.texts) for d in got] == [("delayed", 2), ("cancelled", 1), ("again", 1)]
    assert got[0].weight == pytest.approx(0.7)


def test_only_a_share_alert_with_a_label_that_rose_is_explained():
    assert risen_label(share_alert(("neutral", 0.1), ("negative", 0.3), ("positive", -0.4))) == "negative"
    assert risen_label(share_alert(("volume", 50.0))) is None
    assert risen_label(share_alert(("positive", -0.4))) is None
    assert risen_label(share_alert(("negative", 0.3)).model_copy(update={"kind": "volume"})) is None


class Worker(BaseHTTPRequestHandler):
    """POST /explain as a worker answers it: an ExplainResponse; records what it was asked."""

    delay_s = 0.0
    status = 200
    asked: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).asked.append((self.path, self.headers.get("Authorization"), body["texts"]))
        time.sleep(self.delay_s)
        answer = ExplainResponse(
            model="tiny", method="occlusion",
            explanations=[explained(t, "negative", {w: 0.1 for w in t.split()}) for t in body["texts"]],
        ).model_dump_json().encode()  # fmt: skip
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):  # the monitor gave up waiting (the slow-worker test)
            self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def worker():
    Worker.asked, Worker.delay_s, Worker.status = [], 0.0, 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Worker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def scored(i: int, label: str, text: str) -> bytes:
    return ScoredTweet(
        id=f"t{i}", text=text, label=label, score=0.9, scores={label: 0.9}, model="m@1", model_version="m@1",
        scored_at=START, latency_ms=1.0,
    ).model_dump_json().encode()  # fmt: skip


def monitor_with(settings: MonitorSettings) -> ShiftMonitor:
    table = WindowedTable()
    monitor = ShiftMonitor(SimpleNamespace(producer=Producer()), table, kafka=None, settings=settings)
    table.monitor = monitor
    return monitor


def read_scored(monitor: ShiftMonitor, values: list[bytes]) -> None:
    async def stream():
        for value in values:
            yield value

    asyncio.run(monitor.consume_scored(stream()))


def test_a_share_alert_carries_the_words_that_drove_the_risen_label(worker, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    settings = MonitorSettings(window_s=WINDOW_S, worker_url=worker, api_token_file=token, explain_texts=4)
    monitor = monitor_with(settings)
    read_scored(monitor, [scored(i, "negative", f"flight delayed {i}") for i in range(6)] + [scored(9, "positive", "great")])  # fmt: skip
    feed(monitor, one_worker(windows([0.2] * 12 + [0.6] * 3, events=200)))

    (alert,) = monitor.app.producer.sent
    assert alert.kind == "share"
    ((path, auth, texts),) = Worker.asked
    assert path == "/explain" and auth == "Bearer s3cret"
    assert texts == [f"flight delayed {i}" for i in (2, 3, 4, 5)]  # the latest 4 of the risen label only
    assert [d.word for d in alert.drivers][:2] == ["delayed", "flight"] and alert.drivers[0].texts == 4
    assert "occlusion on 4 recent negative tweets" in alert.drivers_note
    assert len(alert.examples) == settings.examples  # still the few shown, not the explained sample


def test_a_slow_worker_costs_the_alert_its_drivers_not_its_delivery(worker):
    Worker.delay_s = 3.0
    settings = MonitorSettings(window_s=WINDOW_S, worker_url=worker, explain_timeout_s=0.5)
    monitor = monitor_with(settings)
    read_scored(monitor, [scored(i, "negative", f"awful {i}") for i in range(3)])
    began = time.monotonic()
    feed(monitor, one_worker(windows([0.2] * 12 + [0.6] * 3, events=200)))
    assert time.monotonic() - began < 2.5

    (alert,) = monitor.app.producer.sent
    assert alert.drivers == [] and "did not answer within 0.5s" in alert.drivers_note


def test_a_refusing_worker_is_named_in_the_note():
    alert = share_alert(("negative", 0.3))
    source = DriverSource("http://127.0.0.1:9", timeout_s=2.0)  # discard port: nothing listens
    out = asyncio.run(drivers_for(alert, ["awful"], source))
    assert out.drivers == [] and out.drivers_note.startswith("the worker's /explain failed: ")


def test_without_a_worker_url_alerts_are_as_before(worker):
    monitor = monitor_with(MonitorSettings(window_s=WINDOW_S))
    read_scored(monitor, [scored(i, "negative", f"awful {i}") for i in range(3)])
    feed(monitor, one_worker(windows([0.2] * 12 + [0.6] * 3, events=200)))
    (alert,) = monitor.app.producer.sent
    assert alert.drivers == [] and alert.drivers_note is None and not Worker.asked


@pytest.mark.slow
def test_a_real_shift_scored_by_a_real_worker_is_explained_on_the_real_broker(broker_url, tmp_path):
    """A VADER worker scores a calm stream, then a negative one; the monitor (asking that worker's
    /explain) raises one share alert for `negative` whose drivers are words of the negative tweets."""
    from tests.ports import start_server, stop
    from tests.stream.test_monitor import healthy, monitor_command
    from tests.stream.worker_process import (
        Topics,
        WorkerProcess,
        create_topics,
        produce,
        read_topic,
    )

    topics = Topics()
    alerts = f"{topics.prefix}-alerts"
    create_topics(broker_url, [topics.tweets, topics.scored, topics.dlq], partitions=2)
    create_topics(broker_url, [topics.stats], partitions=1)
    worker = WorkerProcess(broker_url, topics, tmp_path, "--stats-window-s", "2").start()
    monitor = None
    try:
        worker.wait_ready()
        command = monitor_command(
            broker_url, topics.prefix, topics.stats, alerts, "--scored-topic", topics.scored,
            "--worker-url", worker.url, "--window-s", "2", "--min-baseline-windows", "6",
        )  # fmt: skip
        monitor, _ = start_server(command, tmp_path / "monitor.log", healthy, timeout=120)
        calm = ["the flight was fine", "great crew, thanks", "landed on time", "seat 12A by the window"]
        angry = ["terrible delay, awful service", "worst airline ever", "cancelled again, horrible"]
        began = time.monotonic()
        while time.monotonic() - began < 40:  # 24 s calm (12 windows), then 16 s mostly negative
            texts = angry * 8 + calm[:2] if time.monotonic() - began > 24 else calm * 8
            produce(broker_url, topics.tweets, [(None, json.dumps({"text": t}).encode()) for t in texts])
            time.sleep(0.5)
        records = read_topic(broker_url, alerts, expected=1, timeout=60, idle_s=0)
    finally:
        if monitor is not None:
            stop(monitor, timeout=30)
        worker.stop()
    found = [SentimentAlert.model_validate_json(r.value) for r in records]
    share = [a for a in found if a.kind == "share"]
    assert share and risen_label(share[0]) == "negative", (
        found,
        (tmp_path / "monitor.log").read_text()[-3000:],
    )
    words = {d.word for d in share[0].drivers}
    assert words and words <= set(" ".join(angry).replace(",", "").split()), share[0]
    assert words & {"terrible", "awful", "worst", "horrible"}
    assert share[0].drivers_note.startswith("occlusion on ")
