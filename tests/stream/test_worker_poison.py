"""Poison records on a real broker: one bad record costs one dead letter, never its neighbours;
a failure no record can be blamed for stops the worker (exit 1) without committing, and a restart
scores the whole batch."""

from __future__ import annotations

import signal
import threading
from collections import Counter

import orjson
import pytest
import requests

from stream.events import DeadLetter, ScoredTweet
from tests.stream.worker_process import (
    Topics,
    WorkerProcess,
    create_topics,
    ids_of,
    mark_the_end,
    produce,
    read_topic,
    read_until_marked,
    tweets,
    wait_until,
)


class HealthWatch:
    """Polls /health in the background; `failures` holds every non-200 answer seen."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker, self.failures, self.polls = worker, [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> HealthWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.thread.join(5)

    def _poll(self) -> None:
        while not self.stop.wait(0.1):
            answer = requests.get(self.worker.url + "/health", timeout=5)
            self.polls += 1
            if answer.status_code != 200:
                self.failures.append(answer.json())


def test_a_600k_character_id_is_dead_lettered_and_its_200_neighbours_scored(broker_url, tmp_path) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.tweets], partitions=1)
    good = tweets("p", 200)
    poison = (b"poison", orjson.dumps({"id": "x" * 600_000, "text": "a perfectly fine text"}))
    worker = WorkerProcess(broker_url, topics, tmp_path, "--batch-size", "64").start()
    try:
        worker.wait_ready()
        with HealthWatch(worker) as watch:
            produce(broker_url, topics.tweets, [*good[:100], poison, *good[100:]])
            end = mark_the_end(broker_url, topics.tweets, 1)
            scored = read_until_marked(broker_url, topics.scored, end)
            dead = read_topic(broker_url, topics.dlq, 1, timeout=30, idle_s=0)
        assert worker.process.poll() is None, worker.log_tail()
    finally:
        worker.stop()
    assert sorted(ids_of(scored)) == sorted(key.decode() for key, _ in good), worker.log_tail()
    (letter,) = [DeadLetter.model_validate_json(r.value) for r in dead]
    assert letter.stage == "validate" and "600000 characters" in letter.error and letter.offset == 100
    assert watch.polls > 0 and watch.failures == []


@pytest.mark.parametrize("fault", ["raise", "nan"])
def test_a_text_the_engine_cannot_score_is_dead_lettered_and_its_neighbours_scored(
    broker_url, tmp_path, fault: str
) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.tweets], partitions=1)
    good = tweets("n", 60)
    poison = (b"poison", orjson.dumps({"id": "poison", "text": "this one is POISONOUS"}))
    messages = [*good[:30], poison, *good[30:]]
    worker = WorkerProcess(broker_url, topics, tmp_path, faults=f"{fault}=POISONOUS").start()
    try:
        worker.wait_ready()
        produce(broker_url, topics.tweets, messages)
        end = mark_the_end(broker_url, topics.tweets, 1)
        scored = read_until_marked(broker_url, topics.scored, end)
        dead = read_topic(broker_url, topics.dlq, 1, timeout=30, idle_s=0)
        assert requests.get(worker.url + "/health", timeout=5).status_code == 200
    finally:
        worker.stop()
    assert Counter(ids_of(scored)) == Counter(key.decode() for key, _ in good), worker.log_tail()
    assert all(ScoredTweet.model_validate_json(r.value).score == 0.8 for r in scored)
    (letter,) = [DeadLetter.model_validate_json(r.value) for r in dead]
    assert letter.stage == "inference" and letter.key == "poison"
    assert ("RuntimeError" if fault == "raise" else "not probabilities") in letter.error


def test_an_unforeseen_error_exits_1_and_a_restart_scores_the_whole_batch(broker_url, tmp_path) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.tweets], partitions=1)
    messages = [
        *tweets("before", 20),
        (b"trigger", orjson.dumps({"id": "trigger", "text": "CRASH here"})),
        *tweets("after", 20),
    ]
    # A short session, so the restarted worker is not kept waiting for the dead one's partitions.
    first = WorkerProcess(
        broker_url, topics, tmp_path, "--session-timeout-s", "6", faults="crash=CRASH", name="first"
    ).start()
    first.wait_ready()
    produce(broker_url, topics.tweets, messages)
    assert first.wait(timeout=60) == 1, first.log_tail()
    assert "stopping the worker without committing" in first.log_tail()
    # It has exited: what the topic holds now is all it ever wrote.
    scored_before = ids_of(read_topic(broker_url, topics.scored, 0, timeout=30, idle_s=0))
    assert "trigger" not in scored_before
    assert_a_restart_scores_every_message(broker_url, topics, tmp_path, messages)


def test_a_kill_9_during_a_batch_in_flight_loses_nothing(broker_url, tmp_path) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.tweets], partitions=1)
    messages = [
        *tweets("a", 30),
        (b"hold", orjson.dumps({"id": "hold", "text": "BLOCK me"})),
        *tweets("b", 30),
    ]
    release = tmp_path / "release"
    first = WorkerProcess(
        broker_url, topics, tmp_path, "--commit-interval-s", "0.2", "--session-timeout-s", "6",
        faults=f"block=BLOCK,release={release}", name="first",
    ).start()  # fmt: skip
    first.wait_ready()
    produce(broker_url, topics.tweets, messages)
    wait_until(lambda: (tmp_path / "release.blocked").exists(), 30, "the batch to be in flight")
    first.signal(signal.SIGKILL)
    first.wait(10)
    assert_a_restart_scores_every_message(broker_url, topics, tmp_path, messages)


def assert_a_restart_scores_every_message(broker_url: str, topics: Topics, tmp_path, messages) -> None:
    """A fresh worker on the same group redoes what the stopped one left uncommitted: nothing lost."""
    end = mark_the_end(broker_url, topics.tweets, 1)
    second = WorkerProcess(broker_url, topics, tmp_path, faults="raise=NEVER", name="second").start()
    try:
        second.wait_ready()
        scored = ids_of(read_until_marked(broker_url, topics.scored, end))
    finally:
        second.stop()
    assert set(scored) == {key.decode() for key, _ in messages}, second.log_tail()
