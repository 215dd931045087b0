"""The worker's topics: check the broker answers, create missing topics, declare them in Faust.

The input topic is declared as raw bytes (no Faust codec), so the worker decodes every message
itself and can dead-letter bytes that are not UTF-8 JSON instead of crashing on them.
"""

from __future__ import annotations

import asyncio
import logging

from sentistream.errors import SentistreamError
from stream.settings import KafkaSettings, WorkerSettings

log = logging.getLogger(__name__)


def output_topics(kafka: KafkaSettings) -> list[str]:
    """The topics the worker writes."""
    return [kafka.scored_topic, kafka.dlq_topic, kafka.stats_topic]


async def ensure_topics(kafka: KafkaSettings, settings: WorkerSettings) -> list[str]:
    """Fail fast when the broker does not answer; create missing topics. Returns those created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    wanted = [kafka.topic, *output_topics(kafka)]
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap,
        request_timeout_ms=int(settings.startup_timeout_s * 1000),
        **kafka.aiokafka_security(),
    )
    try:
        await asyncio.wait_for(admin.start(), settings.startup_timeout_s)
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            new = [NewTopic(name, settings.partitions, settings.replication_factor) for name in missing]
            await admin.create_topics(new)
        return missing
    except (TimeoutError, KafkaError, OSError) as exc:
        raise SentistreamError(
            f"cannot reach the Kafka broker at {kafka.broker} within {settings.startup_timeout_s:.0f}s "
            f"({type(exc).__name__}); start it (`sentistream kafka start`) or fix --broker"
        ) from None
    finally:
        await admin.close()


def declare_topics(app, kafka: KafkaSettings, settings: WorkerSettings):
    """The raw-bytes input topic of `app` (a faust.App)."""
    return app.topic(
        kafka.topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
