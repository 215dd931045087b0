"""The model lifecycle on the page (issue #13) through AppTest, fed through the real broker: the model
filter, the deployments panel, shadow agreement, live accuracy per model and the rejection banner."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from streamlit.testing.v1 import AppTest

from stream.control import publish
from stream.events import Canary, CanaryDecision, Deployment, Gates, ModelAccuracy, ModelRef, ShadowStats
from stream.settings import KafkaSettings
from tests.dashboard.conftest import APP, metrics, produce, run_until, scored, stats_window

OLD, NEW = "tiny@1+aaaaaaaaaaaa", "tiny@2+bbbbbbbbbbbb"


def frames(at: AppTest, column: str) -> list:
    """The dataframes on the page that have `column`."""
    return [d.value for d in at.dataframe if column in d.value.columns]


def deployed(at: AppTest) -> list:
    """The rows of the deployments panel ([] while it says nothing is deployed)."""
    found = frames(at, "deployed_by")
    return found[0].to_dict("records") if found else []


def in_view_texts(at: AppTest) -> set[str]:
    return set(at.dataframe[0].value["text"])  # the live table comes first on the page


def test_model_filter_lists_the_model_versions_and_narrows_the_live_view(app_env, broker_url):
    events = [scored(f"old {i}", "positive", model_version=OLD) for i in range(3)]
    events += [scored(f"new {i}", "negative", model_version=NEW) for i in range(2)]
    events.append(scored("from before versions", "neutral"))  # empty model_version
    produce(broker_url, app_env["SENTISTREAM_SCORED_TOPIC"], events)
    at = run_until(AppTest.from_file(APP, default_timeout=30), lambda at: metrics(at)["Total scored"] == "6")
    models = at.multiselect(key="models")
    assert models.options == [OLD, NEW, "unknown"] and models.value == []  # none chosen: every model
    assert metrics(at)["In view"] == "6"

    models.select(NEW).run()
    assert metrics(at)["In view"] == "2" and metrics(at)["Total scored"] == "6"
    assert in_view_texts(at) == {"new 0", "new 1"}
    assert metrics(at)["Share negative"] == "100%"
    at.multiselect(key="models").select("unknown").run()
    assert in_view_texts(at) == {"new 0", "new 1", "from before versions"}

    counts = frames(at, "model_version")[0].set_index("model_version")["in view"].to_dict()
    assert counts == {OLD: 3, NEW: 2, "unknown": 1}  # the Models tab counts every model

    # A model deployed while someone looks joins the options; the choice made stays.
    produce(
        broker_url, app_env["SENTISTREAM_SCORED_TOPIC"], [scored("newest", "positive", model_version="t@3")]
    )
    at = run_until(at, lambda at: "t@3" in at.multiselect(key="models").options)
    assert at.multiselect(key="models").value == [NEW, "unknown"] and "newest" not in in_view_texts(at)


def deployment(version: str, history: list[ModelRef] = ()) -> Deployment:
    name = version.split("+")[0]
    return Deployment(
        uri=f"s3://bundles/{name}",
        model=name,
        model_version=version,
        checksum="c" * 64,
        deployed_by="ana@build-host",
        deployed_at=datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
        history=list(history),
    )


def test_deployments_panel_shows_what_the_control_topic_holds(app_env, broker_url):
    kafka = KafkaSettings(broker=broker_url, models_topic=app_env["SENTISTREAM_MODELS_TOPIC"])
    at = run_until(AppTest.from_file(APP, default_timeout=30), lambda at: "Total scored" in metrics(at))
    assert not deployed(at) and any("Nothing deployed" in c.value for c in at.caption)

    champion = deployment(NEW, history=[deployment(OLD).ref()])
    asyncio.run(publish(kafka, "champion", champion))
    asyncio.run(publish(kafka, "challenger", deployment("tiny@3+cccccccccccc")))
    at = run_until(at, lambda at: len(deployed(at)) == 2)
    shown = frames(at, "deployed_by")[0].set_index("role")
    assert (
        shown.loc["champion", "model_version"] == NEW
        and shown.loc["champion", "uri"] == "s3://bundles/tiny@2"
    )
    assert shown.loc["champion", "deployed_by"] == "ana@build-host" and shown.loc["champion", "earlier"] == 1
    assert shown.loc["challenger", "model_version"] == "tiny@3+cccccccccccc"

    asyncio.run(publish(kafka, "challenger", None))  # deploy --promote / a cleared shadow: a tombstone
    at = run_until(at, lambda at: len(deployed(at)) == 1)
    assert [row["role"] for row in deployed(at)] == ["champion"]


def test_shadow_agreement_confusion_and_accuracy_per_model_from_stats_windows(app_env, broker_url):
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    earlier = end - timedelta(seconds=10)

    def shadow(compared, agreed, dropped, confusion, correct):
        return ShadowStats(
            champion=OLD, challenger=NEW, compared=compared, agreed=agreed, dropped=dropped,
            confusion=confusion, challenger_accuracy=ModelAccuracy(labelled=compared, correct=correct),
        )  # fmt: skip

    windows = [
        stats_window("w1:1", earlier, 10, by_model={OLD: 10}, shadow=shadow(10, 10, 0, {}, 5)),
        stats_window(
            "w1:1", end, 10, by_model={OLD: 10}, accuracy={OLD: ModelAccuracy(labelled=10, correct=6)},
            shadow=shadow(8, 6, 2, {"positive": {"positive": 5, "negative": 2}, "negative": {"negative": 1}}, 7),
        ),
        stats_window(
            "w2:2", end, 10, by_model={OLD: 10}, accuracy={OLD: ModelAccuracy(labelled=10, correct=8)},
            shadow=shadow(12, 9, 0, {"positive": {"positive": 4}, "negative": {"negative": 5, "neutral": 3}}, 11),
        ),
    ]  # fmt: skip
    produce(broker_url, app_env["SENTISTREAM_STATS_TOPIC"], windows)
    at = run_until(AppTest.from_file(APP, default_timeout=30), lambda at: "Compared" in metrics(at))
    m = metrics(at)
    assert m["Agreement, latest window"] == "75%"  # (6 + 9) / (8 + 12), summed over both workers
    assert m["Agreement, in view"] == "83%"  # (10 + 6 + 9) / (10 + 8 + 12)
    assert (m["Compared"], m["Dropped by the challenger"]) == ("30", "2")
    confusion = next(d.value for d in at.dataframe if d.value.index.name == "champion")
    assert confusion.to_dict("index") == {
        "negative": {"negative": 6, "neutral": 3, "positive": 0},
        "positive": {"negative": 2, "neutral": 0, "positive": 9},
    }
    accuracy = frames(at, "accuracy")[0].set_index(["model", "role"])["accuracy"]
    assert accuracy.to_dict() == pytest.approx({(NEW, "challenger"): 23 / 30, (OLD, "champion"): 14 / 20})
    scored_per_model = frames(at, "model_version")[0].set_index("model_version")["scored"].to_dict()
    assert scored_per_model == {OLD: 30}


def test_without_a_shadow_the_tab_says_how_to_start_one(app_env, broker_url):
    window = stats_window("w1:1", datetime.now(UTC), 5, by_model={OLD: 5})
    produce(broker_url, app_env["SENTISTREAM_STATS_TOPIC"], [window])
    at = run_until(AppTest.from_file(APP, default_timeout=30), lambda at: frames(at, "model_version"))
    assert "Compared" not in metrics(at)
    assert any("deploy --shadow" in c.value for c in at.caption)


REASON = f"rejected champion {NEW}: /bundles/new does not load: OSError: no model weights"


def rejection_banners(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if "rejected a model deployment" in w.value]


def test_a_rejected_deployment_shows_a_banner_until_the_worker_accepts_one(app_env, broker_url):
    topic, now = app_env["SENTISTREAM_STATS_TOPIC"], datetime.now(UTC)
    fine = {"by_model": {OLD: 5}}
    produce(
        broker_url,
        topic,
        [stats_window("host-a:11", now, 5, **fine), stats_window("host-b:22", now, 5, **fine)],
    )
    at = run_until(AppTest.from_file(APP, default_timeout=30), lambda at: frames(at, "model_version"))
    assert not rejection_banners(at)

    rejected = stats_window("host-a:11", now + timedelta(seconds=10), 5, model_error=REASON, **fine)
    produce(broker_url, topic, [rejected])
    at = run_until(at, rejection_banners)
    [banner] = rejection_banners(at)
    assert "host-a:11" in banner and "host-b:22" not in banner and "deploy --rollback" in banner
    assert any(t.value == REASON for t in at.text)  # the worker's reason, word for word, as text

    accepted = stats_window("host-a:11", now + timedelta(seconds=20), 5, **fine)  # it accepted a deployment
    produce(broker_url, topic, [accepted])
    at = run_until(at, lambda at: not rejection_banners(at))
    assert not rejection_banners(at)


def canary(status: str = "running", **fields) -> Canary:
    return Canary(
        **deployment(NEW).model_dump(exclude={"history", "deployed_at"}),
        deployed_at=datetime.now(UTC) - timedelta(minutes=1),
        share=0.25, topic="tweets", partitions=[0], gates=Gates(min_events=20), status=status, **fields,
    )  # fmt: skip


def canary_banners(at: AppTest) -> list[str]:
    return [b.value for b in [*at.error, *at.success, *at.info] if "Canary" in b.value]


def test_the_canary_panel_shows_live_gates_then_the_rollback_and_its_reason(app_env, broker_url):
    kafka = KafkaSettings(broker=broker_url, models_topic=app_env["SENTISTREAM_MODELS_TOPIC"])
    at = run_until(AppTest.from_file(APP, default_timeout=30), lambda at: "Total scored" in metrics(at))
    assert any("--canary 0.1" in c.value for c in at.caption) and not canary_banners(at)

    running = canary()
    asyncio.run(publish(kafka, "canary", running))
    shadow = ShadowStats(champion=OLD, challenger=NEW, compared=30, agreed=9)
    window = stats_window("w1:1", datetime.now(UTC), 30, by_model={OLD: 30}, shadow=shadow)
    produce(broker_url, app_env["SENTISTREAM_STATS_TOPIC"], [window])
    at = run_until(
        at, lambda at: frames(at, "min_events") and frames(at, "min_events")[0]["events"].iloc[0] == 30
    )
    [banner] = canary_banners(at)
    assert banner.startswith(f"**Canary `{NEW}`** serves partitions 0 of `tweets`")
    gates = frames(at, "min_events")[0].set_index("gate")
    assert gates.loc["agreement", "outcome"] == "fail" and gates.loc["agreement", "value"] == pytest.approx(
        0.3
    )
    assert any("The gates say rollback" in c.value for c in at.caption)

    reason = "agreement 0.300 < 0.900 over 30 events"
    decided = CanaryDecision(
        decision="rollback",
        reason=reason,
        gates=[],
        decided_by="ana@build-host",
        decided_at=datetime.now(UTC),
    )
    asyncio.run(
        publish(kafka, "canary", running.model_copy(update={"status": "rolled_back", "decision": decided}))
    )
    at = run_until(at, lambda at: any("rolled back" in b for b in canary_banners(at)))
    assert next(e.value for e in at.error if "Canary" in e.value).startswith(
        f"**Canary `{NEW}` was rolled back**"
    )
    assert any(t.value == reason for t in at.text)  # the reason word for word, as text
    assert "canary" in [row["role"] for row in deployed(at)]
