"""`sentistream produce`: put tweets on the `tweets` topic from a shell.

`produce` sends its arguments and/or standard input (plain lines, or JSON lines in the `tweets`
schema) and prints each id once Kafka has acknowledged it, in input order. Ctrl-C stops reading,
flushes what is queued, reports what was sent and exits 130. The connection flags here are shared
with `replay` (stream/feeders/replay_cli.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

import orjson

from sentistream.errors import UsageError
from sentistream.settings import add_settings_arguments, settings_from_args
from stream.feeders.producer import DeliveryCallback, ProducerSettings, TweetProducer, encode_tweet
from stream.settings import CONNECTION_FLAGS, KafkaSettings

if TYPE_CHECKING:
    pass

KAFKA_FIELDS = [*CONNECTION_FLAGS, "topic"]
PRODUCER_FIELDS = ("linger_ms", "batch_bytes", "compression", "connect_timeout_s", "request_timeout_ms")
LINES_SHOWN = 5
log = logging.getLogger(__name__)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--broker, --topic, security and batching flags shared by both commands."""
    add_settings_arguments(parser, KafkaSettings, KAFKA_FIELDS)
    add_settings_arguments(parser, ProducerSettings, PRODUCER_FIELDS)


def connection_settings(args: argparse.Namespace) -> tuple[KafkaSettings, ProducerSettings]:
    """Build the Kafka and producer settings once (flags > SENTISTREAM_* > defaults)."""
    if not getattr(args, "verbose", False):
        # aiokafka logs every refused connection at ERROR; the one-line error below says it better.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return settings_from_args(KafkaSettings, args), settings_from_args(ProducerSettings, args)


# ---- produce ------------------------------------------------------------------------------------


def add_produce_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `sentistream produce`."""
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to send, one message each")
    parser.add_argument("--stdin", action="store_true", help="also send standard input, one message per line")
    parser.add_argument(
        "--input-format",
        choices=("auto", "text", "jsonl"),
        default="auto",
        help="stdin lines are plain text, or JSON objects in the tweets schema; auto: JSON when the "
        "first line starts with '{' (default: auto)",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first malformed line (exit 2)")
    add_connection_arguments(parser)


@dataclass
class LineReport:
    """Lines of stdin that could not be sent, by number."""

    malformed: int = 0
    lines: list[int] = field(default_factory=list)
    first_reason: str = ""

    def add(self, number: int, reason: str) -> None:
        """Count one bad line, keeping the first few numbers and the first reason."""
        self.malformed += 1
        self.first_reason = self.first_reason or reason
        if len(self.lines) < LINES_SHOWN:
            self.lines.append(number)


class OrderedIds:
    """Prints ids as Kafka acknowledges them, but always in the order they were sent."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self._slots: deque[list] = deque()
        self.printed = 0

    def expect(self) -> DeliveryCallback:
        """A callback for the next message sent."""
        slot: list = [None, None, False]  # id, error, done
        self._slots.append(slot)

        def delivered(tweet_id: str, error: BaseException | None) -> None:
            slot[:] = [tweet_id, error, True]
            self._drain()

        return delivered

    def _drain(self) -> None:
        while self._slots and self._slots[0][2]:
            tweet_id, error, _ = self._slots.popleft()
            if error is None:  # a failed delivery is reported by the producer's flush, not printed
                print(tweet_id, file=self.out, flush=True)
                self.printed += 1


def run_produce(args: argparse.Namespace) -> int:
    """Send the arguments and/or stdin; print ids on stdout and a summary on stderr (130 after Ctrl-C)."""
    if not args.texts and not args.stdin:
        raise UsageError("nothing to send: give texts as arguments, or pass --stdin and pipe lines in")
    kafka, producer_settings = connection_settings(args)
    printer, report = OrderedIds(sys.stdout), LineReport()
    interrupted = asyncio.run(_produce(args, kafka, producer_settings, printer, report))
    summary = f"sent {printer.printed} messages to {kafka.topic!r} at {kafka.broker}"
    if report.malformed:
        shown = ", ".join(map(str, report.lines))
        summary += f"; skipped {report.malformed} malformed lines ({shown}; first: {report.first_reason})"
    print(("interrupted: " if interrupted else "") + summary, file=sys.stderr)
    return 130 if interrupted else 0


async def _produce(
    args: argparse.Namespace,
    kafka: KafkaSettings,
    producer_settings: ProducerSettings,
    printer: OrderedIds,
    report: LineReport,
) -> bool:
    """Send everything; True when a Ctrl-C ended it early (what was queued is still flushed)."""
    lines = StdinLines(sys.stdin) if args.stdin else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        # The first Ctrl-C stops reading and lets the flush run; a second one falls back to
        # Python's KeyboardInterrupt, for a flush that cannot finish (exit 130 all the same).
        loop.remove_signal_handler(signal.SIGINT)
        stop.set()
        if lines is not None:
            lines.interrupt()

    loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        async with TweetProducer(kafka, producer_settings) as producer:
            for text in args.texts:
                if stop.is_set():
                    break
                await producer.send(text, printer.expect())
            if lines is not None and not stop.is_set():
                await send_lines(producer, lines, args.input_format, args.strict, printer, report)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    return stop.is_set()


class StdinLines:
    """Lines of a text stream read by a daemon thread, so that a Ctrl-C never waits for a line that
    may never come (a live pipe): `asyncio.to_thread` would block the interpreter's exit on it."""

    def __init__(self, stream: IO[str], ahead: int = 1024) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._room = threading.Semaphore(ahead)  # read at most `ahead` lines before they are sent
        threading.Thread(target=self._read, args=(stream,), name="stdin-lines", daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        while True:
            self._room.acquire()
            line = stream.readline()
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, line)
            except RuntimeError:  # the loop is closed: nobody reads on
                return
            if not line:
                return

    def interrupt(self) -> None:
        """Make the reader see the end now."""
        self._queue.put_nowait(None)

    async def next(self) -> str | None:
        """The next line with its newline; "" at the end of the stream, None after `interrupt`."""
        line = await self._queue.get()
        self._room.release()
        return line


async def send_lines(
    producer: TweetProducer,
    lines: StdinLines,
    input_format: str,
    strict: bool,
    printer: OrderedIds,
    report: LineReport,
) -> None:
    """Send each non-blank line as it arrives (stdin may be a live feed, so lines are read one by one)."""

    number = 0
    while line := await lines.next():
        number += 1
        if not line.strip():
            continue
        if input_format == "auto":
            input_format = "jsonl" if line.lstrip().startswith("{") else "text"
        try:
            # validated and sized before it takes a place in line
            message = encode_tweet(parse_line(line, input_format))
        except UsageError as exc:
            if strict:
                raise UsageError(f"line {number}: {exc}; fix it or drop --strict") from None
            report.add(number, str(exc))
            continue
        await producer.send(message, printer.expect())
        log.debug("line %d queued as %s", number, message.id)


def parse_line(line: str, input_format: str) -> str | dict:
    """A plain-text line as its text, or a JSON line as a mapping; a non-object JSON line is an error."""
    if input_format == "text":
        return line.rstrip("\r\n")
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise UsageError("not valid JSON") from None
    if not isinstance(value, dict):
        raise UsageError(f"a JSON {type(value).__name__}, not an object with a 'text' field")
    return value


COMMANDS = {"produce": (add_produce_arguments, run_produce)}
