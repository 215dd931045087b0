"""Watching a canary: `sentiment-stats` from the canary's start, the gates evaluated after every poll.

`deploy --canary` stays running on `watch` until the gates decide; `deploy --show` reads the same
windows once (`read_windows`). Both go through `stream.deployment.gates.evaluate`, so they agree.
A stats record that is not a `SentimentStats` window is skipped with a warning (the topic is
advisory and anyone who can write to it can write anything).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from stream.admin import admin_client, partition_counts
from stream.deployment.gates import Gates, Verdict, evaluate
from stream.events import SentimentStats
from stream.settings import KafkaSettings

log = logging.getLogger(__name__)

# Windows are read from this long before the canary started: the deployer's clock and the workers'
# may differ. The evaluator itself counts only windows that ended after the start.
CLOCK_SKEW_S = 120.0


class StatsReader:
    """All partitions of the stats topic, from the windows published around `since` onwards."""

    def __init__(self, kafka: KafkaSettings, since: datetime, timeout_s: float = 15.0) -> None:
        self.kafka, self.since, self.timeout_s = kafka, since, timeout_s
        self.consumer = None
        self.partitions: list = []

    async def start(self) -> StatsReader:
        """Connect and seek; an absent stats topic is looked for again at every `poll`. Call `stop`
        afterwards even when this raised (the client is closed there)."""
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            **self.kafka.aiokafka_security(),
        )
        await asyncio.wait_for(self.consumer.start(), self.timeout_s)
        await self._assign()
        return self

    async def _assign(self) -> None:
        from aiokafka import TopicPartition

        topic = self.kafka.stats_topic
        count = await partition_count(self.kafka, topic, self.timeout_s)
        if not count:
            return
        self.partitions = [TopicPartition(topic, p) for p in range(count)]
        self.consumer.assign(self.partitions)
        since_ms = int((self.since.timestamp() - CLOCK_SKEW_S) * 1000)
        found = await self.consumer.offsets_for_times({tp: since_ms for tp in self.partitions})
        for tp in self.partitions:
            if found.get(tp) is None:
                await self.consumer.seek_to_end(tp)  # nothing published since: only what comes next
            else:
                self.consumer.seek(tp, found[tp].offset)

    async def poll(self, timeout_s: float = 1.0) -> list[SentimentStats]:
        """The windows published since the last poll (waits up to `timeout_s` for the first)."""
        if not self.partitions:
            await self._assign()
            if not self.partitions:
                await asyncio.sleep(timeout_s)
                return []
        batches = await self.consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=10_000)
        return [w for records in batches.values() for r in records if (w := _window(r)) is not None]

    async def at_end(self) -> bool:
        """True when every partition has been read to the end it had when asked."""
        if not self.partitions:
            return True
        ends = await self.consumer.end_offsets(self.partitions)
        return all([await self.consumer.position(tp) >= end for tp, end in ends.items()])

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


async def partition_count(kafka: KafkaSettings, topic: str, timeout_s: float = 15.0) -> int:
    """How many partitions `topic` has; 0 when it does not exist."""
    async with admin_client(kafka, timeout_s) as admin:
        if topic not in set(await admin.list_topics()):  # never a metadata request that might create it
            return 0
        return (await partition_counts(admin, [topic])).get(topic, 0)


def _window(record) -> SentimentStats | None:
    try:
        return SentimentStats.model_validate_json(record.value)
    except Exception as exc:  # hostile or foreign bytes on an advisory topic: skipped, never raised
        log.warning(
            "skipping %s[%d]@%d: not a stats window (%s)",
            record.topic,
            record.partition,
            record.offset,
            type(exc).__name__,
        )
        return None


async def read_windows(
    kafka: KafkaSettings, since: datetime, timeout_s: float = 15.0
) -> list[SentimentStats]:
    """Every window published since about `since`, up to the end the stats topic has now."""
    reader = StatsReader(kafka, since, timeout_s)
    windows: list[SentimentStats] = []
    deadline = time.monotonic() + timeout_s
    try:
        await reader.start()
        while not await reader.at_end() and time.monotonic() < deadline:
            windows.extend(await reader.poll(0.5))
    finally:
        await reader.stop()
    return windows


async def watch(
    kafka: KafkaSettings,
    gates: Gates,
    candidate: str,
    started_at: datetime,
    still_running: Callable[[], Awaitable[bool]],
    on_progress: Callable[[Verdict], None] | None = None,
    check_every_s: float = 5.0,
) -> Verdict | None:
    """Evaluate the gates over the windows as they arrive until they decide (the verdict), or until
    `still_running()` says the canary ended some other way (None: decided by hand or elsewhere)."""
    reader = StatsReader(kafka, started_at)
    windows: list[SentimentStats] = []
    checked = time.monotonic()
    try:
        await reader.start()
        while True:
            windows.extend(await reader.poll(1.0))
            verdict = evaluate(gates, candidate, windows, started_at, datetime.now(UTC))
            if verdict.decision != "pending":
                return verdict
            if on_progress is not None:
                on_progress(verdict)
            if time.monotonic() - checked >= check_every_s:
                checked = time.monotonic()
                if not await still_running():
                    return None
    finally:
        await reader.stop()
