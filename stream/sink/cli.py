"""`sentistream sink --output DIR`: write `tweets-scored` to hourly Parquet files, exactly once."""

from __future__ import annotations

import argparse
import asyncio
import logging

from sentistream.settings import add_settings_arguments, settings_from_args
from stream.settings import CONNECTION_FLAGS, KafkaSettings
from stream.sink.writer import SinkSettings, run_sink

KAFKA_FIELDS = [*CONNECTION_FLAGS, "scored_topic"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--output DIR`, the broker and topic flags, and how often to write."""
    add_settings_arguments(parser, KafkaSettings, KAFKA_FIELDS)
    add_settings_arguments(parser, SinkSettings)


def run(args: argparse.Namespace) -> int:
    """Consume and write until SIGTERM; the buffered rows are written before exit."""
    kafka = settings_from_args(KafkaSettings, args)
    settings = settings_from_args(SinkSettings, args)
    if not getattr(args, "verbose", False):
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the one-line error says it better
    return asyncio.run(run_sink(kafka, settings))


COMMANDS = {"sink": (add_arguments, run)}
