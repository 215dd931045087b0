"""Reading `sentiment-stats` for the canary gates, on a real broker: from the start time, to a verdict."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from stream.deployment.gates import Gates
from stream.deployment.watch import read_windows, watch
from stream.settings import KafkaSettings
from tests.stream.test_canary_gates import CANDIDATE, window
from tests.stream.worker_process import Topics, create_topics, produce

GATES = Gates(min_events=100, latency_p99_ms=1000)


def kafka_of(broker_url: str, topics: Topics) -> KafkaSettings:
    return KafkaSettings(broker=broker_url, stats_topic=topics.stats)


def publish_windows(broker_url: str, topic: str, windows) -> None:
    produce(broker_url, topic, [(w.worker.encode(), w.model_dump_json().encode()) for w in windows])


def test_read_windows_returns_what_was_published_and_skips_records_that_are_not_windows(
    broker_url: str,
) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.stats], 2)
    published = [window(0, "w1"), window(0, "w2"), window(1, "w1")]
    publish_windows(broker_url, topics.stats, published)
    produce(broker_url, topics.stats, [(b"junk", b"not a window"), (b"junk", b'{"count": "many"}')])
    since = datetime.now(UTC) - timedelta(minutes=1)
    windows = asyncio.run(read_windows(kafka_of(broker_url, topics), since))
    assert sorted((w.worker, w.window_start) for w in windows) == sorted(
        (w.worker, w.window_start) for w in published
    )


def test_read_windows_of_a_topic_that_does_not_exist_is_empty(broker_url: str) -> None:
    assert asyncio.run(read_windows(kafka_of(broker_url, Topics()), datetime.now(UTC))) == []


def test_watch_returns_the_first_decision_as_windows_arrive(broker_url: str) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.stats], 1)
    kafka = kafka_of(broker_url, topics)
    started = datetime.now(UTC)
    progress = []

    async def scenario():
        task = asyncio.ensure_future(
            watch(kafka, GATES, CANDIDATE, started, still_running=_always, on_progress=progress.append)
        )
        await asyncio.sleep(2)
        await asyncio.to_thread(
            publish_windows, broker_url, topics.stats, [window(0, since=started)]
        )  # 60: pending
        await asyncio.sleep(2)
        assert not task.done()
        await asyncio.to_thread(
            publish_windows, broker_url, topics.stats, [window(1, agreed=0, since=started)]
        )
        return await asyncio.wait_for(task, 60)

    verdict = asyncio.run(scenario())
    assert verdict.decision == "rollback" and verdict.reason == "agreement 0.500 < 0.900 over 120 events"
    assert progress and all(p.decision == "pending" for p in progress)


def test_watch_stops_without_a_verdict_when_the_canary_ended_elsewhere(broker_url: str) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.stats], 1)

    async def ended() -> bool:
        return False

    verdict = asyncio.run(
        watch(kafka_of(broker_url, topics), GATES, CANDIDATE, datetime.now(UTC), ended, check_every_s=0.5)
    )
    assert verdict is None


async def _always() -> bool:
    return True
