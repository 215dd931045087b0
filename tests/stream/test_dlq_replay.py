"""`sentistream dlq replay`: chosen dead letters back to the input topic, each at most once."""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from stream.events import DeadLetter
from stream.feeders.dlq_replay import DlqReplaySettings, choose, ledger_key, parse_since
from tests.kafka_reader import read_topic
from tests.stream.worker_process import Topics, create_topics, produce

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def letter(
    offset: int, stage: str = "validate", error: str = "text is missing", original: bytes = b"{}", **kw
) -> bytes:
    encoding = "utf-8"
    try:
        text = original.decode("utf-8")
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(original).decode(), "base64"
    event = DeadLetter(
        original=text, encoding=encoding, error=error, stage=stage, topic="tweets", partition=0, offset=offset,
        key=f"k{offset}", failed_at=kw.get("failed_at", NOW),
    )  # fmt: skip
    return event.model_dump_json().encode()


def test_choose_filters_by_stage_reason_and_time_and_skips_replayed_cut_and_unreadable() -> None:
    records = [
        (0, 0, letter(0, "decode", "value is not JSON")),
        (0, 1, letter(1, "validate", "text is missing")),
        (0, 2, letter(2, "validate", "text is missing", failed_at=NOW - timedelta(days=2))),
        (0, 3, letter(3, "validate", "text is missing (original cut to its first 10 characters to fit)")),
        (1, 0, letter(10, "validate", "text is missing")),
        (1, 1, b"not a dead letter"),
    ]
    settings = DlqReplaySettings(stage="validate", reason="missing", since=NOW - timedelta(hours=1))
    plan = choose(records, {ledger_key(1, 0)}, settings)
    assert [(p, o) for p, o, _ in plan.chosen] == [(0, 1)]
    assert (plan.already, plan.cut, plan.unreadable, plan.other) == (1, 1, 1, 2)


def test_since_takes_iso_times_and_durations() -> None:
    assert parse_since("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_since("2026-12-06T08:00:00", NOW) == datetime(2026, 12, 6, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_since("yesterday", NOW)


def replay_cli(broker_url: str, topics: Topics, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sentistream", "dlq", "replay", "--broker", broker_url,
         "--topic", topics.tweets, "--dlq-topic", topics.dlq, *argv],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_replay_sends_each_chosen_original_once_with_its_provenance(broker_url) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.tweets, topics.dlq], partitions=1)
    binary = b"\xff\xfe not utf-8"
    produce(
        broker_url,
        topics.dlq,
        [
            (b"k0", letter(0, "validate", "text is missing", b'{"id": "k0"}')),
            (b"k1", letter(1, "decode", "value is not UTF-8", binary)),
            (b"k2", letter(2, "inference", "the engine failed", b'{"id": "k2", "text": "hi"}')),
            (b"k3", letter(3, "validate", "text is missing (original cut to its first 9 characters to fit)")),
        ],
    )
    dry = replay_cli(broker_url, topics, "--stage", "validate", "--dry-run")
    assert dry.returncode == 0 and "1 dead letters to replay (1 validate)" in dry.stdout, (
        dry.stdout + dry.stderr
    )
    assert "1 with a cut original" in dry.stdout
    assert read_topic(broker_url, topics.tweets, 0, timeout=5, idle_s=1) == [], "a dry run sends nothing"

    first = replay_cli(broker_url, topics, "--reason", "not UTF-8")
    assert first.returncode == 0 and "replayed 1 to" in first.stdout, first.stdout + first.stderr
    everything = replay_cli(broker_url, topics)
    assert everything.returncode == 0 and "replayed 2 to" in everything.stdout, everything.stdout
    assert "1 replayed before" in everything.stdout
    again = replay_cli(broker_url, topics)
    assert again.returncode == 0 and "0 dead letters to replay" in again.stdout, again.stdout

    sent = read_topic(broker_url, topics.tweets, 3, timeout=30, idle_s=2)
    assert sorted(r.value for r in sent) == sorted([binary, b'{"id": "k0"}', b'{"id": "k2", "text": "hi"}'])
    first_sent = next(r for r in sent if r.value == binary)
    headers = dict(first_sent.headers)
    assert headers["sentistream-replayed-from"] == f"{topics.dlq}/0/1".encode()
    assert headers["sentistream-original"] == b"tweets/0/1" and first_sent.key == b"k1"


def test_a_replay_needs_a_broker_and_says_so_in_one_line(dead_port) -> None:
    done = replay_cli(f"kafka://127.0.0.1:{dead_port}", Topics())
    assert done.returncode == 2 and "cannot reach the Kafka broker" in done.stderr
    assert "Traceback" not in done.stderr
