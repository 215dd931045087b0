"""`sentistream dlq replay`: send chosen dead letters' originals back to the input topic, once each."""

from __future__ import annotations

import argparse
import asyncio
import logging

from sentistream.settings import add_settings_arguments, settings_from_args
from stream.feeders.dlq_replay import DlqReplaySettings, check_reachable, replay
from stream.settings import CONNECTION_FLAGS, KafkaSettings

KAFKA_FIELDS = [*CONNECTION_FLAGS, "topic", "dlq_topic"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`dlq replay`, its filters and the connection flags."""
    parser.add_argument(
        "action",
        choices=["replay"],
        metavar="ACTION",
        help="replay: re-publish the originals of the chosen dead letters to the input topic, each at most "
        "once (the compacted ledger topic DLQ-replayed records what was replayed)",
    )
    add_settings_arguments(parser, KafkaSettings, KAFKA_FIELDS)
    add_settings_arguments(parser, DlqReplaySettings)


def run(args: argparse.Namespace) -> int:
    kafka = settings_from_args(KafkaSettings, args)
    settings = settings_from_args(DlqReplaySettings, args)
    check_reachable(kafka)
    if not getattr(args, "verbose", False):
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    asyncio.run(replay(kafka, settings, lambda line: print(line, flush=True)))
    return 0


COMMANDS = {"dlq": (add_arguments, run)}
