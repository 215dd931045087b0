"""Reading a topic back in tests: every record from the start, as the broker stored it."""

from __future__ import annotations

import time

from stream.settings import KafkaSettings


async def read_topic(broker_url: str, topic: str, expected: int, timeout: float = 30.0) -> list:
    """Every record of `topic` from the start, once `expected` have arrived (or the timeout passed)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=KafkaSettings(broker=broker_url).bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    records, deadline = [], time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            records += [r for batch in batches.values() for r in batch]
    finally:
        await consumer.stop()
    return records
