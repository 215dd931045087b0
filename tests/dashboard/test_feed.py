"""The feed: bounded buffer and running totals without Kafka, then against the real broker."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import pytest

from dashboard.feed import MAX_DISTINCT, OTHER, Feed
from dashboard.settings import DashboardSettings
from stream.events import DeadLetter, SentimentStats
from stream.settings import KafkaSettings
from tests.dashboard.conftest import produce, scored


def make_feed(buffer_size: int = 100, broker: str = "kafka://127.0.0.1:9", **topics: str) -> Feed:
    return Feed(
        KafkaSettings(broker=broker, **topics), DashboardSettings(buffer_size=buffer_size, retry_s=0.3)
    )


def raw(event) -> bytes:
    return event.model_dump_json().encode()


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_buffer_is_bounded_but_totals_count_everything():
    feed = make_feed(buffer_size=100)
    for i in range(250):
        assert feed.ingest_scored(raw(scored(f"tweet {i}", "positive" if i % 5 else "negative")))
    snap = feed.snapshot()
    assert len(snap.rows) == 100
    assert snap.rows["text"].iloc[-1] == "tweet 249"  # the newest are kept
    assert snap.totals.scored == 250
    assert snap.totals.labels == {"positive": 200, "negative": 50}


def test_malformed_messages_are_counted_not_kept():
    feed = make_feed()
    assert not feed.ingest_scored(b"not json")
    assert not feed.ingest_scored(orjson.dumps({"text": "no label"}))
    assert not feed.ingest("whatever", None)
    snap = feed.snapshot()
    assert snap.totals.malformed == 3 and snap.totals.scored == 0 and snap.rows.empty


def test_distinct_labels_are_capped():
    feed = make_feed()
    for i in range(MAX_DISTINCT + 10):
        feed.ingest_scored(raw(scored("x", f"label-{i}")))
    labels = feed.snapshot().totals.labels
    assert len(labels) == MAX_DISTINCT + 1 and labels[OTHER] == 10


def test_long_texts_are_cut_to_the_cap():
    feed = make_feed()
    feed.ingest_scored(raw(scored("a" * 5_000, "neutral")))
    text = feed.snapshot().rows["text"].iloc[0]
    assert len(text) == DashboardSettings().max_text_chars and text.endswith("…")


def test_routing_by_topic_counts_dead_letters_and_keeps_latest_stats():
    feed = make_feed(scored_topic="s", dlq_topic="d", stats_topic="st")
    letter = DeadLetter(original="{", error="not JSON", stage="decode", topic="t", partition=0, offset=7)
    now = datetime.now(UTC)
    window = dict(window_start=now, window_end=now, count=3, counts={"positive": 3}, mean_score=0.8)
    window |= dict(events_per_s=0.3, latency_p50_ms=5, latency_p95_ms=8, latency_p99_ms=9)
    assert feed.ingest("d", raw(letter))
    assert feed.ingest("st", raw(SentimentStats(worker="w1", **window)))
    assert feed.ingest("st", raw(SentimentStats(worker="w1", **(window | {"count": 5}))))
    assert feed.ingest("s", raw(scored("hi", "positive")))
    snap = feed.snapshot()
    assert snap.totals.dead_lettered == 1 and "not JSON" in snap.totals.last_dead_letter
    assert snap.stats["w1"].count == 5 and snap.totals.scored == 1


def test_no_broker_is_reported_with_the_address_tried(dead_port):
    port = dead_port
    feed = make_feed(broker=f"kafka://127.0.0.1:{port}").start()
    try:
        connection = wait_for(lambda: (c := feed.snapshot().connection).state == "unreachable" and c)
        assert connection.broker == f"127.0.0.1:{port}" and not connection.ever_connected
    finally:
        feed.stop()


def test_reads_scored_dead_letters_and_stats_from_the_broker(broker_url, topics):
    names = {k.removeprefix("SENTISTREAM_").lower(): v for k, v in topics.items()}
    events = [scored(f"event {i}", "positive" if i < 3 else "negative") for i in range(5)]
    produce(broker_url, names["scored_topic"], events)
    letter = DeadLetter(original="\x00", error="bad", stage="validate", topic="t", partition=0, offset=1)
    produce(broker_url, names["dlq_topic"], [letter])
    feed = make_feed(broker=broker_url, **names).start()
    try:
        wait_for(lambda: feed.snapshot().totals.scored == 5 and feed.snapshot().totals.dead_lettered == 1)
        assert feed.snapshot().connection.state == "connected"
        produce(broker_url, names["scored_topic"], [scored("late arrival", "neutral")])
        snap = wait_for(lambda: (s := feed.snapshot()).totals.scored == 6 and s)
        assert list(snap.rows["text"]) == [*(e.text for e in events), "late arrival"]
        assert snap.totals.labels == {"positive": 3, "negative": 2, "neutral": 1}
    finally:
        feed.stop()


@pytest.mark.slow
def test_recovers_after_the_broker_comes_back(own_broker, topics):
    broker = own_broker
    names = {k.removeprefix("SENTISTREAM_").lower(): v for k, v in topics.items()}
    feed = make_feed(broker=broker.url, **names).start()
    try:
        produce(broker.url, names["scored_topic"], [scored("before", "positive")])
        wait_for(lambda: feed.snapshot().totals.scored == 1)
        broker.stop()
        wait_for(lambda: feed.snapshot().connection.state == "lost")
        broker.start()
        produce(broker.url, names["scored_topic"], [scored("after", "negative")])
        snap = wait_for(lambda: (s := feed.snapshot()).totals.scored == 2 and s, timeout=60)
        assert snap.connection.state == "connected"
        assert list(snap.rows["text"]) == ["before", "after"]  # resumed, not re-read
    finally:
        feed.stop()
