"""`sentistream monitor`: the shift-alert app (one replica) over `sentiment-stats`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

from sentistream.errors import SentistreamError
from sentistream.settings import add_settings_arguments, settings_from_args
from stream.admin import TopicSpec, admin_client, create_missing, partition_counts
from stream.faust_app import run_app
from stream.monitor.app import create_monitor
from stream.monitor.settings import MonitorSettings
from stream.settings import CONNECTION_FLAGS, KafkaSettings

KAFKA_FIELDS = [*CONNECTION_FLAGS, "stats_topic", "scored_topic"]
DEFAULT_PARTITIONS = 4  # of topics the monitor has to create (the worker's default)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The broker and topic flags, and every detection threshold."""
    add_settings_arguments(parser, KafkaSettings, KAFKA_FIELDS)
    add_settings_arguments(parser, MonitorSettings)


def run(args: argparse.Namespace) -> int:
    """Check the broker, create missing topics, run the Faust app until SIGTERM."""
    kafka = settings_from_args(KafkaSettings, args)
    settings = settings_from_args(MonitorSettings, args)
    if not getattr(args, "verbose", False):
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # until Faust configures logging
    partitions = asyncio.run(prepare_topics(kafka, settings))
    logging.getLogger("aiokafka").setLevel(logging.NOTSET)  # the broker answered: its warnings matter now
    loglevel = "DEBUG" if getattr(args, "verbose", False) else "INFO"
    with tempfile.TemporaryDirectory(prefix="sentistream-monitor-") as datadir:
        app, _ = create_monitor(kafka, settings, partitions, Path(datadir))
        return run_app(app, loglevel)


async def prepare_topics(kafka, settings, timeout_s: float = 10.0) -> int:
    """Create the stats and alerts topics when missing; returns the stats topic's partition count."""
    from aiokafka.errors import KafkaError

    replication = settings.replication_factor
    specs = [
        TopicSpec(name, DEFAULT_PARTITIONS, replication)
        for name in (kafka.stats_topic, settings.alerts_topic)
    ]
    try:
        async with admin_client(kafka, timeout_s) as admin:
            await create_missing(admin, specs)
            return (await partition_counts(admin, [kafka.stats_topic])).get(
                kafka.stats_topic
            ) or DEFAULT_PARTITIONS
    except (TimeoutError, KafkaError, OSError) as exc:
        raise SentistreamError(kafka.unreachable(f" ({type(exc).__name__})")) from None


COMMANDS = {"monitor": (add_arguments, run)}
