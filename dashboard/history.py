"""The "History" tab: days of scored events from the sink's Parquet files, queried with DuckDB.

Data access (`History`: plain functions over a folder, no Streamlit) is apart from rendering
(`history_ui`). DuckDB reads `OUTPUT/dt=*/hour=*/*.parquet` (what `sentistream sink` writes) with
the hour folders pruned by the time range, so a day's query does not open a month of files.
User input reaches SQL only as bound parameters. Tweet text is shown only through `st.dataframe`,
which never interprets markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from dashboard import charts
from dashboard.alerts import shared_alert_feed, with_alert_markers
from dashboard.names import shown_name
from dashboard.settings import HistorySettings

RANGES = {"last 24 hours": timedelta(hours=24), "last 7 days": timedelta(days=7), "last 30 days": timedelta(days=30)}  # fmt: skip
DEFAULT_RANGE = "last 24 hours"
SEARCH_LIMIT = 200


@dataclass(frozen=True)
class Span:
    """A half-open time range [since, until) in UTC."""

    since: datetime
    until: datetime

    @classmethod
    def last(cls, length: timedelta, now: datetime | None = None) -> Span:
        """The `length` before `now`."""
        now = now or datetime.now(UTC)
        return cls(now - length, now)

    @property
    def bucket(self) -> str:
        """DuckDB `date_trunc` unit that gives a readable number of points."""
        return "hour" if self.until - self.since <= timedelta(days=7) else "day"


class History:
    """Queries over the Parquet files in `output` (each call opens a short-lived DuckDB connection)."""

    def __init__(self, output: Path) -> None:
        self.output = Path(output)

    def has_files(self) -> bool:
        """True once the sink has written at least one file."""
        return self.output.is_dir() and any(self.output.glob("dt=*/hour=*/*.parquet"))

    def _query(
        self, sql: str, span: Span, params: list | None = None, leading: list | None = None
    ) -> pd.DataFrame:
        """Run `sql` with `{source}` standing for the span's rows; `leading`/`params`: ?s before/after it."""
        import duckdb

        source = (
            "read_parquet(?, hive_partitioning = true, hive_types = {'dt': VARCHAR, 'hour': VARCHAR}) "
            "WHERE error IS NULL AND scored_at >= ? AND scored_at < ? AND dt >= ? AND dt <= ?"
        )
        first_day, last_day = span.since.strftime("%Y-%m-%d"), span.until.strftime("%Y-%m-%d")
        bound = [
            str(self.output / "dt=*" / "hour=*" / "*.parquet"),
            span.since,
            span.until,
            first_day,
            last_day,
        ]
        with duckdb.connect() as db:
            db.execute("SET TimeZone = 'UTC'")
            return db.execute(sql.format(source=source), (leading or []) + bound + (params or [])).df()

    def totals(self, span: Span) -> pd.DataFrame:
        """One row: events, first and last scored_at in the span."""
        return self._query("SELECT count(*) AS events, min(scored_at) AS first, max(scored_at) AS last FROM {source}", span)  # fmt: skip

    def share_over_time(self, span: Span) -> pd.DataFrame:
        """Columns time, label, count, share: each label's share per hour (per day beyond a week)."""
        sql = (
            "SELECT time, label, count, count / sum(count) OVER (PARTITION BY time) AS share FROM ("
            "SELECT date_trunc(?, scored_at) AS time, label, count(*) AS count "
            "FROM {source} GROUP BY 1, 2) ORDER BY time, label"
        )
        return self._query(sql, span, leading=[span.bucket])

    def top_hashtags(self, span: Span, per_label: int = 10) -> pd.DataFrame:
        """Columns label, hashtag, count: the most frequent hashtags of each label."""
        sql = (
            "WITH tags AS (SELECT label, unnest(regexp_extract_all(lower(text), '#[[:alnum:]_]+')) AS hashtag "
            "FROM {source}), counted AS (SELECT label, hashtag, count(*) AS count, row_number() OVER "
            "(PARTITION BY label ORDER BY count(*) DESC, hashtag) AS rank FROM tags GROUP BY label, hashtag) "
            "SELECT label, hashtag, count FROM counted WHERE rank <= ? ORDER BY label, count DESC, hashtag"
        )
        return self._query(sql, span, [per_label])

    def search(
        self, span: Span, words: str, label: str | None = None, limit: int = SEARCH_LIMIT
    ) -> pd.DataFrame:
        """Newest events whose text contains `words` (case-insensitive, taken literally), optionally of one label."""
        literal = words.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        sql = (
            "SELECT scored_at, label, score, text, id, model FROM {source} "
            "AND text ILIKE ? ESCAPE '\\' AND (? IS NULL OR label = ?) ORDER BY scored_at DESC LIMIT ?"
        )
        return self._query(sql, span, [f"%{literal}%", label, label, limit])


# ---- rendering -----------------------------------------------------------------------------------


def history_tab_ui(kafka) -> None:
    """The whole tab as app.py calls it: settings from the environment, alerts from the alert feed."""
    history_ui(HistorySettings().history_dir, shared_alert_feed(kafka).recent())


def history_ui(output: Path | None, alerts: Sequence = ()) -> None:
    """The History tab: range picker, share over time (with `alerts` as markers), top hashtags, search."""
    import streamlit as st

    if output is None or not History(output).has_files():
        where = output or "DIR"
        st.info(
            f"No history yet in {where}. Start the sink: `sentistream sink --output {where}` "
            "(or set SENTISTREAM_HISTORY_DIR once for both, the sink and the dashboard).",
            icon="🗄️",
        )
        return
    history = History(output)
    choice = st.selectbox("Range", list(RANGES), index=list(RANGES).index(DEFAULT_RANGE), key="history_range")
    span = Span.last(RANGES[choice])
    totals = history.totals(span).iloc[0]
    st.metric("Events in range", f"{int(totals['events']):,}")
    if not totals["events"]:
        st.info("No events in this range; pick a longer one.")
        return
    st.subheader("Sentiment over time")
    in_span = [a for a in alerts if span.since <= a.since < span.until]
    chart = with_alert_markers(charts.share_chart(history.share_over_time(span), continuous=True), in_span)
    st.altair_chart(chart, use_container_width=True)
    hashtags_ui(history, span)
    search_ui(history, span)


def hashtags_ui(history: History, span: Span) -> None:
    """One table of top hashtags per label, side by side."""
    import streamlit as st

    st.subheader("Top hashtags per label")
    tags = history.top_hashtags(span)
    if tags.empty:
        st.caption("No hashtags in this range.")
        return
    labels = sorted(tags["label"].unique())[:4]
    for column, label in zip(st.columns(len(labels)), labels, strict=True):
        column.caption(shown_name(label))
        frame = tags.loc[tags["label"] == label, ["hashtag", "count"]]
        column.dataframe(frame, hide_index=True, use_container_width=True)


def search_ui(history: History, span: Span) -> None:
    """Search the range's texts; results in a table (text shown as text)."""
    import streamlit as st

    st.subheader("Search")
    words = st.text_input("Text contains", key="history_search", max_chars=200)
    if not words.strip():
        return
    found = history.search(span, words.strip())
    st.caption(f"{len(found):,} newest matches (at most {SEARCH_LIMIT})")
    st.dataframe(found, hide_index=True, use_container_width=True)
