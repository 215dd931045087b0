"""Canaries on a real broker: `deploy --canary` with a worker scoring a live stream, the gates deciding.

A candidate that labels everything negative is rolled back (it disagrees with the champion), one equal
to the champion is promoted; in both, every input ends up scored or dead-lettered exactly once, and
each partition switches model at most at the canary's start and end, never back and forth.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from model.bundle import checksum
from stream.control import publish, read_deployments
from stream.events import Canary, Gates
from stream.settings import KafkaSettings
from tests.stream.test_canary_gates import window
from tests.stream.test_deploy import VADER, copy_with_note, deploy, produce_until, version_of
from tests.stream.worker_process import (
    SENTISTREAM,
    Topics,
    WorkerProcess,
    create_topics,
    health,
    produce,
    read_topic,
    wait_until,
)

PARTITIONS = 4
# Small enough to decide within seconds on a loaded 2-core machine; latency is not what these test.
GATES = ["--gate-min-events", "150", "--gate-latency-p99-ms", "600000", "--gate-timeout-s", "300"]
TEXTS = [
    ("I love it, wonderful", "positive"),
    ("this is awful and sad", "negative"),
    ("it is a phone", "neutral"),
]


def deploy_canary(broker_url: str, topics: Topics, *args: str) -> subprocess.CompletedProcess:
    command = [
        SENTISTREAM, "deploy", *args, "--broker", broker_url, "--models-topic", topics.models,
        "--topic", topics.tweets, "--stats-topic", topics.stats,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=400)


def message(prefix: str, i: int) -> tuple[int, bytes, bytes]:
    """(partition, key, value) of input i: every 50th is not JSON (a dead letter at decode)."""
    key = f"{prefix}-{i}".encode()
    if i % 50 == 49:
        return i % PARTITIONS, key, b"{not json"
    text, truth = TEXTS[i % 3]
    return i % PARTITIONS, key, orjson.dumps({"id": key.decode(), "text": f"{text} {i}", "true_label": truth})


def feed(broker_url: str, topic: str, prefix: str, stop: threading.Event, produced: list[int]) -> None:
    """A live stream, 40 messages every 100 ms, until `stop` is set and 400 more were sent."""
    produce_until(
        broker_url, topic, prefix, PARTITIONS, stop, produced, tail=400, per_round=40, pause_s=0.1,
        messages=lambda prefix, start, end: [message(prefix, i) for i in range(start, end)],
    )  # fmt: skip


def outputs(broker_url: str, topics: Topics, count: int) -> tuple[list[dict], list[str]]:
    """The scored events and the keys of the dead letters, once `count` outputs arrived."""
    dead_expected = sum(1 for i in range(count) if i % 50 == 49)
    scored = read_topic(broker_url, topics.scored, expected=count - dead_expected, timeout=240)
    dead = read_topic(broker_url, topics.dlq, expected=dead_expected, timeout=60)
    return [orjson.loads(r.value) for r in scored], [r.key.decode() for r in dead]


def versions_in_order(events: list[dict]) -> dict[int, list[str]]:
    """Partition -> the model_version of its events in input order."""
    by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for event in events:
        i = int(event["id"].rsplit("-", 1)[1])
        by_partition[i % PARTITIONS].append((i, event["model_version"]))
    return {p: [v for _, v in sorted(pairs)] for p, pairs in by_partition.items()}


def runs(versions: list[str]) -> list[str]:
    """The models in the order they served: ['a', 'b', 'a'] for a, a, b, b, a."""
    return [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]


def current(broker_url: str, topics: Topics) -> dict:
    return asyncio.run(read_deployments(KafkaSettings(broker=broker_url, models_topic=topics.models)))[0]


def assert_each_input_once(events: list[dict], dead: list[str], prefix: str, count: int) -> None:
    ids = [e["id"] for e in events] + dead
    assert len(ids) == len(set(ids)) == count, "an input was lost or delivered twice"
    assert set(ids) == {f"{prefix}-{i}" for i in range(count)}
    assert set(dead) == {f"{prefix}-{i}" for i in range(count) if i % 50 == 49}


def canary_under_stream(broker_url: str, topics: Topics, worker, prefix: str, candidate: str, settled):
    """Stream inputs `prefix-i` while `deploy CANDIDATE --canary 0.25` runs and until the worker shows
    the decision (`settled()`); then (the deploy's result, /health's models, the inputs sent, the scored
    events, the dead letters' keys) once every input came out."""
    stop, produced = threading.Event(), []
    feeder = threading.Thread(
        target=feed, args=(broker_url, topics.tweets, prefix, stop, produced), daemon=True
    )
    feeder.start()
    try:
        done = deploy_canary(broker_url, topics, candidate, "--canary", "0.25", *GATES)
        wait_until(settled, 60, f"the worker to show the decision ({done.stdout}{done.stderr})")
        described = health(worker)["models"]
    finally:
        stop.set()
        feeder.join(240)
    (count,) = produced
    events, dead = outputs(broker_url, topics, count)
    return done, described, count, events, dead


@pytest.mark.slow  # ~20 s alone: a worker, a live stream, a canary loaded twice
def test_a_candidate_that_labels_everything_negative_is_rolled_back_and_nothing_is_lost(
    broker_url: str, negative_bundle: Path, tmp_path: Path
) -> None:
    topics, bad = Topics(), version_of(negative_bundle)
    create_topics(broker_url, [topics.tweets], PARTITIONS)
    worker = WorkerProcess(broker_url, topics, tmp_path, "--stats-window-s", "1").start()
    try:
        worker.wait_ready()
        done, described, count, events, dead = canary_under_stream(
            broker_url, topics, worker, "neg", str(negative_bundle),
            lambda: health(worker)["models"]["canary"]["status"] == "rolled_back",
        )  # fmt: skip
    finally:
        worker.stop()
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"canary {bad} serves partitions [0] of {topics.tweets}" in done.stdout
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"sentistream deploy: error: rolled back the canary {bad}: agreement 0.")

    # The decision and its reason, on the control topic and in /health.
    canary = current(broker_url, topics)["canary"]
    assert isinstance(canary, Canary) and canary.status == "rolled_back" and canary.partitions == [0]
    assert canary.decision.decision == "rollback" and canary.decision.reason.startswith("agreement 0.")
    agreement = next(g for g in canary.decision.gates if g.gate == "agreement")
    assert agreement.outcome == "fail" and agreement.value < 0.9 and agreement.events >= 150
    assert "champion" not in current(broker_url, topics)  # a rollback leaves the champion as it was
    assert described["model_version"] == VADER and described["canary"]["serving_here"] is False
    assert described["canary"]["decision"]["reason"] == canary.decision.reason

    # Nothing lost, nothing twice; the candidate served partition 0 only, between two VADER stretches.
    assert_each_input_once(events, dead, "neg", count)
    versions = versions_in_order(events)
    assert runs(versions[0]) == [VADER, bad, VADER]
    assert all(runs(versions[p]) == [VADER] for p in range(1, PARTITIONS))
    assert {e["label"] for e in events if e["model_version"] == bad} == {"negative"}


@pytest.mark.slow
def test_a_candidate_equal_to_the_champion_is_promoted_and_every_partition_switches_once(
    broker_url: str, bundle: Path, tmp_path: Path
) -> None:
    topics = Topics()
    champion, candidate = version_of(bundle), version_of(copy_with_note(bundle, tmp_path / "same", "rebuilt"))
    create_topics(broker_url, [topics.tweets], PARTITIONS)
    assert deploy(broker_url, topics, str(bundle)).returncode == 0
    worker = WorkerProcess(broker_url, topics, tmp_path, "--stats-window-s", "1").start()
    try:
        assert worker.wait_ready()["models"]["model_version"] == champion
        done, described, count, events, dead = canary_under_stream(
            broker_url, topics, worker, "eq", str(tmp_path / "same"),
            lambda: health(worker)["models"]["model_version"] == candidate,
        )  # fmt: skip
    finally:
        worker.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"promoted {candidate} to champion: all gates passed: agreement 1.000 >= 0.900" in done.stdout

    state = current(broker_url, topics)
    assert state["champion"].model_version == candidate
    assert [h.model_version for h in state["champion"].history] == [champion]
    assert state["canary"].status == "promoted" and state["canary"].decision.decision == "promote"
    assert [g.outcome for g in state["canary"].decision.gates] == ["pass"] * 4
    assert described["canary"]["status"] == "promoted" and described["swaps"] == 1

    assert_each_input_once(events, dead, "eq", count)
    versions = versions_in_order(events)
    assert runs(versions[0]) == [champion, candidate]  # the canary's engine carried on as champion
    assert all(runs(versions[p]) == [champion, candidate] for p in range(1, PARTITIONS))


# ---- the command's contract, with records and windows published by hand -------------------------------


def canary_of(bundle: Path, topics: Topics, gates: Gates) -> Canary:
    digest = checksum(bundle)
    return Canary(
        uri=str(bundle), model="tiny@1", model_version=version_of(bundle), checksum=digest,
        deployed_by="someone@elsewhere", deployed_at=datetime.now(UTC), share=0.25, topic=topics.tweets,
        partitions=[0], gates=gates,
    )  # fmt: skip


def test_a_canary_whose_watcher_died_shows_its_verdict_and_a_rerun_publishes_it(
    broker_url: str, bundle: Path
) -> None:
    topics = Topics()
    kafka = KafkaSettings(broker=broker_url, models_topic=topics.models, stats_topic=topics.stats)
    record = canary_of(bundle, topics, Gates(min_events=100))
    asyncio.run(publish(kafka, "canary", record))
    create_topics(broker_url, [topics.stats], 1)
    # Two windows in which the candidate agreed with the champion on 60 of 120 events.
    stats = [window(n, agreed=30, since=record.deployed_at, candidate=record.model_version) for n in range(2)]
    produce(broker_url, topics.stats, [(b"w1", w.model_dump_json().encode()) for w in stats])

    shown = deploy_canary(broker_url, topics, "--show")
    assert shown.returncode == 0, shown.stderr
    gates = json.loads(shown.stdout)["canary_gates"]
    assert json.loads(shown.stdout)["canary"]["status"] == "running" and gates["decision"] == "rollback"
    assert (
        gates["reason"] == "agreement 0.500 < 0.900 over 120 events"
        and "to resume the watch" in gates["next"]
    )
    assert current(broker_url, topics)["canary"].running  # --show only reads

    resumed = deploy_canary(broker_url, topics, str(bundle), "--canary", "0.25")
    assert resumed.returncode == 1 and "resuming the watch" in resumed.stdout
    assert "rolled back the canary" in resumed.stderr and "agreement 0.500 < 0.900" in resumed.stderr
    ended = current(broker_url, topics)["canary"]
    assert (
        ended.status == "rolled_back" and ended.decision.reason == "agreement 0.500 < 0.900 over 120 events"
    )
    shown = json.loads(deploy_canary(broker_url, topics, "--show").stdout)
    assert "canary_gates" not in shown and shown["canary"]["decision"]["reason"] == ended.decision.reason


def test_a_running_canary_blocks_other_deployments_until_it_is_ended_by_hand(
    broker_url: str, bundle: Path, tmp_path: Path
) -> None:
    topics = Topics()
    kafka = KafkaSettings(broker=broker_url, models_topic=topics.models)
    asyncio.run(publish(kafka, "canary", canary_of(bundle, topics, Gates())))
    other = copy_with_note(bundle, tmp_path / "other", "another")
    for args in ([str(other)], [str(other), "--shadow"], [str(other), "--canary", "0.5"]):
        refused = deploy_canary(broker_url, topics, *args)
        assert refused.returncode == 2 and "is running; let its gates decide" in refused.stderr, args
    ended = deploy_canary(broker_url, topics, "--rollback")
    assert ended.returncode == 1 and "rolled back by hand" in ended.stderr
    assert current(broker_url, topics)["canary"].decision.decided_by  # who ended it
    assert deploy_canary(broker_url, topics, str(other)).returncode == 0  # free again


def test_canary_flags_that_cannot_work_are_one_line_and_exit_2(broker_url: str, bundle: Path) -> None:
    topics = Topics()
    create_topics(broker_url, [topics.tweets], 1)
    cases = [
        (["--canary", "1.5"], "between 0 and 1 exclusive"),
        (
            ["--canary", "0.1", "--gate-agreement", "2"],
            "--gate-agreement: Input should be less than or equal to 1",
        ),
        (["--gate-min-events", "10"], "--gate-min-events sets a gate of --canary"),
        (
            ["--canary", "0.1"],
            f"the input topic {topics.tweets} has 1 partition(s); a canary needs at least 2",
        ),
    ]
    for args, expected in cases:
        refused = deploy_canary(broker_url, topics, str(bundle), *args)
        assert refused.returncode == 2, (args, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert expected in line, (args, line)
    assert "canary" not in current(broker_url, topics)
