"""The Parquet sink: file names carry the offsets, crashes leave no half batch, kill -9 loses nothing.

The end-to-end test produces 50,000 scored events straight to a topic on the real broker (no
worker), kills the sink with SIGKILL while it writes, restarts it, and reads every file back:
each event is there exactly once.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from stream.events import ScoredTweet
from stream.settings import KafkaSettings
from stream.sink import (
    FileName,
    ParquetSink,
    SinkSettings,
    parse_file_name,
    resume_offsets,
    schema,
    temporary_name,
    temporary_target,
    to_row,
    write_batch,
)
from tests.stream.worker_process import create_topics, mark_the_end, produce

SENTISTREAM = str(Path(sys.executable).parent / "sentistream")
BASE = datetime(2026, 11, 30, 5, 50, tzinfo=UTC)


def scored_value(i: int, minutes: float = 0.0, event_id: str | None = None) -> bytes:
    """A valid `tweets-scored` event whose scored_at is `minutes` after BASE."""
    label = ("negative", "neutral", "positive")[i % 3]
    at = (BASE + timedelta(minutes=minutes)).isoformat()
    return orjson.dumps({
        "id": event_id or f"e-{i}", "text": f"event {i} #tag{i % 5}", "label": label, "score": 0.9,
        "scores": {"negative": 0.05, "neutral": 0.05, "positive": 0.9}, "model": "tiny@1",
        "scored_at": at, "latency_ms": 12.5, "lang": "en", "retweets": i,
    })  # fmt: skip


def record(
    i: int, offset: int, value: bytes, partition: int = 0, timestamp: int = 1_700_000_000_000
) -> SimpleNamespace:
    """What aiokafka hands the sink for one message."""
    return SimpleNamespace(
        topic="t",
        partition=partition,
        offset=offset,
        timestamp=timestamp,
        key=f"e-{i}".encode(),
        value=value,
    )


# Records that once stopped the sink for good (it resumed into the same record):
# value, CreateTime, what the row's error says.
HOSTILE = {
    "an integer over 64 bits in an extra field": (
        scored_value(1)[:-1] + b', "big": ' + str(2**70).encode() + b"}",
        1_700_000_000_000,
        "an extra field cannot be stored as JSON",
    ),
    "scored_at in year 1 with an offset": (
        scored_value(2).replace(BASE.isoformat().encode(), b"0001-01-01T00:30:00+01:00"),
        1_700_000_000_000,
        "out of range once converted to UTC",
    ),
    "a producer CreateTime past year 9999": (scored_value(3), 2**62, "Kafka timestamp"),
    "invalid JSON": (b'{"id": "e-4", "text": "cut', 1_700_000_000_000, "not a scored event"),
}


def test_file_names_round_trip() -> None:
    name = FileName("tweets-scored", 3, 120, 4_999, 2, 3)
    assert parse_file_name(name.render()) == name
    assert parse_file_name("notes.txt") is None
    assert parse_file_name(".inprogress-abc-" + name.render()) is None  # an older sink's temporary file
    assert parse_file_name(temporary_name(name.render())) is None
    assert temporary_target(temporary_name(name.render())) == name.render()
    assert not fnmatch.fnmatch(temporary_name(name.render()), "*.parquet")  # what DuckDB's glob reads


def test_rows_keep_extra_fields_and_invalid_records(tmp_path: Path) -> None:
    good = to_row(record(1, 0, scored_value(1)))
    assert good["id"] == "e-1" and good["error"] is None and orjson.loads(good["extra"]) == {"retweets": 1}
    bad = to_row(record(2, 1, b"not json at all"))
    assert bad["error"].startswith("not a scored event") and bad["text"] == "not json at all"
    assert bad["id"] == "e-2"


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_record_becomes_a_row_with_its_error_and_its_neighbours_are_written(
    name: str, tmp_path: Path
) -> None:
    value, timestamp, reason = HOSTILE[name]
    rows = [
        to_row(record(0, 0, scored_value(0))),
        to_row(record(9, 1, value, timestamp=timestamp)),
        to_row(record(2, 2, scored_value(2, minutes=90))),
    ]
    write_batch(tmp_path, "t", 0, rows)
    written = sorted(read_rows(tmp_path), key=lambda r: r["kafka_offset"])
    assert [r["kafka_offset"] for r in written] == [0, 1, 2]
    assert written[0]["error"] is None and written[2]["error"] is None
    assert reason in written[1]["error"] and written[1]["text"] == value.decode()  # the raw record, kept


def test_the_columns_are_the_event_fields_so_model_version_is_kept(tmp_path: Path) -> None:
    assert [n for n in schema().names if n in ScoredTweet.model_fields] == list(ScoredTweet.model_fields)
    event = orjson.loads(scored_value(1)) | {"model_version": "tiny@1+0123456789ab", "truncated": True}
    write_batch(tmp_path, "t", 0, [to_row(record(1, 0, orjson.dumps(event)))])
    (row,) = read_rows(tmp_path)
    assert row["model_version"] == "tiny@1+0123456789ab" and row["truncated"] is True
    assert row["scores"] == list(event["scores"].items()) and orjson.loads(row["extra"]) == {"retweets": 1}


def test_a_batch_cut_short_by_a_crash_is_deleted_and_read_again(tmp_path: Path) -> None:
    rows = [to_row(record(i, 100 + i, scored_value(i, minutes=i * 10))) for i in range(3)]  # 2 hours
    first = write_batch(tmp_path, "t", 0, rows)
    assert len(first) == 2
    assert resume_offsets(tmp_path, "t") == {0: 103}
    later = [to_row(record(i, 100 + i, scored_value(i, minutes=i * 10))) for i in range(3, 9)]
    second = write_batch(tmp_path, "t", 0, later)
    assert len(second) == 2
    second[1].unlink()  # the crash came between the two renames of the second batch
    (tmp_path / f".inprogress-{'a' * 32}-t+0+1+2+1of1.parquet").write_bytes(b"half a file")
    (tmp_path / temporary_name("t+0+1+2+1of1.parquet")).write_bytes(b"half a file")
    other = tmp_path / f".inprogress-{'b' * 32}-t+1+5+9+1of1.parquet"  # partition 1: not ours below
    other.write_bytes(b"another replica's write")
    assert resume_offsets(tmp_path, "t", partitions=[0]) == {0: 103}  # back to the end of the first batch
    assert not second[0].exists()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        [other.name, *(p.name for p in first)]
    )


def read_ids(output: Path) -> list[str]:
    import pyarrow.dataset as ds

    if not any(not path.name.startswith(".") for path in output.rglob("*.parquet")):
        return []  # none finished yet (the dataset ignores the hidden in-progress files)
    return (
        ds.dataset(output, format="parquet", partitioning="hive").to_table(columns=["id"])["id"].to_pylist()
    )


def written_ids(output: Path) -> set[str]:
    """The ids in the finished files (empty while a file is renamed under the reader)."""
    try:
        return set(read_ids(output))
    except OSError:
        return set()


def count_rows(output: Path) -> int:
    """Rows in the finished files, from their footers (cheap enough to poll while the sink runs)."""
    import pyarrow.parquet as pq

    total = 0
    for path in output.rglob("*.parquet"):
        if path.name.startswith("."):
            continue
        try:
            total += pq.read_metadata(path).num_rows
        except OSError:  # deleted between listing and reading (restart cleanup)
            return -1
    return total


def start_sink(broker_url: str, topic: str, output: Path, log: Path) -> subprocess.Popen:
    args = [
        SENTISTREAM, "sink", "--broker", broker_url, "--scored-topic", topic, "--output", str(output),
        "--group-id", f"{topic}-sink", "--flush-rows", "3000", "--flush-interval-s", "0.5",
    ]  # fmt: skip
    with open(log, "ab") as f:
        return subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env={**os.environ})


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(f"sink exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_kill_9_mid_run_then_restart_writes_every_event_exactly_once(
    broker_url, topic_name, tmp_path
) -> None:
    total = 50_000
    create_topics(broker_url, [topic_name], partitions=2)
    # scored_at spans three hours, so batches are split into several files (several renames each).
    messages = [(f"e-{i}".encode(), scored_value(i, minutes=i * 150 / total)) for i in range(total)]
    produce(broker_url, topic_name, messages)
    # A sink takes each partition in order: once these are written, so is every event before them.
    markers = mark_the_end(broker_url, topic_name, 2, value=lambda key: scored_value(0, event_id=key))
    output, log = tmp_path / "history", tmp_path / "sink.log"

    first = start_sink(broker_url, topic_name, output, log)
    wait_for(lambda: count_rows(output) > 0, 60, "the first file", first, log)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    before = count_rows(output)

    second = start_sink(broker_url, topic_name, output, log)
    try:
        wait_for(lambda: markers <= written_ids(output), 90, "the end markers", second, log)
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0, log.read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
    ids = Counter(i for i in read_ids(output) if i not in markers)
    assert 0 < before < total, f"the kill should land mid-run; {before} rows were written before it"
    assert len(ids) == total and set(ids) == {f"e-{i}" for i in range(total)}
    assert max(ids.values()) == 1, [k for k, n in ids.items() if n > 1][:10]
    hours = {p.parent.name for p in output.rglob("*.parquet")}
    assert hours == {"hour=05", "hour=06", "hour=07", "hour=08"}


def read_rows(output: Path) -> list[dict]:
    """Every row of every finished file, with the file it came from."""
    import pyarrow.parquet as pq

    rows = []
    for path in sorted(output.rglob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows.append({**row, "file": parse_file_name(path.name)})
    return rows


async def drain(
    kafka: KafkaSettings, settings: SinkSettings, expected: int, settle_s: float = 3.0
) -> ParquetSink:
    """Run a sink until it has written `expected` rows and `settle_s` more seconds (for any extra), then stop it."""
    sink, stop = ParquetSink(kafka, settings), asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while sink.rows_written < expected and loop.time() < deadline:
        if task.done():
            task.result()  # the sink stopped: its exception fails the test
        await asyncio.sleep(0.1)
    await asyncio.sleep(settle_s)  # rows read twice would be written by now
    stop.set()
    await asyncio.wait_for(task, 30)
    return sink


def produce_with_times(broker_url: str, topic: str, messages: list[tuple[bytes, bytes, int]]) -> None:
    """Send (key, value, CreateTime ms) messages to partition 0, in order."""
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker_url.removeprefix("kafka://"))
        await producer.start()
        try:
            for key, value, timestamp in messages:
                await producer.send_and_wait(topic, value, key=key, partition=0, timestamp_ms=timestamp)
        finally:
            await producer.stop()

    asyncio.run(send())


def create_topic_taking_any_time(broker_url: str, topic: str) -> None:
    """One partition; CreateTimes far in the future accepted (Kafka 4 refuses those by default,
    older brokers and topics configured so do not)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker_url.removeprefix("kafka://"))
        await admin.start()
        try:
            config = {"message.timestamp.after.max.ms": str(2**63 - 1)}
            await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=config)])
        finally:
            await admin.close()

    asyncio.run(create())


def test_hostile_records_on_the_topic_do_not_stop_the_sink(broker_url, topic_name, tmp_path) -> None:
    create_topic_taking_any_time(broker_url, topic_name)
    messages = [(b"e-0", scored_value(0), 1_700_000_000_000)]
    messages += [(f"h-{i}".encode(), value, ts) for i, (value, ts, _) in enumerate(HOSTILE.values())]
    messages += [(b"e-5", scored_value(5), 1_700_000_000_000)]
    produce_with_times(broker_url, topic_name, messages)
    kafka = KafkaSettings(broker=broker_url, scored_topic=topic_name)
    settings = SinkSettings(output=tmp_path, group_id=f"{topic_name}-sink", flush_interval_s=0.3)
    asyncio.run(drain(kafka, settings, len(messages), settle_s=0.5))
    rows = sorted(read_rows(tmp_path), key=lambda r: r["kafka_offset"])
    assert [r["kafka_offset"] for r in rows] == list(range(len(messages)))
    assert [bool(r["error"]) for r in rows] == [False, True, True, True, True, False], rows
