"""Reading a topic back in tests: every record from the start, as the broker stored it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from stream.settings import KafkaSettings


def read_topic(
    broker_url: str,
    topic: str,
    expected: int,
    timeout: float = 60.0,
    idle_s: float = 3.0,
    committed: bool = True,
    until: Callable[[list], bool] | None = None,
) -> list:
    """Every record of `topic` from the start, once `expected` arrived (and `until(records)` holds),
    every record the topic held then was read, and nothing new came for `idle_s` (for writers still
    running), or at `timeout`.

    `committed=False` also reads records of open or aborted transactions (exactly-once tests).
    """
    from aiokafka import AIOKafkaConsumer

    async def read() -> list:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=KafkaSettings(broker=broker_url).bootstrap, auto_offset_reset="earliest",
            enable_auto_commit=False, group_id=None, isolation_level="read_committed" if committed else "read_uncommitted",
        )  # fmt: skip
        await consumer.start()
        records, deadline, last_new = [], time.monotonic() + timeout, time.monotonic()
        ends: dict | None = None
        try:
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for rows in batch.values():
                    records.extend(rows)
                    last_new = time.monotonic()
                if len(records) < expected or (until and not until(records)) or not consumer.assignment():
                    continue
                # Whatever the topic already holds is read to its end, not waited for.
                ends = ends if ends is not None else await consumer.end_offsets(list(consumer.assignment()))
                at_end = all([await consumer.position(tp) >= end for tp, end in ends.items()])
                quiet_s = time.monotonic() - last_new
                # A transaction's last marker can keep a position short of the end: then quiet is enough.
                if quiet_s >= idle_s and (at_end or quiet_s >= max(idle_s, 2.0)):
                    break
        finally:
            await consumer.stop()
        return records

    return asyncio.run(read())


def count_records(broker_url: str, topic: str) -> int:
    """How many records `topic` holds now, from its offsets: no waiting to see whether more come.

    For topics written without transactions (a transaction's marker takes an offset too).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def count() -> int:
        # Subscribed without a group: the client loads the topic's metadata while it starts.
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=KafkaSettings(broker=broker_url).bootstrap, group_id=None
        )
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            ends = await consumer.end_offsets(partitions)
            starts = await consumer.beginning_offsets(partitions)
            return sum(ends[tp] - starts[tp] for tp in partitions)
        finally:
            await consumer.stop()

    return asyncio.run(count())
