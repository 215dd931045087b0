"""The control topic: a compacted topic says which bundle every worker serves.

`sentistream deploy BUNDLE` checks that the bundle loads and scores (stream/bundles.py), then
publishes a `Deployment` (stream/events.py) under the key `champion` of `sentistream-models`
(`--shadow`: under `challenger`; `--canary`: a `Canary` under `canary`, which ends saying promoted
or rolled back and why, stream/deployment/canary.py). Workers read the topic to its end before they
start, so a worker that scales from zero starts on the current deployment, and follow it while they
run (stream/worker/serving.py swaps the engine between batches).

The topic is compacted, so only the newest value per key survives; each champion therefore carries
the champions it replaced (`history`), which is what `deploy --rollback` goes back to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from stream.admin import COMPACTED, TopicSpec, admin_client, create_missing
from stream.events import ROLES, Canary, Deployment, Role
from stream.retry import Backoff
from stream.settings import KafkaSettings

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 64 * 1024  # a record with HISTORY_KEPT earlier champions is ~5 KB


def parse(value: bytes | None, role: str = "champion") -> Deployment | None:
    """A control-topic value of `role` (None: a tombstone); ValueError when it is not a deployment
    (a `Canary` for the role `canary`)."""
    if value is None:
        return None
    if len(value) > MAX_RECORD_BYTES:
        raise ValueError(f"not a deployment record: {len(value):,} bytes, over {MAX_RECORD_BYTES:,}")
    try:
        return (Canary if role == "canary" else Deployment).model_validate_json(value)
    except Exception as exc:  # ValidationError, or anything the JSON parser raises on hostile bytes
        errors = getattr(exc, "errors", None)
        reason = errors()[0]["msg"] if callable(errors) and errors() else type(exc).__name__
        raise ValueError(f"not a deployment record: {reason}") from None


async def read_deployments(
    kafka: KafkaSettings, timeout_s: float = 10.0
) -> tuple[dict[str, Deployment], int]:
    """The current deployment per role, and the offset that follows the last record read.

    A record that is not a deployment is logged and skipped: nothing written to the control topic by
    hand may stop a worker from starting.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **kafka.aiokafka_security(),
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        if kafka.models_topic not in await consumer.topics():
            return {}, 0
        tp = TopicPartition(kafka.models_topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        current: dict[str, Deployment] = {}
        while await consumer.position(tp) < end:
            batches = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=1000), timeout_s)
            for message in batches.get(tp, []):
                apply(current, message.key, message.value, message.offset)
        return current, end
    finally:
        await consumer.stop()


def apply(
    current: dict[str, Deployment],
    key: bytes | None,
    value: bytes | None,
    offset: int,
    on_skip: Callable[[int, str], None] | None = None,
) -> str | None:
    """Fold one control-topic record into `current`; returns its role, None when it is skipped
    (then `on_skip(offset, reason)`, when given)."""
    role = key.decode("utf-8", "replace") if key else ""
    reason = None
    if role not in ROLES:
        reason = f"key {role[:40]!r} is not a role"
    else:
        try:
            deployment = parse(value, role)
        except ValueError as exc:
            reason = str(exc)
    if reason is not None:
        log.warning("skipping control-topic record at offset %d: %s", offset, reason)
        if on_skip is not None:
            on_skip(offset, reason)
        return None
    if deployment is None:
        current.pop(role, None)
    else:
        current[role] = deployment
    return role


async def follow(kafka: KafkaSettings, start: int, on_record, retry_s: float = 5.0, on_skip=None) -> None:
    """Call `on_record(role, deployment | None)` for every control-topic record from offset `start`,
    and `on_skip(offset, reason)` for every record that is not one, forever; a lost broker is
    retried, never raised (the stream keeps its model meanwhile)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(kafka.models_topic, 0)
    position = start
    attempts = Backoff(retry_s).start()
    while True:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            **kafka.aiokafka_security(),
        )
        try:
            await consumer.start()
            consumer.assign([tp])
            consumer.seek(tp, position)
            async for message in consumer:
                position = message.offset + 1
                current: dict[str, Deployment] = {}
                role = apply(current, message.key, message.value, message.offset, on_skip)
                if role is not None:
                    on_record(role, current.get(role))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # advisory: a worker must outlive a control-topic hiccup
            log.warning(
                "following %s failed (%s); retrying in %.0fs",
                kafka.models_topic,
                type(exc).__name__,
                attempts.pause_s,
            )
            await attempts.wait()
        finally:
            await consumer.stop()


async def publish(
    kafka: KafkaSettings,
    role: Role,
    deployment: Deployment | None,
    timeout_s: float = 15.0,
    replication: int = 1,
) -> int:
    """Write `deployment` (None: clear the role) to the control topic; returns its offset once every
    in-sync replica has it."""
    from aiokafka import AIOKafkaProducer

    await ensure_models_topic(kafka, timeout_s, replication)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=True, **kafka.aiokafka_security()
    )
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
        value = deployment.model_dump_json().encode() if deployment is not None else None
        meta = await asyncio.wait_for(
            producer.send_and_wait(kafka.models_topic, value, key=role.encode(), partition=0), timeout_s
        )
        return meta.offset
    finally:
        await producer.stop()


def models_topic(kafka: KafkaSettings, replication: int) -> TopicSpec:
    """The control topic: one partition (every worker reads all of it, in order), compacted (the
    newest value per role stays)."""
    return TopicSpec(kafka.models_topic, 1, replication, COMPACTED)


async def ensure_models_topic(kafka: KafkaSettings, timeout_s: float = 15.0, replication: int = 1) -> bool:
    """Create the control topic when it is missing; True when created."""
    async with admin_client(kafka, timeout_s) as admin:
        return bool(await create_missing(admin, [models_topic(kafka, replication)]))
