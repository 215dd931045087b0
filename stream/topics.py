"""The worker's topics: check the broker answers, create missing topics, declare them in Faust.

The input topic is declared as raw bytes (no Faust codec), so the worker decodes every message
itself and can dead-letter bytes that are not UTF-8 JSON instead of crashing on them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sentistream.errors import SentistreamError
from stream.deployments import create_models_topic
from stream.settings import KafkaSettings, WorkerSettings

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
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap,
        request_timeout_ms=int(settings.startup_timeout_s * 1000),
        **kafka.aiokafka_security(),
    )
    try:
        await asyncio.wait_for(admin.start(), settings.startup_timeout_s)
        created = await _create_missing(admin, kafka, settings)
        if await create_models_topic(admin, kafka, settings.replication_factor):
            created.append(kafka.models_topic)
        partitions = await _partitions(admin, [kafka.topic, *output_topics(kafka)])
        if settings.guarantee == "exactly_once":
            check_copartitioned(kafka, partitions)
        return TopicCheck(
            created, await _max_message_bytes(admin, output_topics(kafka)), partitions.get(kafka.topic, 0)
        )
    except (TimeoutError, KafkaError, OSError) as exc:
        raise SentistreamError(
            f"cannot reach the Kafka broker at {kafka.broker} within {settings.startup_timeout_s:.0f}s "
            f"({type(exc).__name__}); start it (`sentistream kafka start`) or fix --broker"
        ) from None
    finally:
        await admin.close()


async def _create_missing(admin, kafka: KafkaSettings, settings: WorkerSettings) -> list[str]:
    from aiokafka.admin import NewTopic

    existing = set(await admin.list_topics())
    if kafka.topic not in existing:
        await admin.create_topics([NewTopic(kafka.topic, settings.partitions, settings.replication_factor)])
    count = (await _partitions(admin, [kafka.topic])).get(kafka.topic, settings.partitions)
    outputs = [name for name in output_topics(kafka) if name not in existing]
    if outputs:
        # Outputs get at least the input's partitions, which exactly-once needs.
        count = max(count, settings.partitions)
        await admin.create_topics([NewTopic(n, count, settings.replication_factor) for n in outputs])
    return [name for name in [kafka.topic, *output_topics(kafka)] if name not in existing]


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


async def _partitions(admin, names: list[str]) -> dict[str, int]:
    described = await admin.describe_topics(names)
    return {t["topic"]: len(t["partitions"]) for t in described if t["partitions"]}


async def _max_message_bytes(admin, names: list[str]) -> int | None:
    """The smallest `max.message.bytes` of `names`, None when the broker does not say."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, n, {"max.message.bytes": None}) for n in names]
        responses = await admin.describe_configs(resources)
        values = [
            int(entry["config_value"])
            for response in responses
            for resource in response.to_object()["resources"]
            for entry in resource["config_entries"]
            if entry["config_names"] == "max.message.bytes"
        ]
        return min(values) if values else None
    except Exception as exc:  # advisory: the setting's limit still applies
        log.warning("could not read max.message.bytes of the output topics: %s", type(exc).__name__)
        return None


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
