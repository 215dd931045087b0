"""The worker's topics: check the broker answers, create missing topics, declare them in Faust.

The input topic is declared as raw bytes (no Faust codec), so the worker decodes every message
itself and can dead-letter bytes that are not UTF-8 JSON instead of crashing on them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sentistream.errors import SentistreamError
from stream.admin import TopicSpec, admin_client, create_missing, max_message_bytes, partition_counts
from stream.control import models_topic
from stream.settings import KafkaSettings
from stream.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def output_topics(kafka: KafkaSettings) -> list[str]:
    """The topics the worker writes."""
    return [kafka.scored_topic, kafka.dlq_topic, kafka.stats_topic]


@dataclass(frozen=True)
class TopicCheck:
    """What `ensure_topics` found: the topics it created, the largest message all outputs take and
    the input topic's partition count (the most worker processes that get work)."""

    created: list[str]
    max_message_bytes: int | None
    input_partitions: int = 0


async def ensure_topics(kafka: KafkaSettings, settings: WorkerSettings) -> TopicCheck:
    """Fail fast when the broker does not answer; create missing topics; in exactly-once mode,
    check the outputs have at least the input's partitions (a transaction per input partition
    writes to the same partition number of each output)."""
    from aiokafka.errors import KafkaError

    timeout_s = settings.startup_timeout_s
    try:
        async with admin_client(kafka, timeout_s) as admin:
            created = await _create_missing(admin, kafka, settings)
            created += await create_missing(admin, [models_topic(kafka, settings.replication_factor)])
            partitions = await partition_counts(admin, [kafka.topic, *output_topics(kafka)])
            if settings.guarantee == "exactly_once":
                check_copartitioned(kafka, partitions)
            limit = await max_message_bytes(admin, output_topics(kafka))
            return TopicCheck(created, limit, partitions.get(kafka.topic, 0))
    except (TimeoutError, KafkaError, OSError) as exc:
        raise SentistreamError(
            kafka.unreachable(f" within {timeout_s:.0f}s ({type(exc).__name__})")
        ) from None


async def _create_missing(admin, kafka: KafkaSettings, settings: WorkerSettings) -> list[str]:
    """The input topic, then the outputs with at least the input's partitions (exactly-once needs it)."""
    replication = settings.replication_factor
    created = await create_missing(admin, [TopicSpec(kafka.topic, settings.partitions, replication)])
    count = max((await partition_counts(admin, [kafka.topic])).get(kafka.topic, 0), settings.partitions)
    return created + await create_missing(
        admin, [TopicSpec(n, count, replication) for n in output_topics(kafka)]
    )


def check_copartitioned(kafka: KafkaSettings, partitions: dict[str, int]) -> None:
    """SentistreamError naming the fix when an output of a transaction has too few partitions."""
    need = partitions.get(kafka.topic, 0)
    for name in (kafka.scored_topic, kafka.dlq_topic):
        have = partitions.get(name, need)
        if have < need:
            raise SentistreamError(
                f"exactly_once needs {name} to have at least the {need} partitions of {kafka.topic} "
                f"(it has {have}); add partitions (kafka-topics.sh --alter --topic {name} --partitions "
                f"{need}) or run with --guarantee at_least_once"
            )


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
