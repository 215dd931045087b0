"""`sentistream tail TOPIC`: watch a topic from the console, the way `kafka-console-consumer` would.

TOPIC is `scored`, `dlq`, `alerts`, `stats`, `models` (the configured names of those topics) or any
topic name. Reads `read_committed` without joining a consumer group (nothing is committed, no
worker's partitions are touched), from the end unless `--from-beginning`. One line per record,
readable by default, the record's value as it is with `--json`; `--label` and `--reason`/`--stage` filter
scored events and dead letters. Ctrl-C stops it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sentistream.errors import UsageError
from sentistream.settings import add_settings_arguments, settings_from_args
from stream.admin import admin_client, partition_ids
from stream.settings import CONNECTION_FLAGS, TOPIC_FLAGS, KafkaSettings

ALIASES = {"scored": "scored_topic", "dlq": "dlq_topic", "stats": "stats_topic", "models": "models_topic"}


class TailSettings(BaseSettings):
    """What `sentistream tail` shows (env prefix SENTISTREAM_TAIL_)."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_TAIL_", frozen=True)

    from_beginning: bool = Field(default=False, description="start at the oldest record, not at the end")
    label: str | None = Field(default=None, description="scored events: only this label")
    reason: str | None = Field(default=None, description="dead letters: only those whose error contains this")
    stage: str | None = Field(
        default=None, description="dead letters: only this stage (decode, validate, ...)"
    )
    limit: int | None = Field(default=None, ge=1, description="stop after this many records")
    idle_exit_s: float | None = Field(
        default=None, gt=0, description="stop once nothing new arrived for this many seconds"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("which", metavar="TOPIC", help="scored, dlq, alerts, stats, models or a topic name")
    add_settings_arguments(parser, KafkaSettings, [*CONNECTION_FLAGS, *TOPIC_FLAGS])
    add_settings_arguments(parser, TailSettings)
    parser.add_argument(
        "--json", action="store_true", help="print each record's value as it is (one JSON line)"
    )


def topic_name(alias: str, kafka: KafkaSettings) -> str:
    """The topic `alias` names (an alias of a configured topic, else the name itself)."""
    if alias in ALIASES:
        return getattr(kafka, ALIASES[alias])
    if alias == "alerts":
        from stream.monitor.settings import MonitorSettings

        return MonitorSettings().alerts_topic
    return alias


def matches(value: dict | None, settings: TailSettings) -> bool:
    """Whether a record's JSON value passes the filters."""
    if settings.label and (value is None or value.get("label") != settings.label):
        return False
    if settings.reason and (value is None or settings.reason not in str(value.get("error", ""))):
        return False
    return not settings.stage or (value is not None and value.get("stage") == settings.stage)


def render(value: dict | None, raw: bytes, partition: int, offset: int) -> str:
    """One readable line for a record (scored event, dead letter, alert, or anything else)."""
    where = f"[{partition}]@{offset}"
    if value is None:
        return f"{where} {raw[:200].decode(errors='replace')}"
    if "label" in value and "score" in value:
        text = " ".join(str(value.get("text", "")).split())[:100]
        return f"{where} {value.get('scored_at', '')} {value['label']} {float(value['score']):.2f} {value.get('id', '')}: {text}"
    if "stage" in value and "error" in value:
        return f"{where} {value['stage']}: {value['error']} | {str(value.get('original', ''))[:80]!r}"
    if "summary" in value:
        return f"{where} {value.get('raised_at', '')} {value.get('kind', '')}: {value['summary']}"
    return f"{where} {orjson.dumps(value).decode()}"


def decode(raw: bytes | None) -> dict | None:
    try:
        value = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def tail(
    kafka: KafkaSettings,
    topic: str,
    settings: TailSettings,
    out: Callable[[str], None],
    as_json: bool = False,
) -> int:
    """Print the records of `topic` until Ctrl-C, `limit` or `idle_exit_s`; the count printed."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        **kafka.aiokafka_security(),
    )
    shown = 0
    try:
        await asyncio.wait_for(consumer.start(), 10.0)
        async with admin_client(kafka, 10.0) as admin:
            partitions = [TopicPartition(topic, p) for p in await partition_ids(admin, topic)]
        if not partitions:
            raise UsageError(
                f"topic {topic} does not exist on {kafka.broker}; list them with kafka-topics.sh or check --broker"
            )
        consumer.assign(partitions)
        if settings.from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        idle = 0.0
        while settings.limit is None or shown < settings.limit:
            batch = await consumer.getmany(timeout_ms=500)
            idle = 0.0 if batch else idle + 0.5
            if settings.idle_exit_s is not None and idle >= settings.idle_exit_s:
                break
            for records in batch.values():
                for record in records:
                    value = decode(record.value)
                    if not matches(value, settings):
                        continue
                    raw = record.value or b""
                    out(
                        raw.decode(errors="replace")
                        if as_json
                        else render(value, raw, record.partition, record.offset)
                    )
                    shown += 1
                    if settings.limit is not None and shown >= settings.limit:
                        return shown
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return shown


def run(args: argparse.Namespace) -> int:
    kafka = settings_from_args(KafkaSettings, args)
    settings = settings_from_args(TailSettings, args)
    topic = topic_name(args.which, kafka)
    if not kafka.reachable():
        raise UsageError(kafka.unreachable())

    def out(line: str) -> None:
        print(line, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail(kafka, topic, settings, out, args.json))
    return 0


COMMANDS = {"tail": (add_arguments, run)}
