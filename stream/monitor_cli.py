"""`sentistream monitor`: the shift-alert app (one replica) over `sentiment-stats`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

from sentistream.errors import SentistreamError
from sentistream.settings import add_settings_arguments, settings_from_args
from stream.logs import logging_config
from stream.monitor import MonitorSettings, create_monitor
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
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, **kafka.aiokafka_security())
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        existing = set(await admin.list_topics())
        missing = [t for t in (kafka.stats_topic, settings.alerts_topic) if t not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(t, DEFAULT_PARTITIONS, settings.replication_factor) for t in missing]
            )
            log.info("created topics %s", missing)
        (described,) = await admin.describe_topics([kafka.stats_topic])
        return len(described["partitions"]) or DEFAULT_PARTITIONS
    except (TimeoutError, KafkaError, OSError) as exc:
        raise SentistreamError(
            f"cannot reach the Kafka broker at {kafka.broker} ({type(exc).__name__}); "
            "start it (`sentistream kafka start`) or fix --broker"
        ) from None
    finally:
        await admin.close()


def run_app(app, loglevel: str) -> int:
    """Run a faust.App in this process until SIGTERM/SIGINT; returns the exit status."""
    import faust

    worker = faust.Worker(
        app, loglevel=loglevel, logging_config=logging_config(loglevel, False), redirect_stdouts=False, quiet=True
    )  # fmt: skip
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


COMMANDS = {"monitor": (add_arguments, run)}
