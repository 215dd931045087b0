"""Pure logic behind the page: filters, buckets, accuracy, 'Try it' scoring and CSV handling."""

from __future__ import annotations

import io

import orjson
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import charts, scoring, summary
from dashboard.app import plain
from dashboard.feed import OTHER, Feed
from dashboard.settings import DashboardSettings
from model.engines.base import Prediction
from sentistream.cli import main
from stream.settings import KafkaSettings
from tests.dashboard.conftest import WorkerStub, scored
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
    upload = scoring.read_upload(b"text,n\n=1+1,007\nhello,2\nthird,3\n", limit_bytes=1_000, max_rows=2)
    assert upload.rows_cut and list(upload.frame["text"]) == ["=1+1", "hello"]
    assert upload.frame["n"].iloc[0] == "007"
    assert not scoring.read_upload(b"text\na\nb\n", 1_000, max_rows=2).rows_cut


def test_uploads_are_limited_in_columns_cells_and_characters_per_cell():
    wide = (",".join(f"c{i}" for i in range(101)) + "\n" + ",".join("x" * 101) + "\n").encode()
    with pytest.raises(ValueError, match="101 columns; upload at most 100"):
        scoring.read_upload(wide, 1_000_000, max_rows=10, max_columns=100)
    # 4 columns x 10 rows is 40 cells: a 20-cell limit keeps the first 5 rows.
    rows = "a,b,c,d\n" + "".join(f"{i},x,y,z\n" for i in range(10))
    upload = scoring.read_upload(rows.encode(), 1_000_000, max_rows=100, max_cells=20)
    assert upload.rows_cut and list(upload.frame["a"]) == ["0", "1", "2", "3", "4"]
    long = f"text,{'h' * 50}\n{'x' * 50},ok\n".encode()
    upload = scoring.read_upload(long, 1_000_000, max_rows=10, max_cell_chars=20)
    assert upload.cells_cut == 1 and upload.frame["text"].iloc[0] == "x" * 20
    assert list(upload.frame.columns) == ["text", "h" * 20]  # headers are cells too


@pytest.mark.parametrize("data", [b"", b"a,b\n1,2\n1,2,3,4\n", b"\xff\xfe\x00bad", b"text\n"])
def test_unreadable_uploads_are_one_line_errors(data: bytes):
    with pytest.raises(ValueError) as caught:
        scoring.read_upload(data, 1_000, max_rows=10)
    assert "\n" not in str(caught.value) and "upload" in str(caught.value)


PREDICTIONS = [
    Prediction("negative", 0.7, {"negative": 0.7, "positive": 0.3}),
    Prediction(None, None, error="empty"),
]


def test_scored_csv_cells_and_headers_cannot_run_as_a_spreadsheet_formula():
    frame = pd.DataFrame(
        {"text": ['=HYPERLINK("http://x")', "fine"], "=cmd|' /C calc'!A0": ["+1", "@SUM(A1)"]}
    )
    scored = scoring.Scored(PREDICTIONS, ["negative", "positive"], "m@1", "test")
    out = pd.read_csv(io.BytesIO(scoring.to_safe_csv(scoring.scored_upload(frame, scored))), dtype=str)
    assert out["text"].iloc[0] == '\'=HYPERLINK("http://x")'
    assert "'=cmd|' /C calc'!A0" in out.columns and "=cmd|' /C calc'!A0" not in out.columns
    assert list(out["'=cmd|' /C calc'!A0"]) == ["'+1", "'@SUM(A1)"]
    assert not any(str(c).startswith(scoring.FORMULA_START) for c in [*out.columns, *out.to_numpy().ravel()])


def test_an_uploaded_label_column_is_kept_beside_the_predictions_as_predict_input_writes_them(tmp_path):
    frame = pd.DataFrame({"text": ["bad day", ""], "label": ["negative", "positive"]})
    vader_labels = ["negative", "neutral", "positive"]
    scored = scoring.scored_upload(frame, scoring.Scored(PREDICTIONS, vader_labels, "m@1", "t"))
    assert list(scored["label"]) == ["negative", "positive"]  # the file's own labels, untouched
    assert list(scored["predicted_label"])[:1] == ["negative"] and list(scored["error"]) == ["", "empty"]
    assert {"predicted_score", "score_negative", "score_positive", "truncated", "model"} <= set(
        scored.columns
    )
    # The same columns, in the same order, as `sentistream predict --input` (one shared function).
    csv = tmp_path / "in.csv"
    frame.iloc[:1].to_csv(csv, index=False)
    out = tmp_path / "out.csv"
    assert main(["predict", "--backend", "vader", "--input", str(csv), "--output", str(out)]) == 0
    assert list(pd.read_csv(out).columns) == list(scored.columns)


def test_chunks_stay_within_the_workers_count_and_byte_limits_in_order():
    texts = [f"{i} " + "é😀" * (i % 40) for i in range(1_000)]  # multi-byte: bytes, not characters, count
    parts = list(scoring.chunks(texts, max_texts=50, max_bytes=2_000))
    assert [t for part in parts for t in part] == texts
    for part in parts:
        assert len(part) <= 50 and len(orjson.dumps({"texts": part})) <= 2_000


def test_worker_scores_uploads_in_chunks_its_limits_accept(worker_stub):
    worker_stub.max_bytes, worker_stub.max_texts = scoring.PREDICT_MAX_BYTES, scoring.PREDICT_MAX_TEXTS
    texts = [("good " if i % 3 else "bad ") + "ü" * 3_000 for i in range(600)]  # ~3.6 MB as JSON
    scored = scoring.score_with_worker(worker_stub.url, texts)
    assert [p.label for p in scored.predictions] == [WorkerStub.predict(t)["label"] for t in texts]
    assert len(worker_stub.bodies) >= 4 and max(map(len, worker_stub.bodies)) <= scoring.PREDICT_MAX_BYTES
    assert scored.model == "stub@1" and scored.labels == ["negative", "positive"]


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (413, b'{"error": "body is 2000000 bytes; send at most 1000"}', "send at most 1000"),
        (413, b"<html><body>Request Entity Too Large</body></html>", "413"),
        (429, b'{"error": "busy"}', "busy"),
    ],
)
def test_a_worker_refusal_is_a_one_line_error_not_a_traceback(worker_stub, status, body, reason):
    worker_stub.refuse = (status, body)
    with pytest.raises(scoring.WorkerRefusedError) as caught:
        scoring.score_with_worker(worker_stub.url, ["hello"])
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_labels_and_colours_are_capped():
    labels = [f"label-{i}" for i in range(300)]
    rows = rows_of(*(scored("x", label) for label in labels for _ in range(1 + labels.index(label) % 7)))
    shown = charts.cap_labels(rows)
    assert shown["label"].nunique() == charts.MAX_LABELS + 1 and OTHER in set(shown["label"])
    assert len(shown) == len(rows)  # nothing dropped, only grouped
    chart = charts.share_chart(summary.share_over_time(shown, 900)).to_dict()
    assert len(chart["encoding"]["color"]["scale"]["range"]) <= charts.MAX_LABELS + 1
    colours = {charts.label_colour(label, labels) for label in labels}
    assert len(colours) <= len(charts.FALLBACK_COLOURS) + 1


def test_word_frequencies_count_every_label_in_one_pass_over_a_bounded_vocabulary():
    texts = ["great great trip", "awful awful awful delay", "great view"] + [f"w{i}x" for i in range(50_000)]
    labels = ["positive", "negative", "positive"] + ["neutral"] * 50_000
    freqs = charts.word_frequencies_by_label(texts, labels, ["positive", "negative", "neutral"], limit=5)
    assert freqs["positive"] == {"great": 3, "trip": 1, "view": 1}
    assert freqs["negative"] == {"awful": 3, "delay": 1}
    assert len(freqs["neutral"]) == 5
    tail = "x " * charts.MAX_CLOUD_TEXT_CHARS + "hidden"  # past the characters a text may count
    assert "hidden" not in charts.word_frequencies_by_label([tail], ["p"], ["p"])["p"]
    long_word = "a" * (charts.MAX_WORD_CHARS + 1)
    assert charts.word_frequencies_by_label([long_word], ["p"], ["p"]) == {"p": {}}
    # Once the vocabulary is full, only words already counted still count.
    many = [f"v{i}q" for i in range(charts.MAX_VOCABULARY)] + ["late", "v0q"]
    counted = charts.word_frequencies_by_label(many, ["p"] * len(many), ["p"], limit=10**6)["p"]
    assert len(counted) == charts.MAX_VOCABULARY and "late" not in counted and counted["v0q"] == 2


HOSTILE_NAMES = [
    "**bold** _it_ [link](javascript:alert(1)) `code` # head | table ~strike~ ![img](x)",
    '<script>alert(1)</script><img src=x onerror="x">',
    "ctrl\x1b[31m\x00\x07 rtl\u202eevil zw\u200b\u2060",
    "https://evil.example/login www",
    "x" * 1_000_000,
    "<>[]()*`",
]


@pytest.mark.parametrize(
    "name", HOSTILE_NAMES, ids=["markdown", "html", "controls", "url", "huge", "symbols"]
)
def test_plain_leaves_no_markup_link_or_control_character(name):
    out = plain(name)
    assert 1 <= len(out) <= 80
    assert not set(out) & set("<>[]()*`#|~!:\"'=\x1b\x00\x07\u202e\u200b\u2060")
    assert "  " not in out and out == out.strip()


def test_plain_keeps_ordinary_names():
    assert plain("distilbert-sst2@1.0.0") == "distilbert-sst2@1.0.0"
    assert plain("org/model_name@3") == "org/model_name@3"
    assert plain("very positive") == "very positive"


def test_try_it_scores_locally_when_no_worker_answers(monkeypatch, dead_port):
    monkeypatch.setenv("SENTISTREAM_BROKER", f"kafka://127.0.0.1:{dead_port}")
    monkeypatch.setenv("SENTISTREAM_DASHBOARD_WORKER_URL", f"http://127.0.0.1:{dead_port}")
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
