"""`sentistream dlq replay`: send the originals of chosen dead letters back to the input topic, each
at most once, so a fixed bug or a loosened limit recovers what was set aside.

At most once, even with two replays at the same time: every replayed dead letter is recorded in a
compacted ledger topic (`DLQ-replayed`, keyed `PARTITION:OFFSET` of the dead letter), and the
originals and their ledger records are sent in one Kafka transaction. The transactional id is the
same for every replay of a dead-letter topic, so starting one fences any other still running
(its open transaction is aborted) before the ledger is read. A dead letter whose original was cut
to fit the dead-letter topic is never replayed (it is not the input any more); it is counted.

Each replayed message carries its provenance in headers: `sentistream-replayed-from`
(`DLQ/PARTITION/OFFSET`) and `sentistream-original` (`TOPIC/PARTITION/OFFSET` of the input).
aiokafka only: neither Faust nor torch is loaded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sentistream.errors import UsageError
from stream.admin import COMPACTED, TopicSpec, admin_client, create_missing, partition_ids
from stream.events import DeadLetter
from stream.settings import KafkaSettings

CUT = "(original cut to its first"
CHUNK = 500  # dead letters per transaction
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`2026-12-06T09:00:00Z` (no zone: UTC) or a duration back from now (`30m`, `2h`, `7d`)."""
    now = now or datetime.now(UTC)
    if match := _DURATION.match(text.strip()):
        return now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give an ISO-8601 time (2026-12-06T09:00:00Z) or a duration (30m, 2h, 7d)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class DlqReplaySettings(BaseSettings):
    """Which dead letters `sentistream dlq replay` sends back (env prefix SENTISTREAM_DLQ_)."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_DLQ_", frozen=True)

    reason: str | None = Field(default=None, description="only dead letters whose error contains this text")
    stage: str | None = Field(default=None, description="only this stage: decode, validate or inference")
    since: datetime | None = Field(
        default=None,
        description="only dead letters that failed at or after this time (ISO-8601, or 30m, 2h, 7d)",
    )
    dry_run: bool = Field(default=False, description="count and show what would be replayed; send nothing")
    replication_factor: int = Field(
        default=1, ge=1, description="replication factor of the ledger topic if created"
    )
    timeout_s: float = Field(default=30.0, gt=0, description="seconds to wait for the broker")

    @field_validator("since", mode="before")
    @classmethod
    def _since(cls, value):
        return parse_since(value) if isinstance(value, str) else value


@dataclass
class Plan:
    """What a replay found in the dead-letter topic."""

    chosen: list[tuple[int, int, DeadLetter]] = field(default_factory=list)  # (partition, offset, letter)
    already: int = 0
    cut: int = 0
    unreadable: int = 0
    other: int = 0  # did not match the filters

    def summary(self) -> str:
        stages = Counter(letter.stage for _, _, letter in self.chosen)
        by_stage = ", ".join(f"{n} {stage}" for stage, n in sorted(stages.items())) or "none"
        return (
            f"{len(self.chosen)} dead letters to replay ({by_stage}); {self.already} replayed before, "
            f"{self.cut} with a cut original (cannot be replayed), {self.unreadable} unreadable, "
            f"{self.other} not matching"
        )


def ledger_topic(kafka: KafkaSettings) -> str:
    return f"{kafka.dlq_topic}-replayed"


def ledger_key(partition: int, offset: int) -> bytes:
    return f"{partition}:{offset}".encode()


def original_bytes(letter: DeadLetter) -> bytes:
    if letter.encoding == "base64":
        return base64.b64decode(letter.original)
    return letter.original.encode("utf-8")


def choose(records, replayed: set[bytes], settings: DlqReplaySettings) -> Plan:
    """Pure: which (partition, offset, raw value) dead-letter records to replay."""
    plan = Plan()
    for partition, offset, raw in records:
        try:
            letter = DeadLetter.model_validate_json(raw)
        except (ValidationError, ValueError):
            plan.unreadable += 1
            continue
        if not _matches(letter, settings):
            plan.other += 1
        elif ledger_key(partition, offset) in replayed:
            plan.already += 1
        elif CUT in letter.error:
            plan.cut += 1
        else:
            try:
                original_bytes(letter)
            except (binascii.Error, ValueError):
                plan.unreadable += 1
                continue
            plan.chosen.append((partition, offset, letter))
    return plan


def _matches(letter: DeadLetter, settings: DlqReplaySettings) -> bool:
    if settings.stage and letter.stage != settings.stage:
        return False
    if settings.reason and settings.reason not in letter.error:
        return False
    return not settings.since or letter.failed_at >= settings.since


async def read_all(kafka: KafkaSettings, topic: str, timeout_s: float) -> list:
    """Every committed record (aiokafka's ConsumerRecord) of `topic` up to its end now."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level="read_committed", **kafka.aiokafka_security(),
    )  # fmt: skip
    records: list = []
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        async with admin_client(kafka, timeout_s) as admin:
            tps = [TopicPartition(topic, p) for p in await partition_ids(admin, topic)]
        if not tps:
            return records
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        for tp in tps:
            if ends[tp] > 0 and await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
        while pending:
            batch = await asyncio.wait_for(consumer.getmany(*pending, timeout_ms=1000), timeout_s)
            for tp, rows in batch.items():
                records += [r for r in rows if r.offset < ends[tp]]
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return records


async def replay(kafka: KafkaSettings, settings: DlqReplaySettings, out: Callable[[str], None]) -> Plan:
    """Fence other replays, read the ledger and the dead letters, send the chosen originals."""
    from aiokafka import AIOKafkaProducer

    await _ensure_ledger(kafka, settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, transactional_id=f"sentistream-dlq-replay-{kafka.dlq_topic}",
        acks="all", enable_idempotence=True, max_request_size=4_194_304, **kafka.aiokafka_security(),
    )  # fmt: skip
    try:
        await asyncio.wait_for(producer.start(), settings.timeout_s)
        await producer.begin_transaction()  # a fresh id: every other replay of this topic is fenced now
        replayed = {r.key for r in await read_all(kafka, ledger_topic(kafka), settings.timeout_s)}
        letters = await read_all(kafka, kafka.dlq_topic, settings.timeout_s)
        plan = choose([(r.partition, r.offset, r.value or b"") for r in letters], replayed, settings)
        out(plan.summary())
        if settings.dry_run or not plan.chosen:
            await producer.abort_transaction()
            return plan
        for n, (partition, offset, letter) in enumerate(plan.chosen):
            if n and n % CHUNK == 0:
                await producer.commit_transaction()
                await producer.begin_transaction()
            await _send(producer, kafka, partition, offset, letter)
        await producer.commit_transaction()
        out(f"replayed {len(plan.chosen)} to {kafka.topic}")
        return plan
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


async def _send(producer, kafka: KafkaSettings, partition: int, offset: int, letter: DeadLetter) -> None:
    headers = [
        ("sentistream-replayed-from", f"{kafka.dlq_topic}/{partition}/{offset}".encode()),
        ("sentistream-original", f"{letter.topic}/{letter.partition}/{letter.offset}".encode()),
    ]
    key = letter.key.encode() if letter.key is not None else None
    await producer.send(kafka.topic, original_bytes(letter), key=key, headers=headers)
    note = {"replayed_at": datetime.now(UTC).isoformat(), "to": kafka.topic}
    await producer.send(ledger_topic(kafka), orjson.dumps(note), key=ledger_key(partition, offset))


async def _ensure_ledger(kafka: KafkaSettings, settings: DlqReplaySettings) -> None:
    """Create the compacted one-partition ledger topic when it is missing."""
    async with admin_client(kafka, settings.timeout_s) as admin:
        await create_missing(
            admin, [TopicSpec(ledger_topic(kafka), 1, settings.replication_factor, COMPACTED)]
        )


def check_reachable(kafka: KafkaSettings) -> None:
    if not kafka.reachable():
        raise UsageError(kafka.unreachable())
