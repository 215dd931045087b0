"""Helpers of the dashboard tests: build scored events through the real schema and produce them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from stream.events import ScoredTweet
from stream.settings import KafkaSettings

LABELS = ("negative", "neutral", "positive")


def scored(
    text: str,
    label: str,
    score: float = 0.9,
    *,
    age_s: float = 0.0,
    latency_ms: float = 10.0,
    true_label: str | None = None,
    model: str = "tiny@1",
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
        scored_at=datetime.now(UTC) - timedelta(seconds=age_s),
        latency_ms=latency_ms,
        true_label=true_label,
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
    """Unique names for the four topics of one test."""
    return {
        "SENTISTREAM_TOPIC": f"{topic_name}-in",
        "SENTISTREAM_SCORED_TOPIC": f"{topic_name}-scored",
        "SENTISTREAM_DLQ_TOPIC": f"{topic_name}-dlq",
        "SENTISTREAM_STATS_TOPIC": f"{topic_name}-stats",
    }


@pytest.fixture(autouse=True)
def stop_feeds_afterwards():
    """Stop the feeds the app started in this process (AppTest keeps them in Streamlit's cache)."""
    import threading

    yield
    for thread in threading.enumerate():
        feed = getattr(getattr(thread, "_target", None), "__self__", None)
        if thread.name == "dashboard-feed" and feed is not None:
            feed.stop(timeout=5)
