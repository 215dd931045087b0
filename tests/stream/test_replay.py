"""`sentistream replay` and `stream.feeders.replay`: scheduling and loading without a broker, replaying with one."""

from __future__ import annotations

import asyncio
import csv
import importlib.resources
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tqdm import tqdm

from sentistream.cli import main
from sentistream.errors import UsageError
from stream.data import make_sample
from stream.feeders.replay import (
    TICK_S,
    ReplayResult,
    ReplaySettings,
    check_options,
    load_rows,
    planned_rows,
    pump,
)
from stream.settings import KafkaSettings
from tests.kafka_reader import count_records, read_topic
from training.datasets import load_dataset


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def frame_of(count: int, **columns: list) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"text {i}" for i in range(count)], **columns})


async def create_topic(broker_url: str, topic: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=KafkaSettings(broker=broker_url).bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


# ---- schedule -----------------------------------------------------------------------------------


def test_rate_spaces_messages_evenly_from_the_start():
    due = [d for d, _ in planned_rows(frame_of(5), ReplaySettings(rate=4))]
    assert due == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_loop_with_limit_cycles_the_file_and_never_repeats_an_id():
    frame = frame_of(3, id=["a", "b", "c"], label=["positive", None, "neutral"])
    rows = [r for _, r in planned_rows(frame, ReplaySettings(loop=True, limit=7))]
    assert [r["text"] for r in rows] == ["text 0", "text 1", "text 2"] * 2 + ["text 0"]
    assert [r["id"] for r in rows] == ["a", "b", "c", "a#1", "b#1", "c#1", "a#2"]
    assert "label" not in rows[1]  # a missing cell is left out, not sent as null


def test_limit_without_loop_stops_early_and_no_loop_stops_at_the_end():
    assert len(list(planned_rows(frame_of(10), ReplaySettings(limit=4)))) == 4
    assert len(list(planned_rows(frame_of(10), ReplaySettings(limit=40)))) == 10


def test_shuffle_is_seeded_and_reshuffles_each_pass():
    settings = ReplaySettings(shuffle=True, seed=7, loop=True, limit=40)
    texts = [r["text"] for _, r in planned_rows(frame_of(20), settings)]
    assert texts == [r["text"] for _, r in planned_rows(frame_of(20), settings)]
    assert sorted(texts[:20]) == sorted(texts[20:]) == sorted(f"text {i}" for i in range(20))
    assert texts[:20] != texts[20:] and texts[:20] != [f"text {i}" for i in range(20)]


def test_speedup_follows_created_at_gaps_and_sends_late_rows_at_once():
    stamps = ["2024-01-01T00:00:00Z", "2024-01-01T00:00:10Z", "2024-01-01T00:00:05Z", "2024-01-01T00:00:30Z"]
    due = [d for d, _ in planned_rows(frame_of(4, created_at=stamps), ReplaySettings(speedup=10))]
    assert due == pytest.approx([0.0, 1.0, 1.0, 3.0])


def test_speedup_loop_continues_the_clock_after_each_pass():
    stamps = ["2024-01-01T00:00:00Z", "2024-01-01T00:00:10Z"]
    settings = ReplaySettings(speedup=10, loop=True, limit=4)
    due = [d for d, _ in planned_rows(frame_of(2, created_at=stamps), settings)]
    assert due == pytest.approx([0.0, 1.0, 2.0, 3.0])


def test_speedup_without_timestamps_names_the_columns():
    with pytest.raises(UsageError, match="only: text; use --rate"):
        list(planned_rows(frame_of(3), ReplaySettings(speedup=2)))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (ReplaySettings(rate=5, speedup=2), "pass only one"),
        (ReplaySettings(speedup=2, shuffle=True), "shuffle"),
    ],
)
def test_contradicting_flags_are_rejected(settings, message):
    with pytest.raises(UsageError, match=message):
        check_options(settings)


# ---- loading ------------------------------------------------------------------------------------


def test_a_missing_file_is_one_line_naming_it(tmp_path):
    with pytest.raises(UsageError, match=r"no such file or folder: .*nope\.csv"):
        load_rows(tmp_path / "nope.csv", ReplaySettings(), ReplayResult())


def test_a_file_without_a_text_column_names_the_columns_it_has(tmp_path):
    path = write_csv(tmp_path / "x.csv", [{"a": "1", "b": "2"}], ["a", "b"])
    with pytest.raises(UsageError, match="columns: a, b"):
        load_rows(path, ReplaySettings(), ReplayResult())


def test_labels_travel_as_true_label_and_malformed_rows_are_counted(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('text,label\nfine,positive\n"a","b","c"\nalso fine,negative\nx,y,z,w\nok,neutral\n')
    result = ReplayResult()
    frame = load_rows(path, ReplaySettings(), result)
    assert frame["text"].tolist() == ["fine", "also fine", "ok"]
    assert frame["true_label"].tolist() == ["positive", "negative", "neutral"]
    assert (result.malformed, result.malformed_lines) == (2, [3, 5])
    with pytest.raises(UsageError, match=r"2 malformed rows \(first at lines 3, 5\).*--strict"):
        load_rows(path, ReplaySettings(strict=True), ReplayResult())


def test_rate_zero_or_negative_is_rejected_before_anything_runs(tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", [{"text": "x"}], ["text"])
    assert main(["replay", str(path), "--rate", "0"]) == 2
    assert main(["replay", str(path), "--rate", "-5"]) == 2
    assert "--rate" in capsys.readouterr().err


# ---- the shipped sample --------------------------------------------------------------------------


def test_the_sample_ships_with_the_package_and_covers_tweet_features():
    path = importlib.resources.files("stream") / "data" / "sample_tweets.csv"
    dataset = load_dataset(Path(str(path)))
    texts = dataset.frame["text"]
    assert len(texts) >= 300 and dataset.report.rows_kept == dataset.report.rows_read
    assert dataset.frame["label"].value_counts().min() >= 100
    assert set(dataset.labels) == {"negative", "neutral", "positive"}
    for feature in (r"#\w", r"@\w", r"https?://", "[\U0001f300-\U0001faff]", r"\b(?:not|never|n't)\b"):
        assert texts.str.contains(feature, case=False).sum() >= 20, feature


def test_the_sample_is_what_its_generator_writes(tmp_path):
    make_sample.write(make_sample.generate(), tmp_path / "again.csv")
    shipped = Path(str(importlib.resources.files("stream") / "data" / "sample_tweets.csv"))
    assert (tmp_path / "again.csv").read_bytes() == shipped.read_bytes()


# ---- against the real broker ---------------------------------------------------------------------


def test_replaying_10000_rows_puts_exactly_those_texts_in_order_per_partition(
    broker_url, topic_name, tmp_path
):
    labels = ["negative", "neutral", "positive"]
    rows = [
        {"text": f'tweet {i} \U0001f600 #{i % 7}, "quoted"', "label": labels[i % 3]} for i in range(10_000)
    ]
    path = write_csv(tmp_path / "big.csv", rows, ["text", "label"])
    asyncio.run(create_topic(broker_url, topic_name, partitions=3))

    assert main(["replay", str(path), "--broker", broker_url, "--topic", topic_name, "--no-progress"]) == 0

    records = read_topic(broker_url, topic_name, 10_000, idle_s=0)
    values = [json.loads(r.value) for r in records]
    assert sorted(v["text"] for v in values) == sorted(r["text"] for r in rows)
    assert all(r.key.decode() == v["id"] for r, v in zip(records, values, strict=True))
    position = {row["text"]: i for i, row in enumerate(rows)}
    assert all(rows[position[v["text"]]]["label"] == v["true_label"] for v in values)
    by_partition: dict[int, list[int]] = {}
    for record, value in zip(records, values, strict=True):
        by_partition.setdefault(record.partition, []).append(position[value["text"]])
    assert len(by_partition) == 3
    assert all(order == sorted(order) for order in by_partition.values())


def test_replay_limit_and_loop_through_the_cli(broker_url, topic_name, tmp_path, capsys):
    path = write_csv(
        tmp_path / "few.csv", [{"text": f"row {i}", "label": "neutral"} for i in range(4)], ["text", "label"]
    )
    args = ["replay", str(path), "--broker", broker_url, "--topic", topic_name, "--no-progress"]
    assert main([*args, "--loop", "--limit", "10"]) == 0
    assert "sent 10 messages" in capsys.readouterr().err
    values = [json.loads(r.value) for r in read_topic(broker_url, topic_name, 10, idle_s=0)]
    assert [v["text"] for v in values] == [f"row {i % 4}" for i in range(10)]
    assert len({v["id"] for v in values}) == 10


def test_replay_reports_malformed_rows_and_sends_the_rest(broker_url, topic_name, tmp_path, capsys):
    path = tmp_path / "messy.csv"
    path.write_text("text,label\ngood 1,positive\nbad,row,extra\ngood 2,negative\n,neutral\ngood 3,neutral\n")
    args = ["replay", str(path), "--broker", broker_url, "--topic", topic_name, "--no-progress"]
    assert main([*args, "--strict"]) == 2
    assert "1 malformed rows (first at lines 3)" in capsys.readouterr().err
    assert main(args) == 0
    assert "sent 3 messages" in capsys.readouterr().err
    texts = [json.loads(r.value)["text"] for r in read_topic(broker_url, topic_name, 3, idle_s=0)]
    assert texts == ["good 1", "good 2", "good 3"]


def test_ctrl_c_stops_a_replay_flushes_it_and_exits_130(broker_url, topic_name, tmp_path):
    path = write_csv(tmp_path / "r.csv", [{"text": f"r{i}"} for i in range(50)], ["text"])
    command = [sys.executable, "-m", "sentistream.cli", "replay", str(path), "--rate", "200", "--loop"]
    process = subprocess.Popen(
        [*command, "--no-progress", "--broker", broker_url, "--topic", topic_name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert read_topic(broker_url, topic_name, 1, idle_s=0)  # it is sending: now interrupt it
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)  # a bound against a hang, not a speed claim
    finally:
        process.kill()
    assert process.returncode == 130, err
    sent = int(re.fullmatch(r"interrupted: sent (\d+) messages .*\n", err)[1])
    assert count_records(broker_url, topic_name) == sent  # every reported message, and no others
    values = [json.loads(r.value) for r in read_topic(broker_url, topic_name, sent, idle_s=0)]
    assert len({v["id"] for v in values}) == sent


# ---- pacing, on a simulated clock ---------------------------------------------------------------


class SimulatedTime:
    """A clock that moves only when the pacer sleeps, each wake-up `late_s` later than asked."""

    def __init__(self, late_s: float = 0.0) -> None:
        self.now, self.late_s = 0.0, late_s

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + self.late_s


class SendTimes:
    """Stands in for the producer: the simulated time at which each message was handed over."""

    def __init__(self, time: SimulatedTime) -> None:
        self.time, self.at = time, []

    async def send_encoded(self, messages) -> None:
        self.at.extend([self.time.now] * len(messages))


def paced_send_times(count: int, rate: float, late_s: float = 0.0) -> list[float]:
    time = SimulatedTime(late_s)
    producer = SendTimes(time)
    settings = ReplaySettings(rate=rate, limit=count, loop=True)
    rows = planned_rows(frame_of(10), settings)
    bar = tqdm(disable=True)
    asyncio.run(pump(producer, rows, settings, ReplayResult(), asyncio.Event(), bar, time.clock, time.sleep))
    return producer.at


@pytest.mark.parametrize("rate", [7, 1000, 20_000])
def test_each_message_goes_out_at_its_slot_of_the_rate(rate):
    """Message i is due at i/rate; it leaves at most one tick early (batched with its neighbours)
    and never late, so the rate over any span is the one asked for, not roughly it."""
    at = paced_send_times(2000, rate)
    assert len(at) == 2000
    for i, sent in enumerate(at):
        assert i / rate - TICK_S - 1e-9 <= sent <= i / rate, (i, sent)


def test_late_wake_ups_are_caught_up_not_accumulated():
    """A loaded machine wakes the pacer late; each message is then at most one wake-up late and
    the schedule does not slide (a pacer that sleeps 1/rate between sends would drift by 2000 x)."""
    late = 0.003
    at = paced_send_times(2000, 1000, late_s=late)
    for i, sent in enumerate(at):
        assert i / 1000 - TICK_S - 1e-9 <= sent <= i / 1000 + late + 1e-9, (i, sent)
