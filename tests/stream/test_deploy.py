"""Hot swap on a real broker: `sentistream deploy`, workers following it, rejections, shadow scoring."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from model.bundle import checksum
from stream.control import publish, read_deployments
from stream.events import Deployment
from stream.settings import KafkaSettings
from tests.stream.worker_process import (
    SENTISTREAM,
    Topics,
    WorkerProcess,
    create_topics,
    health,
    metric,
    produce,
    read_topic,
    wait_until,
)

VADER = "vader@3.3.2"


def kafka_of(broker_url: str, topics: Topics) -> KafkaSettings:
    return KafkaSettings(broker=broker_url, models_topic=topics.models)


def deploy(broker_url: str, topics: Topics, *args: str) -> subprocess.CompletedProcess:
    command = [SENTISTREAM, "deploy", *args, "--broker", broker_url, "--models-topic", topics.models]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def current(broker_url: str, topics: Topics) -> dict[str, Deployment]:
    return asyncio.run(read_deployments(kafka_of(broker_url, topics)))[0]


def version_of(bundle: Path) -> str:
    """The model_version a worker stamps on events scored by `bundle` (a plain HF directory: name@0)."""
    from model.bundle import load_bundle

    return load_bundle(bundle).model_version


def copy_with_note(bundle: Path, out: Path, note: str) -> Path:
    """Another bundle: the same model with one more file, so a different checksum and model_version."""
    shutil.copytree(bundle, out)
    (out / "NOTES.txt").write_text(note)
    return out


def corrupt_copy(bundle: Path, out: Path) -> Path:
    shutil.copytree(bundle, out)
    (out / "model.onnx").write_bytes(b"not an ONNX graph")
    return out


def labelled(prefix: str, count: int, partitions: int, start: int = 0) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of messages start..count-1: message i goes to partition i % partitions,
    so offsets follow i there."""
    words = ["I love it", "this is awful", "it is a phone"]
    truth = ["positive", "negative", "neutral"]
    return [
        (
            i % partitions,
            f"{prefix}-{i}".encode(),
            orjson.dumps({"id": f"{prefix}-{i}", "text": f"{words[i % 3]} {i}", "true_label": truth[i % 3]}),
        )
        for i in range(start, count)
    ]


def produce_to_partitions(broker_url: str, topic: str, messages, pause_every: int = 0) -> None:
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker_url.removeprefix("kafka://"), linger_ms=5)
        await producer.start()
        try:
            futures = []
            for n, (partition, key, value) in enumerate(messages):
                futures.append(await producer.send(topic, value, key=key, partition=partition))
                if pause_every and n % pause_every == pause_every - 1:
                    await asyncio.sleep(0.05)  # a live stream, not one backlog: the swap lands mid-way
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(send())


def produce_until(
    broker_url: str,
    topic: str,
    prefix: str,
    partitions: int,
    stop: threading.Event,
    produced: list[int],
    tail: int = 1_000,
    per_round: int = 200,
    pause_s: float = 0.05,
    messages=None,
) -> None:
    """A live stream, `per_round` messages every `pause_s`, until `stop` is set and `tail` more were
    sent; appends the count to `produced`. `messages(prefix, start, end)` makes (partition, key,
    value) of messages start..end-1 (default: `labelled`)."""
    from aiokafka import AIOKafkaProducer

    def default(prefix: str, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
        return labelled(prefix, end, partitions, start=start)

    make = messages or default

    async def send() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=broker_url.removeprefix("kafka://"), linger_ms=5)
        await producer.start()
        n, end, futures = 0, None, []
        try:
            while end is None or n < end:
                for partition, key, value in make(prefix, n, n + per_round):
                    futures.append(await producer.send(topic, value, key=key, partition=partition))
                n += per_round
                if end is None and stop.is_set():
                    end = n + tail
                await asyncio.sleep(pause_s)
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        return n

    produced.append(asyncio.run(send()))


def scored_events(broker_url: str, topics: Topics, expect: int) -> list[dict]:
    return [
        orjson.loads(r.value) for r in read_topic(broker_url, topics.scored, expected=expect, timeout=240)
    ]


# ---- the deploy command ---------------------------------------------------------------------------------


def test_deploy_publishes_a_checked_bundle_and_rollback_promote_and_shadow_move_it(
    broker_url: str, bundle: Path, tmp_path: Path
) -> None:
    topics = Topics()
    first = bundle
    second = copy_with_note(bundle, tmp_path / "second", "retrained")

    done = deploy(broker_url, topics, str(first))
    assert done.returncode == 0, done.stderr
    champion = current(broker_url, topics)["champion"]
    assert (champion.uri, champion.checksum) == (str(first), checksum(first))
    assert champion.model_version == version_of(first) and champion.history == []

    assert deploy(broker_url, topics, str(second)).returncode == 0
    champion = current(broker_url, topics)["champion"]
    assert champion.model_version == version_of(second) != version_of(first)
    assert [h.model_version for h in champion.history] == [version_of(first)]

    rolled = deploy(broker_url, topics, "--rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert f"rolled back to {version_of(first)}" in rolled.stdout
    champion = current(broker_url, topics)["champion"]
    assert champion.model_version == version_of(first) and champion.history == []
    nothing = deploy(broker_url, topics, "--rollback")
    assert nothing.returncode == 2 and "nothing to roll back to" in nothing.stderr

    assert deploy(broker_url, topics, str(second), "--shadow").returncode == 0
    state = current(broker_url, topics)
    assert state["challenger"].model_version == version_of(second)
    assert state["champion"].model_version == version_of(first)  # a shadow never replaces the champion

    assert deploy(broker_url, topics, "--promote").returncode == 0
    state = current(broker_url, topics)
    assert "challenger" not in state
    assert state["champion"].model_version == version_of(second)
    assert [h.model_version for h in state["champion"].history] == [version_of(first)]

    shown = deploy(broker_url, topics, "--show")
    assert json.loads(shown.stdout)["champion"]["model_version"] == version_of(second)


def test_deploy_refuses_a_bundle_that_does_not_load_and_publishes_nothing(
    broker_url: str, bundle: Path, tmp_path: Path
) -> None:
    topics = Topics()
    broken = corrupt_copy(bundle, tmp_path / "broken")
    refused = deploy(broker_url, topics, str(broken))
    assert refused.returncode == 2, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("sentistream deploy: error:") and "does not load" in line
    assert current(broker_url, topics) == {}

    missing = deploy(broker_url, topics, str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such bundle directory" in missing.stderr
    assert current(broker_url, topics) == {}


# ---- workers following deployments ----------------------------------------------------------------------


def test_deploy_creates_the_control_topic_with_the_replicas_asked_for(broker_url: str, bundle: Path) -> None:
    """--replication-factor (SENTISTREAM_REPLICATION_FACTOR, the workers' own) reaches the control
    topic deploy creates: the one-broker test cluster refuses two replicas, and deploy says so and
    publishes nothing, where a producer would otherwise auto-create it with one, uncompacted."""
    topics = Topics()
    refused = deploy(broker_url, topics, str(bundle), "--replication-factor", "2")
    assert refused.returncode == 1, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert f"refused to create topic {topics.models} with 2 replica(s): InvalidReplicationFactor" in line, (
        line
    )
    assert current(broker_url, topics) == {}

    done = deploy(broker_url, topics, str(bundle), "--replication-factor", "1")
    assert done.returncode == 0, done.stderr
    assert current(broker_url, topics)["champion"].checksum == checksum(bundle)


def test_a_swap_during_a_replay_with_two_workers_loses_nothing_and_switches_each_partition_once(
    broker_url: str, bundle: Path, tmp_path: Path
) -> None:
    # The stream runs until both workers have swapped, then for 1,000 more messages: however slow
    # the deploy (a loaded machine), messages are scored both before and after the switch.
    topics, partitions = Topics(), 4
    create_topics(broker_url, [topics.tweets], partitions)
    workers = [WorkerProcess(broker_url, topics, tmp_path, name=n).start() for n in "ab"]
    swapped = threading.Event()
    produced: list[int] = []
    try:
        for worker in workers:
            worker.wait_ready()
        wait_until(
            lambda: (
                sorted(p for w in workers for p in health(w)["partitions"])
                == sorted(f"{topics.tweets}[{p}]" for p in range(partitions))
            ),
            120,
            "the two workers to share the four partitions",
        )
        feeder = threading.Thread(
            target=produce_until,
            args=(broker_url, topics.tweets, "swap", partitions, swapped, produced),
            daemon=True,
        )
        feeder.start()
        wait_until(
            lambda: sum(metric(w, "sentistream_consumed_total") for w in workers) >= 2_000,
            180,
            "2,000 scored",
        )
        done = deploy(broker_url, topics, str(bundle))
        assert done.returncode == 0, done.stderr
        wait_until(
            lambda: all(health(w)["models"]["swaps"] == 1 for w in workers), 180, "both workers to swap"
        )
        swapped.set()
        feeder.join(240)
        (count,) = produced
        events = scored_events(broker_url, topics, count)
        for worker in workers:
            models = health(worker)["models"]
            assert models["model_version"] == version_of(bundle) and models["swaps"] == 1, models
    finally:
        swapped.set()
        for worker in workers:
            worker.stop()

    assert sorted({e["id"] for e in events}) == sorted(f"swap-{i}" for i in range(count))
    new = version_of(bundle)
    assert {e["model_version"] for e in events} == {VADER, new}  # the old one, then the new one
    versions_by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for event in events:
        i = int(event["id"].split("-")[1])
        versions_by_partition[i % partitions].append((i, event["model_version"]))
    for partition, versions in versions_by_partition.items():
        ordered = [v for _, v in sorted(versions)]
        switch = ordered.index(new) if new in ordered else len(ordered)
        assert ordered[switch:] == [new] * (len(ordered) - switch), f"partition {partition} flapped back"
        assert ordered[:switch] == [VADER] * switch


def test_a_worker_started_after_a_deploy_scores_with_the_deployed_model_from_its_first_event(
    broker_url: str, bundle: Path, tmp_path: Path
) -> None:
    topics = Topics()
    assert deploy(broker_url, topics, str(bundle)).returncode == 0
    produce(
        broker_url, topics.tweets, [(f"late-{i}".encode(), b'{"text": "good morning"}') for i in range(50)]
    )
    worker = WorkerProcess(broker_url, topics, tmp_path).start()  # --backend vader, no --model
    try:
        ready = worker.wait_ready()
        assert ready["models"]["deployment"]["uri"] == str(bundle)
        events = scored_events(broker_url, topics, 50)
    finally:
        worker.stop()
    assert {e["model_version"] for e in events} == {version_of(bundle)}


def test_a_corrupt_or_changed_deployment_is_rejected_and_the_stream_keeps_its_model(
    broker_url: str, bundle: Path, tmp_path: Path
) -> None:
    topics = Topics()
    kafka = kafka_of(broker_url, topics)
    broken = corrupt_copy(bundle, tmp_path / "broken")
    worker = WorkerProcess(broker_url, topics, tmp_path, "--stats-window-s", "1").start()
    try:
        worker.wait_ready()
        # Published by hand: `deploy` would refuse it, but storage can rot after a deploy.
        asyncio.run(publish(kafka, "champion", record(broken, checksum(broken))))
        wait_until(lambda: health(worker)["models"]["rejected"] is not None, 120, "the rejection")
        rejected = health(worker)["models"]["rejected"]
        assert rejected["uri"] == str(broken) and "does not load" in rejected["reason"]

        changed = copy_with_note(bundle, tmp_path / "changed", "edited after the deploy")
        asyncio.run(publish(kafka, "champion", record(changed, checksum(bundle))))
        wait_until(lambda: "checksum" in health(worker)["models"]["rejected"]["reason"], 120, "checksum")

        produce(
            broker_url, topics.tweets, [(f"k-{i}".encode(), b'{"text": "still fine"}') for i in range(20)]
        )
        events = scored_events(broker_url, topics, 20)
        assert {e["model_version"] for e in events} == {VADER}
        assert metric(worker, 'sentistream_model_rejected_total{role="champion"}') == 2
        assert health(worker)["models"]["swaps"] == 0
        stats = [orjson.loads(r.value) for r in read_topic(broker_url, topics.stats, expected=1, timeout=60)]
        assert any("checksum" in (s.get("model_error") or "") for s in stats)
    finally:
        worker.stop()


def record(bundle: Path, digest: str) -> Deployment:
    return Deployment(
        uri=str(bundle),
        model="tiny@0",
        model_version=f"tiny@0+{digest[:12]}",
        checksum=digest,
        deployed_by="test",
        deployed_at=datetime.now(UTC),
    )


# ---- shadow scoring -------------------------------------------------------------------------------------


def test_a_shadow_model_is_compared_with_the_champion_in_sentiment_stats(
    broker_url: str, bundle: Path, tmp_path: Path
) -> None:
    topics, count = Topics(), 600
    worker = WorkerProcess(
        broker_url, topics, tmp_path, "--shadow", str(bundle), "--stats-window-s", "1"
    ).start()
    try:
        worker.wait_ready()
        produce_to_partitions(broker_url, topics.tweets, labelled("sh", count, 1))
        events = scored_events(broker_url, topics, count)
        assert {e["model_version"] for e in events} == {VADER}  # the shadow never publishes events
        wait_until(
            lambda: (
                metric(worker, "sentistream_shadow_compared_total")
                + metric(worker, "sentistream_shadow_dropped_total")
                >= count
            ),
            120,
            "every scored event compared or dropped",
        )
    finally:
        worker.stop()  # publishes the last window
    windows = [orjson.loads(r.value) for r in read_topic(broker_url, topics.stats, expected=1, timeout=60)]
    shadows = [w["shadow"] for w in windows if w.get("shadow")]
    assert {(s["champion"], s["challenger"]) for s in shadows} == {(VADER, version_of(bundle))}
    compared = sum(s["compared"] for s in shadows)
    assert compared + sum(s["dropped"] for s in shadows) == count
    assert compared > 0 and 0 <= sum(s["agreed"] for s in shadows) <= compared
    assert sum(n for s in shadows for row in s["confusion"].values() for n in row.values()) == compared
    assert sum(s["challenger_accuracy"]["labelled"] for s in shadows) == compared
    vader_hits = sum(w["accuracy"].get(VADER, {}).get("labelled", 0) for w in windows)
    assert vader_hits == count  # live accuracy of the champion counts every labelled event


@pytest.mark.parametrize("cached", [False, True])
def test_fetch_copies_a_remote_bundle_once_per_checksum(bundle: Path, tmp_path: Path, cached: bool) -> None:
    import fsspec

    from stream.bundles import DeploymentError, fetch

    fs = fsspec.filesystem("memory")
    root = f"/bundles/{tmp_path.name}"
    fs.put(str(bundle) + "/", root + "/", recursive=True)
    digest = checksum(bundle)
    cache = tmp_path / "cache"
    if cached:
        shutil.copytree(bundle, cache / digest)
        fs.rm(root, recursive=True)  # served from the cache: the remote copy is not needed
    path = fetch(f"memory://{root}", cache, digest)
    assert path == cache / digest and checksum(path) == digest
    if not cached:
        with pytest.raises(DeploymentError, match="checksum"):
            fetch(f"memory://{root}", tmp_path / "other-cache", "0" * 64)


# ---- the swap itself, in process ------------------------------------------------------------------------


def serving(tmp_path: Path):
    from model.engines import load_engine
    from model.settings import ModelSettings
    from stream.worker.metrics import WorkerMetrics
    from stream.worker.serving import ServingModels
    from stream.worker.stats import TumblingStats

    stats = TumblingStats(10.0, "w")
    vader = load_engine(None, backend="vader")
    return ServingModels(
        vader, WorkerMetrics(), stats, None, ModelSettings(backend="vader"), tmp_path / "cache"
    )


def test_a_deployment_serves_from_the_next_batch_and_the_newest_one_wins(
    bundle: Path, tmp_path: Path
) -> None:
    models = serving(tmp_path)
    newer = copy_with_note(bundle, tmp_path / "newer", "retrained")
    models.offer("champion", record(bundle, checksum(bundle)))
    models.offer("champion", record(newer, checksum(newer)))  # arrives while the first one loads
    assert models.take().model_version == VADER  # nothing switches before the loads are verified
    models._loader.shutdown(wait=True)
    assert models.take().model_version == version_of(newer)
    assert models.take().model_version == version_of(newer) and models.swaps == 1
    assert models.describe()["deployment"]["uri"] == str(newer)
    models.close()


def test_a_rejected_deployment_leaves_the_serving_engine_and_says_why(bundle: Path, tmp_path: Path) -> None:
    models = serving(tmp_path)
    broken = corrupt_copy(bundle, tmp_path / "broken")
    models.offer("champion", record(broken, checksum(broken)))
    models._loader.shutdown(wait=True)
    assert models.take().model_version == VADER and models.swaps == 0
    assert "does not load" in models.rejected["reason"]
    models.stats.add_dead_letters(0, 1.0)
    (window,) = models.stats.close_all()
    assert window.model_error and "does not load" in window.model_error
    models.close()


async def test_explain_follows_the_model_a_deployment_swapped_in(bundle: Path, tmp_path: Path) -> None:
    from model.settings import ModelSettings
    from stream.worker.explain_view import ExplainService

    models = serving(tmp_path)
    service = ExplainService(
        models.engine, ModelSettings(backend="vader"), current=lambda: (models.engine, models.model_path)
    )
    before = await service.answer(orjson.dumps({"texts": ["what a lovely day"]}))
    models.offer("champion", record(bundle, checksum(bundle)))
    models._loader.shutdown(wait=True)
    models.take()
    after = await service.answer(orjson.dumps({"texts": ["what a lovely day"]}))
    assert (before["model"], after["model"]) == (VADER, models.engine.name) and after["model"] != VADER
    service.close()
    models.close()
