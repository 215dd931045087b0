"""`sentistream replay`: stream a labelled dataset into the `tweets` topic at a chosen pace, with a
progress bar. Ctrl-C stops reading, flushes what is queued, reports what was sent and exits 130.
Imports pandas (the training loaders) only when it runs; never torch.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING

from sentistream.settings import add_settings_arguments, settings_from_args
from stream.feeders.produce_cli import add_connection_arguments, connection_settings
from stream.feeders.producer import ProducerSettings
from stream.settings import KafkaSettings

if TYPE_CHECKING:
    from stream.feeders.replay import ReplayResult, ReplaySettings

REPLAY_FIELDS = ("rate", "speedup", "limit", "loop", "shuffle", "seed", "text_col", "label_col", "format",
                 "strict")  # fmt: skip


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `sentistream replay`."""
    # lazy: pandas, pyarrow (the dataset loaders; `produce` needs neither)
    from stream.feeders.replay import ReplaySettings

    parser.add_argument(
        "path", metavar="PATH", help="dataset to replay: CSV, TSV, JSONL, or any training format"
    )
    add_settings_arguments(parser, ReplaySettings, REPLAY_FIELDS)
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar"
    )
    add_connection_arguments(parser)


def run_replay(args: argparse.Namespace) -> int:
    """Replay PATH; exit 130 after a Ctrl-C (what was sent is flushed and reported)."""
    # lazy: pandas, pyarrow
    from stream.feeders.replay import ReplaySettings, check_options

    settings = settings_from_args(ReplaySettings, args)
    check_options(settings)
    kafka, producer_settings = connection_settings(args)
    result = asyncio.run(_replay_until_interrupted(args, kafka, producer_settings, settings))
    print(("interrupted: " if result.interrupted else "") + result.summary(kafka.topic), file=sys.stderr)
    return 130 if result.interrupted else 0


async def _replay_until_interrupted(
    args: argparse.Namespace,
    kafka: KafkaSettings,
    producer_settings: ProducerSettings,
    settings: ReplaySettings,
) -> ReplayResult:
    # lazy: pandas, pyarrow
    from stream.feeders.replay import replay

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Ctrl-C ends the send loop instead of killing it, so buffered messages are flushed and counted.
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        return await replay(args.path, kafka, producer_settings, settings, progress=args.progress, stop=stop)
    finally:
        loop.remove_signal_handler(signal.SIGINT)


COMMANDS = {"replay": (add_replay_arguments, run_replay)}
