"""The history sink: `tweets-scored` into Parquet files partitioned by hour, exactly once.

Layout: `OUTPUT/dt=YYYY-MM-DD/hour=HH/TOPIC+PARTITION+FIRST+LAST+IofN.parquet` (hour of `scored_at`,
UTC; Hive-style folders, so DuckDB and pyarrow read `dt` and `hour` as columns).

Exactly once into files, without a transaction coordinator: the offsets live in the data.
- A *batch* is a run of consecutive records of one partition, offsets FIRST..LAST. Its rows are
  split by hour into N files, each named with the batch's range and its part number I of N.
- Each file is written under a temporary name, fsynced, then `os.replace`d into place, so a file
  either exists whole or not at all. The temporary name is hidden and does not end in `.parquet`
  (`.NAME.HEX.inprogress`): readers that glob `*.parquet` (DuckDB, the History tab) or skip
  hidden files (pyarrow datasets) see finished files only.
- On every partition assignment the sink scans OUTPUT: a batch with all N parts is done; a batch
  with fewer parts was cut short by a crash, and its parts are deleted. Reading resumes at the
  offset after the last complete batch of each partition. The consumer group's committed offsets
  are written too, but only so that lag shows up in monitoring; they are never read back. So a
  kill -9 at any instant neither loses nor repeats a row.
- The consumer fetches from the group's position as soon as a partition is assigned, before the
  sink has scanned and sought; and a fetch may end after a revocation. So a record is buffered
  only for a partition the sink owns and has sought, and only at or after the next offset it
  expects there: a record fetched twice is taken once.
- Writes, revocations and assignments take turns (one lock): a revocation waits for the write in
  flight before the partition moves, and an assignment scans the files with no write half done.

A record that cannot be a valid row is kept, not dropped, and never stops the sink: its row has the
raw text in `text` and the reason in `error` (readers filter `error IS NULL`). Rows without a usable
time go to the folder of 1970-01-01, hour 00.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import signal
import types
import typing
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sentistream.errors import SentistreamError
from stream.events import ScoredTweet
from stream.settings import KafkaSettings

log = logging.getLogger(__name__)

# TOPIC+PARTITION+FIRST+LAST+IofN.parquet; '+' cannot occur in a Kafka topic name.
_FILE = re.compile(r"^(?P<topic>[\w.-]+)\+(?P<partition>\d+)\+(?P<first>\d+)\+(?P<last>\d+)\+(?P<part>\d+)of(?P<parts>\d+)\.parquet$")  # fmt: skip
_TMP_SUFFIX = ".inprogress"  # .NAME.HEX.inprogress: hidden, and not matched by *.parquet
_OLD_TMP_PREFIX = ".inprogress-"  # .inprogress-HEX-NAME, from sinks before that (DuckDB read them)
KNOWN_FIELDS = set(ScoredTweet.model_fields)
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)  # the folder of rows without a usable time


class SinkSettings(BaseSettings):
    """Where and how often the sink writes (`sentistream sink`; env prefix SENTISTREAM_SINK_)."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_SINK_", frozen=True)

    output: Path = Field(description="directory of the Parquet files")
    group_id: str = Field(
        default="sentistream-sink",
        description="consumer group (for lag monitoring only; offsets come from the files)",
    )
    flush_rows: int = Field(
        default=50_000, ge=1, description="write a partition's file once it buffers this many rows"
    )
    flush_interval_s: float = Field(
        default=60.0, gt=0, description="write buffered rows at least this often, seconds"
    )
    startup_timeout_s: float = Field(
        default=10.0, gt=0, description="seconds to wait for the broker at start"
    )

    @field_validator("output")
    @classmethod
    def _a_folder(cls, value: Path) -> Path:
        """A folder, or a path where one can be made: never a file (refused before any work)."""
        path = value.expanduser()
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise ValueError(
                f"{value}: {existing} is a file, not a folder; give --output a folder for the Parquet files"
            )
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"{value}: {existing} is not writable; give --output a folder you can write")
        return value


@dataclass(frozen=True)
class FileName:
    """What a sink file's name records: its batch (partition, offset range) and its part number."""

    topic: str
    partition: int
    first: int
    last: int
    part: int
    parts: int

    def render(self) -> str:
        """The file name (zero-padded offsets, so names sort in offset order)."""
        return f"{self.topic}+{self.partition}+{self.first:020d}+{self.last:020d}+{self.part}of{self.parts}.parquet"

    @property
    def batch(self) -> tuple[int, int, int]:
        """(partition, first, last): the batch this file is part of."""
        return self.partition, self.first, self.last


def parse_file_name(name: str) -> FileName | None:
    """The fields of a sink file name, or None for any other file (a temporary one included)."""
    match = None if temporary_target(name) is not None else _FILE.match(name)
    if not match:
        return None
    g = match.groupdict()
    return FileName(g["topic"], *(int(g[k]) for k in ("partition", "first", "last", "part", "parts")))


def temporary_name(name: str) -> str:
    """A fresh temporary name to write the file `name` under."""
    return f".{name}.{uuid.uuid4().hex}{_TMP_SUFFIX}"


def temporary_target(name: str) -> str | None:
    """The file name a temporary file was being written as; None for any other file."""
    if name.startswith(".") and name.endswith(_TMP_SUFFIX):
        return name[1 : -len(_TMP_SUFFIX)].rpartition(".")[0]
    if name.startswith(_OLD_TMP_PREFIX):
        return name[len(_OLD_TMP_PREFIX) + 33 :]  # after 32 hex digits and a "-"
    return None


def resume_offsets(output: Path, topic: str, partitions: Iterable[int] | None = None) -> dict[int, int]:
    """Next offset to read per partition, from the complete batches in `output`.

    Deletes leftover temporary files and the parts of batches a crash left incomplete (only for
    `partitions`, the ones this sink owns now; all when None).
    """
    owned = None if partitions is None else set(partitions)
    batches: dict[tuple[int, int, int], list[tuple[Path, FileName]]] = defaultdict(list)
    for path in output.rglob("*"):
        target = temporary_target(path.name)
        temporary = target is not None
        name = parse_file_name(target if temporary else path.name)
        if not name or name.topic != topic or (owned is not None and name.partition not in owned):
            continue  # not ours: another topic, or a partition another sink replica writes
        if temporary:
            path.unlink(missing_ok=True)  # a write the crash interrupted before its rename
        else:
            batches[name.batch].append((path, name))
    resume: dict[int, int] = {}
    for (partition, _, last), files in sorted(batches.items()):
        if len({n.part for _, n in files}) < files[0][1].parts:
            log.warning(
                "%s[%d]: batch %s..%s has %d of %d files (a crash cut it short); deleting them and re-reading it",
                topic, partition, files[0][1].first, last, len(files), files[0][1].parts,
            )  # fmt: skip
            for path, _ in files:
                path.unlink(missing_ok=True)
            continue
        resume[partition] = max(resume.get(partition, 0), last + 1)
    return resume


# ---- rows and files --------------------------------------------------------------------------


@functools.cache
def schema():  # -> pyarrow.Schema
    """The columns of every sink file: each field of `ScoredTweet` in its order, then the sink's own
    (fixed, so files from any day read as one table)."""
    import pyarrow as pa

    event = [(name, _arrow_type(f.annotation)) for name, f in ScoredTweet.model_fields.items()]
    return pa.schema([
        *event, ("extra", pa.string()), ("error", pa.string()), ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()), ("kafka_timestamp", pa.timestamp("us", tz="UTC")),
    ])  # fmt: skip


def _arrow_type(annotation):  # -> pyarrow.DataType
    import pyarrow as pa

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _arrow_type(args[0])  # X | None: every column is nullable (error rows fill few)
    if origin is dict:
        return pa.map_(_arrow_type(args[0]), _arrow_type(args[1]))
    simple = {str: pa.string(), float: pa.float64(), int: pa.int64(), bool: pa.bool_(),
              datetime: pa.timestamp("us", tz="UTC")}  # fmt: skip
    if annotation not in simple:
        raise TypeError(
            f"no Parquet type for a ScoredTweet field of type {annotation!r}; add one in stream/sink/writer.py"
        )
    return simple[annotation]


def to_row(record) -> dict:
    """One file row from one aiokafka record of the scored topic; one that cannot be a valid row
    keeps its raw text and gets `error` (never an exception)."""
    where = {"kafka_partition": record.partition, "kafka_offset": record.offset}
    try:
        return {**_event_row(record), **where}
    except ValueError as exc:
        reason = str(exc)
    log.warning("%s[%d]@%d: %s (kept with error set)", record.topic, record.partition, record.offset, reason)
    kafka_time = _kafka_time(record.timestamp)
    return {
        **where, "kafka_timestamp": kafka_time, "scored_at": kafka_time, "error": reason,
        "id": record.key.decode("utf-8", errors="replace") if record.key else None,
        "text": (record.value or b"").decode("utf-8", errors="replace"),
    }  # fmt: skip


def _event_row(record) -> dict:
    """The row of a valid scored event; ValueError with the reason when it cannot be one."""
    try:
        event = ScoredTweet.model_validate_json(record.value or b"")
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(
            f"not a scored event: {'.'.join(map(str, first['loc'])) or 'value'}: {first['msg']}"
        ) from None
    kafka_time = _kafka_time(record.timestamp)
    if kafka_time is None:
        raise ValueError(f"the Kafka timestamp {record.timestamp} ms is out of range")
    try:
        extra = orjson.dumps(event.model_extra).decode() if event.model_extra else None
    except orjson.JSONEncodeError as exc:  # an integer over 64 bits, for one
        raise ValueError(f"an extra field cannot be stored as JSON: {exc}") from None
    row = event.model_dump(include=KNOWN_FIELDS)
    row.update(scored_at=_in_utc(event.scored_at), kafka_timestamp=kafka_time, extra=extra, error=None)
    return row


def _in_utc(at: datetime) -> datetime:
    if at.tzinfo is None:  # a time without an offset is taken as UTC, as the events do
        return at.replace(tzinfo=UTC)
    try:
        return at.astimezone(UTC)
    except OverflowError:  # year 1 at +01:00 has no UTC form
        raise ValueError(f"scored_at {at.isoformat()} is out of range once converted to UTC") from None


def _kafka_time(milliseconds: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(milliseconds / 1000, UTC)
    except (OverflowError, ValueError, OSError):  # past year 9999, or before year 1
        return None


def hour_of(row: dict) -> tuple[str, str]:
    """(dt, hour) folder values of a row: the UTC hour of its `scored_at` (1970-01-01, 00 without one)."""
    at = row["scored_at"] or _NO_TIME
    return at.date().isoformat(), f"{at.hour:02d}"


def write_batch(output: Path, topic: str, partition: int, rows: Sequence[dict]) -> list[Path]:
    """Write one partition's consecutive rows as one batch (a file per hour); returns the files."""
    by_hour: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        by_hour[hour_of(row)].append(row)
    first, last = rows[0]["kafka_offset"], rows[-1]["kafka_offset"]
    written = []
    for part, ((dt, hour), hour_rows) in enumerate(sorted(by_hour.items()), start=1):
        name = FileName(topic, partition, first, last, part, len(by_hour))
        table = _to_table(hour_rows)
        written.append(_write_atomically(output / f"dt={dt}" / f"hour={hour}", name.render(), table))
    return written


def _to_table(rows: Sequence[dict]):  # -> pyarrow.Table
    import pyarrow as pa

    # Column lists convert a few times faster than row dicts; a map column takes (key, value) pairs.
    columns = {name: [row.get(name) for row in rows] for name in schema().names}
    for column in schema():
        if pa.types.is_map(column.type):
            columns[column.name] = [list(m.items()) if m else None for m in columns[column.name]]
    return pa.Table.from_pydict(columns, schema=schema())


def _write_atomically(folder: Path, name: str, table) -> Path:
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / temporary_name(name)
    with open(tmp, "wb") as f:
        pq.write_table(table, f, compression="zstd")
        f.flush()
        os.fsync(f.fileno())
    final = folder / name
    os.replace(tmp, final)  # atomic: readers and restarts see the whole file or none
    _fsync_dir(folder)
    return final


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- the consumer loop -------------------------------------------------------------------------


@dataclass
class _Buffer:
    """A partition this sink owns and has sought: its rows not yet written, and where they go on."""

    next_offset: int  # the first offset neither in a file nor in `rows`
    rows: list[dict] = field(default_factory=list)
    since: float = 0.0  # loop time of the oldest buffered row


class ParquetSink:
    """Consumes the scored topic and writes batches of rows; see the module docstring."""

    def __init__(self, kafka: KafkaSettings, settings: SinkSettings) -> None:
        self.kafka, self.settings = kafka, settings
        self.topic = kafka.scored_topic
        self.buffers: dict[int, _Buffer] = {}  # the partitions owned and sought
        self.rows_written = 0
        self.consumer = None
        # Writes and rebalances take turns: see the module docstring.
        self._turn = asyncio.Lock()
        self._listener_failed: BaseException | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Read and write until `stop` is set, then write what is buffered."""
        self.settings.output.mkdir(parents=True, exist_ok=True)
        self.consumer = await self._start_consumer()
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=500, max_records=10_000)
                if self._listener_failed:  # aiokafka only logs a listener's exception
                    raise self._listener_failed
                self._buffer(batches)
                await self._flush(due_only=True)
            await self._flush(due_only=False)
        finally:
            await self.consumer.stop()

    async def _start_consumer(self):
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap, group_id=self.settings.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
            **self.kafka.aiokafka_security(),
        )  # fmt: skip
        try:
            await asyncio.wait_for(consumer.start(), self.settings.startup_timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            await consumer.stop()
            raise SentistreamError(self.kafka.unreachable(f" ({type(exc).__name__})")) from None
        consumer.subscribe([self.topic], listener=_Rebalance(self))
        return consumer

    def _buffer(self, batches: dict) -> None:
        now = asyncio.get_running_loop().time()
        for tp, records in batches.items():
            buffer = self.buffers.get(tp.partition)
            if buffer is None:
                continue  # fetched before this sink sought the partition (it comes again), or after it left
            fresh = [r for r in records if r.offset >= buffer.next_offset]
            if not fresh:
                continue
            if not buffer.rows:
                buffer.since = now
            buffer.rows.extend(to_row(r) for r in fresh)
            buffer.next_offset = fresh[-1].offset + 1

    async def _flush(self, due_only: bool) -> None:
        async with self._turn:
            written = await self._write(self.buffers, due_only)
        await self._commit(written)

    async def _write(self, partitions: Iterable[int], due_only: bool) -> dict[int, int]:
        """Write the buffered rows of `partitions` (only those due when `due_only`); {partition: next offset}."""
        now, written = asyncio.get_running_loop().time(), {}
        for partition in list(partitions):
            buffer = self.buffers.get(partition)
            if not buffer or not buffer.rows:
                continue
            full = len(buffer.rows) >= self.settings.flush_rows
            old = now - buffer.since >= self.settings.flush_interval_s
            if due_only and not (full or old):
                continue
            rows, buffer.rows = buffer.rows, []
            await asyncio.to_thread(write_batch, self.settings.output, self.topic, partition, rows)
            self.rows_written += len(rows)
            first, last = rows[0]["kafka_offset"], rows[-1]["kafka_offset"]
            log.info("%s[%d]: wrote offsets %d..%d (%d rows)", self.topic, partition, first, last, len(rows))
            written[partition] = last + 1
        return written

    async def _commit(self, offsets: dict[int, int]) -> None:
        # For lag dashboards only: a restart reads its position from the files, never from here.
        if not offsets:
            return
        try:
            await self.consumer.commit({TopicPartition(self.topic, p): o for p, o in offsets.items()})
        except KafkaError as exc:
            log.info("could not commit %s %s to the group (%r); harmless", self.topic, offsets, exc)

    async def on_assigned(self, assigned) -> None:
        """Seek each partition to the offset after its last complete batch in the files."""
        partitions = sorted(tp.partition for tp in assigned if tp.topic == self.topic)
        async with self._turn:
            resume = await asyncio.to_thread(resume_offsets, self.settings.output, self.topic, partitions)
            for partition in partitions:
                # Offset 0 where no file is: before the log start, the consumer resets to it.
                offset = resume.get(partition, 0)
                self.consumer.seek(TopicPartition(self.topic, partition), offset)
                self.buffers[partition] = _Buffer(next_offset=offset)
        log.info("%s: resuming from the files at %s", self.topic,
                 {p: resume.get(p, "beginning") for p in partitions})  # fmt: skip

    async def on_revoked(self, revoked) -> None:
        """Write what is buffered for partitions another sink replica is about to own."""
        partitions = [tp.partition for tp in revoked if tp.topic == self.topic]
        async with self._turn:
            try:
                written = await self._write(partitions, due_only=False)
            finally:
                for partition in partitions:
                    self.buffers.pop(partition, None)
        await self._commit(written)

    async def listen(self, call: Awaitable[None]) -> None:
        """Run a rebalance callback; its exception stops `run` (aiokafka would only log it)."""
        try:
            await call
        except Exception as exc:
            log.exception("%s: the rebalance listener failed; stopping", self.topic)
            self._listener_failed = exc


class _Rebalance(ConsumerRebalanceListener):
    """Forwards partition assignment changes to the sink (aiokafka awaits these coroutines)."""

    def __init__(self, sink: ParquetSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked) -> None:
        await self.sink.listen(self.sink.on_revoked(revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        await self.sink.listen(self.sink.on_assigned(assigned))


async def run_sink(kafka: KafkaSettings, settings: SinkSettings) -> int:
    """Run until SIGTERM/SIGINT, then write the buffered rows; returns the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    sink = ParquetSink(kafka, settings)
    await sink.run(stop)
    log.info("sink stopped after writing %d rows to %s", sink.rows_written, settings.output)
    return 0
