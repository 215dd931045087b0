"""The alert banner, the alert feed on the real broker, and the 'Try it' word highlighting."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.alerts import AlertFeed, banner_text, markers_frame
from dashboard.explanations import weight_colour, words_frame
from stream.events import Change, Example, SentimentAlert
from stream.settings import KafkaSettings
from tests.stream.worker_process import create_topics, produce

MARKUP = "<img src=x onerror=alert(1)> **loud**"


def alert(minutes_ago: float = 1.0, label: str = "negative") -> SentimentAlert:
    since = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return SentimentAlert(
        kind="share", since=since, window_start=since, window_end=since + timedelta(seconds=10), events=200,
        changes=[Change(what=label, baseline=0.2, value=0.6, change=0.4, z=9.5)], summary="x",
        examples=[Example(id="e1", text=MARKUP, label=label)], raised_at=since,
    )  # fmt: skip


def banner_script(minutes_ago: float, label: str) -> None:
    from dashboard.alerts import alert_banner_ui
    from tests.insight.test_dashboard_insight import alert

    alert_banner_ui([alert(minutes_ago, label)])


def test_banner_shows_what_moved_and_examples_as_text() -> None:
    at = AppTest.from_function(
        banner_script, args=(1.0, "negative**[x](javascript:1)"), default_timeout=30
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    text = at.warning[0].value
    assert "negative" in text and "60%" in text and "usually 20%" in text and "+40 pts" in text
    assert "`negativexjavascript:1` 60%" in text  # link syntax stripped, the rest inline code
    assert "[" not in text and "**" not in text
    assert at.dataframe[0].value["text"].tolist() == [MARKUP]


def test_old_alerts_leave_the_banner() -> None:
    at = AppTest.from_function(banner_script, args=(60.0, "negative"), default_timeout=30).run()
    assert not at.exception and not at.warning


def test_markers_one_row_per_alert() -> None:
    frame = markers_frame([alert(3), alert(1)])
    assert list(frame.columns) == ["time", "kind", "summary"] and len(frame) == 2
    assert frame["summary"].iloc[0] == banner_text(alert(3))[: len(frame["summary"].iloc[0])]


def explanation_script() -> None:
    from dashboard.explanations import explanation_ui
    from tests.insight.test_dashboard_insight import MARKUP

    tokens = [{"token": w, "weight": x} for w, x in zip(MARKUP.split(), [0.05, -0.2, 0.4, 0.1], strict=True)]
    explanation_ui({"text": MARKUP, "label": "positive", "score": 0.9, "tokens": tokens})


def test_try_it_highlights_words_without_html() -> None:
    at = AppTest.from_function(explanation_script, default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = at.dataframe[0].value
    assert shown["word"].tolist() == MARKUP.split()  # cells of a table: never parsed as HTML
    assert not any("<img" in m.value for m in at.markdown)


def test_weight_colours_go_green_up_and_red_down() -> None:
    assert weight_colour(0.4, 0.4) == "background-color: rgba(44, 160, 44, 0.80)"
    assert weight_colour(-0.2, 0.4) == "background-color: rgba(214, 39, 40, 0.40)"
    assert weight_colour(0.0, 0.0).endswith("0.00)")
    assert words_frame({"tokens": []}).empty


@pytest.mark.slow
def test_alert_feed_reads_the_alerts_topic(broker_url, topic_name) -> None:
    create_topics(broker_url, [topic_name], partitions=1)
    produce(broker_url, topic_name, [(b"share", alert(2).model_dump_json().encode()), (None, b"junk")])
    feed = AlertFeed(KafkaSettings(broker=broker_url), topic_name).start()
    try:
        deadline = time.monotonic() + 30
        while not feed.recent() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        feed.stop()
    assert [a.changes[0].what for a in feed.recent()] == ["negative"]
