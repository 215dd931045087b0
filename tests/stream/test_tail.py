"""`sentistream tail`: the console consumer, against a real broker."""

from __future__ import annotations

import subprocess
import sys

import orjson

from tests.stream.worker_process import Topics, create_topics, produce


def tail(broker_url: str, topics: Topics, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sentistream", "tail", *argv, "--broker", broker_url, *topics.flags()[:10]],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def scored(i: int, label: str) -> tuple[bytes, bytes]:
    event = {
        "id": f"s{i}",
        "text": f"text number {i}",
        "label": label,
        "score": 0.9,
        "scored_at": "2026-12-06T09:00:00Z",
    }
    return f"s{i}".encode(), orjson.dumps(event)


def test_tail_prints_scored_events_and_dead_letters_filtered_from_the_beginning(broker_url) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.scored, topics.dlq], partitions=2)
    produce(broker_url, topics.scored, [scored(i, "positive" if i % 3 else "negative") for i in range(30)])
    letters = [
        (b"d1", orjson.dumps({"original": "{", "error": "value is not JSON", "stage": "decode", "partition": 0, "offset": 1})),
        (b"d2", orjson.dumps({"original": "{}", "error": "text is missing", "stage": "validate", "partition": 0, "offset": 2})),
    ]  # fmt: skip
    produce(broker_url, topics.dlq, letters)

    negatives = tail(
        broker_url, topics, "scored", "--from-beginning", "--label", "negative", "--idle-exit-s", "3"
    )
    lines = negatives.stdout.splitlines()
    assert negatives.returncode == 0, negatives.stderr
    assert len(lines) == 10 and all(" negative 0.90 " in line for line in lines), lines

    raw = tail(broker_url, topics, "dlq", "--from-beginning", "--reason", "missing", "--json", "--limit", "1")
    assert raw.returncode == 0, raw.stderr
    assert [orjson.loads(line)["stage"] for line in raw.stdout.splitlines()] == ["validate"]

    staged = tail(broker_url, topics, "dlq", "--from-beginning", "--stage", "decode", "--idle-exit-s", "3")
    assert staged.stdout.count("decode: value is not JSON") == 1, staged.stdout


def test_tail_starts_at_the_end_unless_told_otherwise(broker_url) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.scored], partitions=1)
    produce(broker_url, topics.scored, [scored(i, "positive") for i in range(5)])
    done = tail(broker_url, topics, "scored", "--idle-exit-s", "2")
    assert done.returncode == 0 and done.stdout == "", done.stdout


def test_tail_of_a_missing_topic_is_one_line_and_exit_2(broker_url) -> None:
    done = tail(broker_url, Topics(), "no-such-topic-here", "--idle-exit-s", "1")
    assert done.returncode == 2
    err = done.stderr.strip()
    assert "\n" not in err and "does not exist" in err, err


def test_the_alerts_topic_is_a_topic_name_like_the_others(monkeypatch) -> None:
    """`alerts_topic` lives with the other topic names (KafkaSettings): `tail alerts` honours
    --alerts-topic, and the monitor's older variable still names it."""
    from sentistream.cli import build_parser
    from sentistream.settings import settings_from_args
    from stream.feeders.tail_cli import topic_name
    from stream.settings import KafkaSettings

    monkeypatch.delenv("SENTISTREAM_ALERTS_TOPIC", raising=False)
    monkeypatch.setenv("SENTISTREAM_MONITOR_ALERTS_TOPIC", "old-alerts")
    assert topic_name("alerts", KafkaSettings()) == "old-alerts"
    monkeypatch.setenv("SENTISTREAM_ALERTS_TOPIC", "new-alerts")  # the current name wins
    assert KafkaSettings().alerts_topic == "new-alerts"
    args = build_parser("tail").parse_args(["tail", "alerts", "--alerts-topic", "flagged"])
    assert topic_name("alerts", settings_from_args(KafkaSettings, args)) == "flagged"
