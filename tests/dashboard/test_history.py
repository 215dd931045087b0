"""The History tab over files the sink writes: share over time, hashtags per label, search.

Files are made with the sink's own `write_batch`, so the tab reads exactly what the sink writes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.history import History, Span
from stream.sink.writer import temporary_name, to_row, write_batch

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0) - timedelta(hours=1)
MARKUP = "<script>window.__xss = 1</script> **bold** 100% sure #Launch"
EVENTS = [
    # (hours ago, label, text)
    *[(5, "negative", f"so slow today #outage {'#monday' * (i < 3)} {i}") for i in range(6)],
    *[(5, "positive", f"love the new app #launch {i}") for i in range(2)],
    *[(1, "positive", f"great release #launch #monday {i}") for i in range(9)],
    (1, "negative", MARKUP),
    (24 * 9, "negative", "ancient #outage"),  # outside the default 24 hours
]


def write_history(folder: Path) -> Path:
    rows = []
    for offset, (hours, label, text) in enumerate(EVENTS):
        value = orjson.dumps({
            "id": f"h{offset}", "text": text, "label": label, "score": 0.8, "scores": {label: 0.8},
            "model": "tiny@1", "scored_at": (NOW - timedelta(hours=hours)).isoformat(), "latency_ms": 3.0,
        })  # fmt: skip
        record = SimpleNamespace(topic="t", partition=0, offset=offset, timestamp=0, key=None, value=value)
        rows.append(to_row(record))
    rows.append(
        to_row(
            SimpleNamespace(topic="t", partition=0, offset=len(rows), timestamp=0, key=None, value=b"junk")
        )
    )
    write_batch(folder, "tweets-scored", 0, rows)
    return folder


@pytest.fixture
def history_dir(tmp_path: Path) -> Path:
    return write_history(tmp_path / "history")


def test_queries_read_the_sink_files(history_dir: Path) -> None:
    history, day = History(history_dir), Span.last(timedelta(hours=24), NOW + timedelta(hours=1))
    assert int(history.totals(day)["events"].iloc[0]) == 18  # not the 9-day-old one, not the junk row
    shares = history.share_over_time(day)
    late = shares[shares["time"] == shares["time"].max()].set_index("label")["share"]
    assert late["positive"] == pytest.approx(0.9) and late["negative"] == pytest.approx(0.1)
    tags = history.top_hashtags(day)
    assert tags[tags["label"] == "negative"].iloc[0].tolist() == ["negative", "#outage", 6]
    assert tags[tags["label"] == "positive"].iloc[0].tolist() == ["positive", "#launch", 11]
    assert int(history.totals(Span.last(timedelta(days=30), NOW))["events"].iloc[0]) == 19


def test_a_file_the_sink_is_still_writing_is_not_read(history_dir: Path) -> None:
    """DuckDB's `*.parquet` glob matches hidden files too: a half-written one failed every query."""
    folder = max(history_dir.glob("dt=*/hour=*"))  # the newest hour: in the queried span
    (
        folder / temporary_name("tweets-scored+0+00000000000000000020+00000000000000000029+1of1.parquet")
    ).write_bytes(b"half a file")
    history, day = History(history_dir), Span.last(timedelta(hours=24), NOW + timedelta(hours=1))
    assert int(history.totals(day)["events"].iloc[0]) == 18


def test_search_takes_the_words_literally(history_dir: Path) -> None:
    history, day = History(history_dir), Span.last(timedelta(hours=24), NOW + timedelta(hours=1))
    assert history.search(day, "100%")["id"].tolist() == ["h17"]
    assert len(history.search(day, "%")) == 1  # '%' is not a wildcard
    assert len(history.search(day, "RELEASE")) == 9
    assert history.search(day, "'; DROP TABLE x; --").empty


def tab_script(folder: str) -> None:
    from pathlib import Path

    from dashboard.history import history_ui

    history_ui(Path(folder) if folder else None)


def test_history_tab_in_apptest(history_dir: Path) -> None:
    at = AppTest.from_function(tab_script, args=(str(history_dir),), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.metric[0].value == "18"  # the last 24 hours: not the 9-day-old event, not the junk row
    at.text_input(key="history_search").input("xss").run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert table["text"].tolist() == [MARKUP]  # shown as data in a table ...
    assert all("xss" not in m.value for m in at.markdown)  # ... never as markdown


def test_history_tab_without_files_says_how_to_start_the_sink(tmp_path: Path) -> None:
    at = AppTest.from_function(tab_script, args=(str(tmp_path / "none"),), default_timeout=30).run()
    assert not at.exception and "sentistream sink --output" in at.info[0].value
