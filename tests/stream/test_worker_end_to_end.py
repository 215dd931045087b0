"""End to end on the real broker: 2,000 messages, a few hundred of them bad in every way.

Every valid one appears once in the scored topic with valid fields; every bad one appears once in
the dead-letter topic with its reason; scored + dead-lettered = produced.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from stream.events import DeadLetter, ScoredTweet
from tests.stream.worker_process import (
    Topics,
    WorkerProcess,
    create_topics,
    mark_the_end,
    produce,
    read_topic,
    read_until_marked,
)

# kind -> (how many, value builder, expected stage, words the reason must contain)
BAD_KINDS = {
    "not-json": (120, lambda i: f"plain text {i}".encode(), "decode", "not JSON"),
    "not-utf8": (120, lambda i: b"\xff\xfe" + str(i).encode(), "decode", "UTF-8"),
    "not-object": (120, lambda i: json.dumps([i, "text"]).encode(), "validate", "not an object"),
    "no-text": (120, lambda i: json.dumps({"id": f"n{i}"}).encode(), "validate", "'text' is missing"),
    "text-not-string": (120, lambda i: json.dumps({"text": i}).encode(), "validate", "valid string"),
    "empty-text": (100, lambda i: b'{"text": ""}', "validate", "empty"),
    "blank-text": (100, lambda i: b'{"text": " \\t "}', "validate", "whitespace"),
    "bad-field-type": (100, lambda i: json.dumps({"text": "hi", "created_at": "x"}).encode(), "validate", "created_at"),
}  # fmt: skip
LONG_TEXTS = 4  # ~1 MB each


def build_messages() -> tuple[list[tuple[bytes, bytes]], dict[str, str]]:
    """(key, value) messages and key -> expected kind ("ok", "ok-long", "ok-extra" or a bad kind)."""
    messages, kinds = [], {}
    for kind, (count, make, _, _) in BAD_KINDS.items():
        for i in range(count):
            key = f"{kind}-{i}"
            messages.append((key.encode(), make(i)))
            kinds[key] = kind
    for i in range(LONG_TEXTS):
        messages.append((f"long-{i}".encode(), json.dumps({"text": "so good " * 125_000}).encode()))
        kinds[f"long-{i}"] = "ok-long"
    while len(messages) < 2000:
        i = len(messages)
        extra = {"retweets": i, "place": {"city": "Oslo"}} if i % 3 == 0 else {}
        body = {"text": f"what a lovely day number {i} :)", **extra}
        if i % 2:
            body["id"] = f"ok-{i}"  # half carry an id; the other half are identified by their key
        messages.append((f"ok-{i}".encode(), json.dumps(body).encode()))
        kinds[f"ok-{i}"] = "ok-extra" if extra else "ok"
    return messages, kinds


@pytest.mark.slow
def test_every_message_is_scored_or_dead_lettered_exactly_once(broker_url, tiny_model_dir, tmp_path) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.tweets], partitions=4)
    messages, kinds = build_messages()
    worker = WorkerProcess(
        broker_url, topics, tmp_path, "--model", str(tiny_model_dir), "--backend", "torch", "--device", "cpu",
        "--batch-size", "128",
    ).start()  # fmt: skip
    try:
        worker.wait_ready()
        produce(broker_url, topics.tweets, messages)
        end = mark_the_end(broker_url, topics.tweets, 4)
        n_ok = sum(k.startswith("ok") for k in kinds.values())
        scored = read_until_marked(broker_url, topics.scored, end, timeout=90)
        # Dead letters of messages before the markers are in the topic by now: read to its end.
        dead = read_topic(broker_url, topics.dlq, len(messages) - n_ok, timeout=30, idle_s=0)
    finally:
        worker.stop()
    assert len(scored) + len(dead) == len(messages), worker.log_tail()
    check_scored(scored, kinds)
    check_dead_letters(dead, kinds)


def check_scored(records, kinds: dict[str, str]) -> None:
    events = [ScoredTweet.model_validate_json(r.value) for r in records]
    ids = Counter(e.id for e in events)
    assert ids == Counter(k for k, kind in kinds.items() if kind.startswith("ok"))  # each once
    for record, event in zip(records, events, strict=True):
        assert record.key.decode() == event.id
        assert event.label in ("negative", "neutral", "positive")
        assert event.score == event.scores[event.label] == max(event.scores.values())
        assert abs(sum(event.scores.values()) - 1) < 1e-4
        assert event.latency_ms >= 0 and event.model
        kind = kinds[event.id]
        assert event.truncated == (kind == "ok-long")
        if kind == "ok-extra":
            assert event.model_extra["place"] == {"city": "Oslo"}
        if kind == "ok-long":
            assert len(event.text) == 10_000


def check_dead_letters(records, kinds: dict[str, str]) -> None:
    letters = [DeadLetter.model_validate_json(r.value) for r in records]
    assert Counter(d.key for d in letters) == Counter(
        k for k, kind in kinds.items() if not kind.startswith("ok")
    )
    for letter in letters:
        _, _, stage, reason = BAD_KINDS[kinds[letter.key]]
        assert letter.stage == stage and reason in letter.error, letter
        assert letter.offset >= 0 and 0 <= letter.partition < 4
        assert (letter.encoding == "base64") == (kinds[letter.key] == "not-utf8")
