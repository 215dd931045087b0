"""The one topic admin: open an admin client, create missing topics, read partition counts and limits.

Every process that creates topics goes through here: the worker (its input and outputs), `deploy`
and the worker (the control topic), the monitor (stats and alerts) and `dlq replay` (its ledger).
A topic another process created first is not an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from stream.settings import KafkaSettings

log = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact"}  # the newest value per key survives: control topics, ledgers


@dataclass(frozen=True)
class TopicSpec:
    """A topic as it is created when missing."""

    name: str
    partitions: int
    replication: int = 1
    config: dict[str, str] = field(default_factory=dict)


@asynccontextmanager
async def admin_client(kafka: KafkaSettings, timeout_s: float) -> AsyncIterator:
    """A started aiokafka admin client (TimeoutError when the broker does not answer in time)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap,
        request_timeout_ms=int(timeout_s * 1000),
        **kafka.aiokafka_security(),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        yield admin
    finally:
        await admin.close()


async def create_missing(admin, specs: Sequence[TopicSpec]) -> list[str]:
    """Create the topics of `specs` that do not exist; returns the names this call created."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    existing = set(await admin.list_topics())
    created = []
    for spec in specs:
        if spec.name in existing:
            continue
        topic = NewTopic(spec.name, spec.partitions, spec.replication, topic_configs=dict(spec.config))
        try:
            await admin.create_topics([topic])
        except TopicAlreadyExistsError:  # another process created it first
            continue
        created.append(spec.name)
    if created:
        log.info("created topics %s", created)
    return created


async def partition_counts(admin, names: Sequence[str]) -> dict[str, int]:
    """Topic -> its partition count, for the topics of `names` that exist."""
    described = await admin.describe_topics(list(names))
    return {t["topic"]: len(t["partitions"]) for t in described if t["partitions"]}


async def partition_ids(admin, topic: str) -> list[int]:
    """The partitions of `topic` ([] while it does not exist), from an all-topics metadata request:
    asking for the topic by name could auto-create it."""
    for described in await admin.describe_topics():
        if described["topic"] == topic:
            return sorted(p["partition"] for p in described["partitions"])
    return []


async def max_message_bytes(admin, names: Sequence[str]) -> int | None:
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
        log.warning("could not read max.message.bytes of %s: %s", ", ".join(names), type(exc).__name__)
        return None
