"""The model-lifecycle figures (dashboard/lifecycle.py) and the feed state behind them, without Kafka."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from dashboard import lifecycle
from dashboard.feed import UNKNOWN_MODEL, Feed
from dashboard.settings import DashboardSettings
from dashboard.summary import Filters, filter_rows
from stream.events import Deployment, ModelAccuracy, ModelRef, ShadowStats
from stream.settings import KafkaSettings
from tests.dashboard.conftest import scored, stats_window

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=10)
OLD, NEW = "tiny@1+aaaaaaaaaaaa", "tiny@2+bbbbbbbbbbbb"


def shadow(compared: int, agreed: int, dropped: int = 0, confusion=None, **rest) -> ShadowStats:
    return ShadowStats(
        champion=rest.pop("champion", OLD),
        challenger=rest.pop("challenger", NEW),
        compared=compared,
        agreed=agreed,
        dropped=dropped,
        confusion=confusion or {},
        **rest,
    )


def rows_of(*versions: str) -> pd.DataFrame:
    feed = make_feed()
    for version in versions:
        feed.ingest_scored(scored("x", "positive", model_version=version).model_dump_json().encode())
    return feed.snapshot().rows


def make_feed(**settings) -> Feed:
    return Feed(KafkaSettings(broker="kafka://127.0.0.1:9", models_topic="m"), DashboardSettings(**settings))


def test_events_per_model_sums_every_worker_and_window_and_names_unversioned_events_unknown():
    windows = [
        stats_window("w1", T0, by_model={OLD: 5, "": 2}),
        stats_window("w2", T0, by_model={OLD: 3, NEW: 1}),
        stats_window("w1", T1, by_model={NEW: 4}),
    ]
    counts = lifecycle.events_per_model(windows, rows_of(NEW, NEW, "", "other@1"))
    assert counts.to_dict("records") == [
        {"model_version": OLD, "scored": 8, "in view": 0},
        {"model_version": NEW, "scored": 5, "in view": 2},
        {"model_version": UNKNOWN_MODEL, "scored": 2, "in view": 1},
        {"model_version": "other@1", "scored": 0, "in view": 1},
    ]


def test_agreement_is_summed_over_workers_per_window_and_pair():
    windows = [
        stats_window("w1", T0, shadow=shadow(10, 8, dropped=1)),
        stats_window("w2", T0, shadow=shadow(10, 6, dropped=3)),
        stats_window("w3", T0),  # no shadow on this worker: not part of the agreement
        stats_window("w1", T1, shadow=shadow(4, 1)),
        stats_window("w2", T1, shadow=shadow(0, 0, dropped=7)),  # it dropped everything
        stats_window("w1", T1, shadow=shadow(5, 5, challenger="tiny@3+cccccccccccc")),
    ]
    frame = lifecycle.agreement_over_time(windows)
    got = frame[["time", "challenger", "compared", "agreed", "dropped"]].to_dict("records")
    assert got == [
        {"time": T0, "challenger": NEW, "compared": 20, "agreed": 14, "dropped": 4},
        {"time": T1, "challenger": NEW, "compared": 4, "agreed": 1, "dropped": 7},
        {"time": T1, "challenger": "tiny@3+cccccccccccc", "compared": 5, "agreed": 5, "dropped": 0},
    ]
    assert list(frame["agreement"]) == [0.7, 0.25, 1.0]
    nothing_compared = lifecycle.agreement_over_time([stats_window("w1", T0, shadow=shadow(0, 0, 2))])
    assert math.isnan(nothing_compared["agreement"].iloc[0])
    assert lifecycle.agreement_over_time([stats_window("w1", T0)]).empty


def test_latest_confusion_sums_the_newest_window_of_the_pair_that_compared_most():
    old_window = shadow(9, 9, confusion={"positive": {"positive": 9}})
    windows = [
        stats_window("w1", T0, shadow=old_window),
        stats_window("w1", T1, shadow=shadow(3, 2, confusion={"positive": {"positive": 2, "negative": 1}})),
        stats_window("w2", T1, shadow=shadow(2, 1, confusion={"negative": {"negative": 1, "neutral": 1}})),
        stats_window("w3", T1, shadow=shadow(1, 1, challenger="x@9", confusion={"neutral": {"neutral": 1}})),
    ]
    confusion = lifecycle.latest_confusion(windows)
    assert (confusion.window_end, confusion.champion, confusion.challenger) == (T1, OLD, NEW)
    assert confusion.table.to_dict("index") == {
        "negative": {"negative": 1, "neutral": 1, "positive": 0},
        "positive": {"negative": 1, "neutral": 0, "positive": 2},
    }
    assert lifecycle.latest_confusion([stats_window("w1", T1)]) is None


def test_accuracy_per_model_sums_workers_and_keeps_the_challenger_apart():
    hits = {OLD: ModelAccuracy(labelled=10, correct=7), "": ModelAccuracy(labelled=2, correct=1)}
    challenger = shadow(10, 8, challenger_accuracy=ModelAccuracy(labelled=10, correct=9))
    windows = [
        stats_window("w1", T0, accuracy=hits, shadow=challenger),
        stats_window("w2", T0, accuracy={OLD: ModelAccuracy(labelled=10, correct=9)}),
        stats_window("w1", T1, accuracy={OLD: ModelAccuracy(labelled=0, correct=0)}),  # nothing labelled
    ]
    over_time = lifecycle.accuracy_over_time(windows)
    assert over_time[["model", "role", "labelled", "correct"]].to_dict("records") == [
        {"model": OLD, "role": "champion", "labelled": 20, "correct": 16},
        {"model": NEW, "role": "challenger", "labelled": 10, "correct": 9},
        {"model": UNKNOWN_MODEL, "role": "champion", "labelled": 2, "correct": 1},
    ]
    totals = lifecycle.accuracy_per_model(over_time).set_index("model")["accuracy"]
    assert totals.to_dict() == {NEW: 0.9, OLD: 0.8, UNKNOWN_MODEL: 0.5}


def test_rejections_come_from_each_workers_latest_window_only():
    reason = f"rejected champion {NEW}: /bundles/new does not load: OSError: no weights"
    latest = {
        "w1:1": stats_window("w1:1", T1, model_error=reason),
        "w2:2": stats_window("w2:2", T1, model_error=reason),
        "w3:3": stats_window("w3:3", T1),
    }
    assert lifecycle.rejections(latest) == {reason: ["w1:1", "w2:2"]}
    assert lifecycle.rejections({"w3:3": latest["w3:3"]}) == {}


def test_recent_keeps_the_windows_that_ended_inside_the_time_window():
    windows = [stats_window("w1", T0), stats_window("w1", T1)]
    assert lifecycle.recent(windows, 5, T1.timestamp() + 1) == windows[1:]
    assert lifecycle.recent(windows, None, T1.timestamp() + 10_000) == windows


def test_model_filter_options_and_rows_follow_the_model_versions():
    rows = rows_of(NEW, OLD, NEW, "")
    assert lifecycle.model_options(rows) == [NEW, OLD, UNKNOWN_MODEL]
    assert lifecycle.model_options(rows, ["gone@1"]) == [NEW, OLD, UNKNOWN_MODEL, "gone@1"]
    kept = filter_rows(rows, Filters(models=(OLD, UNKNOWN_MODEL)), now=0)
    assert list(kept["model_version"]) == [OLD, UNKNOWN_MODEL]
    assert len(filter_rows(rows, Filters(), now=0)) == 4


def test_feed_keeps_the_last_stats_windows_and_the_current_deployments():
    feed = make_feed(stats_windows=10)
    for i in range(15):
        assert feed.ingest(
            "st", stats_window(f"w{i % 2}", T0 + timedelta(seconds=10 * i)).model_dump_json().encode()
        )
    snap = feed.snapshot()
    assert len(snap.windows) == 10 and snap.windows[-1].window_end == T0 + timedelta(seconds=140)
    assert set(snap.stats) == {"w0", "w1"}

    champion = deployment(OLD)
    assert feed.ingest("m", champion.model_dump_json().encode(), key=b"champion", offset=0)
    assert feed.ingest("m", deployment(NEW).model_dump_json().encode(), key=b"challenger", offset=1)
    assert not feed.ingest("m", b"{not a deployment", key=b"champion", offset=2)  # skipped, as workers do
    assert lifecycle.deployments_frame(feed.snapshot().deployments)["model_version"].tolist() == [OLD, NEW]
    assert feed.ingest("m", None, key=b"challenger", offset=3)  # a tombstone clears the challenger
    frame = lifecycle.deployments_frame(feed.snapshot().deployments)
    assert frame[["role", "model_version", "uri", "earlier"]].to_dict("records") == [
        {"role": "champion", "model_version": OLD, "uri": "/bundles/tiny@1", "earlier": 1}
    ]
    assert feed.snapshot().totals.malformed == 0  # control-topic records are never "malformed events"


def deployment(version: str) -> Deployment:
    name = version.split("+")[0]
    earlier = ModelRef(
        uri="/bundles/tiny@0", model="tiny@0", model_version="tiny@0+000000000000", checksum="0" * 64,
        deployed_by="ci@build", deployed_at=T0 - timedelta(days=1),
    )  # fmt: skip
    return Deployment(
        uri=f"/bundles/{name}", model=name, model_version=version, checksum="a" * 64,
        deployed_by="ana@laptop", deployed_at=T0, history=[earlier],
    )  # fmt: skip


@pytest.mark.parametrize("empty", [lifecycle.deployments_frame({}), lifecycle.accuracy_over_time([])])
def test_empty_inputs_give_empty_frames_with_their_columns(empty):
    assert empty.empty and len(empty.columns) >= 5


def test_names_from_the_topics_become_inline_code_that_nothing_escapes():
    from dashboard.app import _code

    hostile = "w`1:2** [x](javascript:a(1)) <img src=x>\n# h"
    shown = _code(hostile)
    assert shown.startswith("`") and shown.endswith("`") and shown.count("`") == 2
    assert not set(shown) & set("<>[]()*#\n")
    assert _code(NEW) == f"`{NEW}`" and _code("host-a:11") == "`host-a:11`"  # real names read whole
