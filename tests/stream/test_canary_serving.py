"""A canary inside one worker, without a broker: which engine scores which partition, what the shadow
sees, how it ends (rollback: the champion everywhere; promotion: the canary's engine, not reloaded)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from model.bundle import checksum
from stream.events import Canary, Deployment
from stream.worker.stats import TumblingStats
from tests.stream.test_delivery import KAFKA, FakeBroker, FakeStream, batch, make_scorer, until
from tests.stream.test_deploy import VADER, serving, version_of

TOPIC = "in"  # the fake consumer's topic (tests/stream/test_delivery.py)


def canary_record(bundle: Path, partitions=(0,), status: str = "running", topic: str = TOPIC) -> Canary:
    digest = checksum(bundle)
    return Canary(
        uri=str(bundle),
        model="tiny@1",
        model_version=version_of(bundle),
        checksum=digest,
        deployed_by="test",
        deployed_at=datetime(2026, 1, 1, tzinfo=UTC),
        share=0.25,
        topic=topic,
        partitions=list(partitions),
        status=status,
    )


def champion_record(bundle: Path) -> Deployment:
    return Deployment(**canary_record(bundle).model_dump(include=set(Deployment.model_fields)))


def scorer_with(models, guarantee: str = "at_least_once"):
    broker = FakeBroker()
    scorer, exits = make_scorer(broker, guarantee, models=models)
    return scorer, broker, exits


def loaded(models) -> None:
    """Wait for the loader thread to finish what was offered, and take it in (as the next batch would)."""
    models._loader.shutdown(wait=True)
    models.take()


def versions_by_partition(broker: FakeBroker) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for sent in broker.visible():
        if sent.topic != KAFKA.scored_topic:
            continue
        event = orjson.loads(sent.value)
        found.setdefault(int(event["id"].split("-")[0]), set()).add(event["model_version"])
    return found


def four_partitions(offset: int) -> list:
    return batch(*[(p, offset) for p in range(4)])


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_the_canary_scores_its_partitions_and_shadows_the_champion_on_the_others(
    bundle: Path, tmp_path: Path, guarantee: str
) -> None:
    models = serving(tmp_path)
    models.input_topic = TOPIC
    models.offer("canary", canary_record(bundle, partitions=[0]))
    loaded(models)
    assert models.canary is not None and models.canary.partitions == {0}
    assert models.canary.engine is not models.canary.shadow.engine  # one engine is never used by two threads
    scorer, broker, exits = scorer_with(models, guarantee)
    stream = FakeStream([four_partitions(0), four_partitions(1)])
    await scorer.consume(stream)
    assert versions_by_partition(broker) == {0: {version_of(bundle)}, 1: {VADER}, 2: {VADER}, 3: {VADER}}
    assert sorted(stream.acked) == [
        (p, o) for p in range(4) for o in (0, 1)
    ]  # every input delivered and acked
    if guarantee == "exactly_once":  # each partition's outputs committed with its offsets, whatever model
        assert broker.committed == {p: 2 for p in range(4)}
    # The champion's 6 events (partitions 1-3, two batches) are compared, or dropped while it was busy.
    await until(lambda: _seen(models.stats) == 6, "the champion's 6 events compared or dropped", polls=3000)
    shadow = _shadow(models.stats)
    assert (shadow.champion, shadow.challenger) == (VADER, version_of(bundle)) and shadow.compared >= 3
    described = models.describe()["canary"]
    assert described["status"] == "running" and described["serving_here"] and described["partitions"] == [0]
    assert exits == []
    scorer.close()


async def test_a_rolled_back_canary_gives_its_partitions_back_to_the_champion_from_the_next_batch(
    bundle: Path, tmp_path: Path
) -> None:
    models = serving(tmp_path)
    models.offer("canary", canary_record(bundle, partitions=[0, 1]))
    loaded(models)
    scorer, broker, _ = scorer_with(models)
    await scorer.consume(FakeStream([four_partitions(0)]))
    models.offer("canary", canary_record(bundle, partitions=[0, 1], status="rolled_back"))
    await scorer.consume(FakeStream([four_partitions(1)]))
    assert models.canary is None
    events = [orjson.loads(s.value) for s in broker.sent if s.topic == KAFKA.scored_topic]
    by_offset = {(e["id"], e["model_version"]) for e in events}
    assert {("0-0", version_of(bundle)), ("1-0", version_of(bundle)), ("2-0", VADER)} <= by_offset
    assert {v for i, v in by_offset if i.endswith("-1")} == {VADER}  # the next batch: the champion everywhere
    assert models.describe()["canary"]["status"] == "rolled_back"
    assert not models.describe()["canary"]["serving_here"]
    scorer.close()


async def test_a_promotion_switches_the_canary_engine_in_without_loading_it_again(
    bundle: Path, tmp_path: Path
) -> None:
    models = serving(tmp_path)
    models.offer("canary", canary_record(bundle))
    loaded(models)
    engine = models.canary.engine
    # What `deploy` publishes on a promotion: the champion record first, then the canary's end.
    models.offer("champion", champion_record(bundle))
    models.offer("canary", canary_record(bundle, status="promoted"))
    assert models.take() is engine  # at once: no load, so partition 0 never goes back to VADER
    assert models.canary is None and models.swaps == 1
    assert models.describe()["model_version"] == version_of(bundle)
    models.close()


def test_a_canary_of_another_input_topic_is_not_served(bundle: Path, tmp_path: Path) -> None:
    models = serving(tmp_path)
    models.input_topic = TOPIC
    models.offer("canary", canary_record(bundle, topic="other-tweets"))
    loaded(models)
    assert models.canary is None
    assert models.describe()["canary"]["serving_here"] is False
    models.close()


def test_the_stats_window_carries_latency_and_inference_dead_letters_per_model() -> None:
    stats = TumblingStats(10.0, "w")
    for i in range(100):
        stats.add_scored("positive", 0.9, float(i), now=1000.0, model_version="a")
        stats.add_scored("positive", 0.9, 1000.0 + i, now=1000.0, model_version="b")
    stats.add_model_dead_letters("b", 3, now=1000.0)
    stats.add_model_dead_letters("a", 0, now=1000.0)
    (window,) = stats.close_all()
    assert window.latency_p99_by_model["a"] < 100 < 1000 < window.latency_p99_by_model["b"]
    assert window.dead_lettered_by_model == {"b": 3}


def _seen(stats: TumblingStats) -> int:
    shadow = _shadow(stats) if stats.windows else None
    return shadow.compared + shadow.dropped if shadow is not None else 0


def _shadow(stats: TumblingStats):
    (window,) = stats.windows.values()
    return window.shadow
