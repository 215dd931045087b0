"""Pure logic behind the page: filters, buckets, accuracy, 'Try it' scoring and CSV handling."""

from __future__ import annotations

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import scoring, summary
from dashboard.feed import Feed
from dashboard.settings import DashboardSettings
from infra.broker import free_port
from stream.settings import KafkaSettings
from tests.dashboard.conftest import scored
from tests.dashboard.test_app import APP


def rows_of(*events) -> pd.DataFrame:
    feed = Feed(KafkaSettings(), DashboardSettings())
    for event in events:
        feed.ingest_scored(event.model_dump_json().encode())
    return feed.snapshot().rows


def test_hashtag_matches_whole_tags_and_keywords_match_anywhere_ignoring_case():
    rows = rows_of(scored("Off to #Travel now", "positive"), scored("#travelling soon", "neutral"))
    assert list(summary.filter_rows(rows, summary.Filters("#travel"), 0)["text"]) == ["Off to #Travel now"]
    assert len(summary.filter_rows(rows, summary.Filters("TRAVEL"), 0)) == 2


def test_share_over_time_sums_to_one_per_bucket():
    rows = rows_of(
        *(
            scored("x", label, age_s=age)
            for label, age in [("positive", 0), ("negative", 1), ("positive", 200)]
        )
    )
    shares = summary.share_over_time(rows, 900)
    assert summary.bucket_seconds(900, 0) == 30
    assert shares.groupby("time")["share"].sum().round(6).eq(1).all()
    assert shares["count"].sum() == 3


def test_accuracy_only_counts_events_with_a_true_label():
    rows = rows_of(
        scored("a", "positive", true_label="Positive"),
        scored("b", "negative", true_label="neutral"),
        scored("c", "neutral"),
    )
    assert summary.live_accuracy(rows) == (0.5, 2)


def test_uploads_are_size_limited_and_read_as_plain_strings():
    with pytest.raises(ValueError, match="upload at most"):
        scoring.read_upload(b"text\n" + b"a" * 2_000, limit_bytes=1_000, max_rows=10)
    frame, cut = scoring.read_upload(b"text,n\n=1+1,007\nhello,2\nthird,3\n", limit_bytes=1_000, max_rows=2)
    assert cut and list(frame["text"]) == ["=1+1", "hello"] and frame["n"].iloc[0] == "007"


def test_scored_csv_cannot_run_as_a_spreadsheet_formula():
    frame = pd.DataFrame({"text": ['=HYPERLINK("http://x")', "fine"]})
    result = scoring.Scored(
        [{"label": "neutral", "score": 0.5, "scores": {"neutral": 0.5}}, {"error": "empty"}], "m@1", "test"
    )
    out = scoring.to_safe_csv(scoring.with_predictions(frame, "text", result)).decode()
    assert "'=HYPERLINK" in out and "p_neutral" in out and "empty" in out


def test_try_it_scores_locally_when_no_worker_answers(monkeypatch):
    monkeypatch.setenv("SENTISTREAM_BROKER", f"kafka://127.0.0.1:{free_port()}")
    monkeypatch.setenv("SENTISTREAM_DASHBOARD_WORKER_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("SENTISTREAM_BACKEND", "vader")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_area(key="try_text").input("I love this, it is wonderful and great!").run()
    at.button(key="try_score").click().run()
    assert not at.exception
    label = next(m for m in at.metric if m.label == "Label")
    assert label.value == "positive"
    probabilities = at.dataframe[-1].value
    assert set(probabilities["label"]) == {"negative", "neutral", "positive"}
    assert probabilities["probability"].sum() == pytest.approx(1.0)
    assert any("no worker answered" in c.value for c in at.caption)
