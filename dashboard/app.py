"""The Streamlit page: `streamlit run dashboard/app.py` (what `sentistream dashboard` starts).

Data access lives in `feed.py` (one background consumer per server process, cached with
`st.cache_resource`); this file only renders (`*_ui` functions). The live part is a fragment that
reruns every `refresh_s` without reloading the page. Tweet text is untrusted: it is shown only
through widgets that never interpret markup (`st.dataframe`, `st.text`); names that come from the
topic (labels, models) are stripped to plain characters before they reach a markdown-capable label.
"""

from __future__ import annotations

import re
import time
from importlib.resources import files

import pandas as pd
import streamlit as st

from dashboard import charts, scoring, summary
from dashboard.feed import Feed, Snapshot
from dashboard.settings import DashboardSettings
from stream.settings import ConsumerGroupSettings, KafkaSettings

DEFAULT_WINDOW = "last 15 minutes"
WORD_CLOUD_REFRESH_S = 10


@st.cache_resource(show_spinner=False)
def get_feed(key: str, _kafka: KafkaSettings, _settings: DashboardSettings) -> Feed:
    """The one feed of this server process for these settings (`key` is what the cache hashes)."""
    return Feed(_kafka, _settings, ConsumerGroupSettings().group_id).start()


@st.cache_resource(show_spinner="Loading the model for 'Try it'…")
def get_local_engine():
    """The engine `SENTISTREAM_MODEL`/`_BACKEND` describe, for scoring when no worker answers."""
    from model.settings import ModelSettings

    return ModelSettings().load_engine()


@st.cache_data(ttl=10, show_spinner=False)
def worker_health(worker_url: str) -> dict | None:
    """The worker's /health answer (model, backend), or None when no worker answers."""
    import requests

    try:
        return requests.get(f"{worker_url.rstrip('/')}/health", timeout=0.5).json()
    except (requests.RequestException, ValueError):
        return None


def plain(name: object) -> str:
    """A topic-supplied name reduced to characters no markdown or HTML can be made of."""
    return re.sub(r"[^\w\-.@/: ]", "", str(name))[:80] or "?"


# -- page parts ----------------------------------------------------------------------------------


def filters_ui() -> summary.Filters:
    """Sidebar filters; every part of the page applies them."""
    st.sidebar.header("Filters")
    keyword = st.sidebar.text_input("Keyword or #hashtag", key="keyword", max_chars=100)
    window = st.sidebar.selectbox(
        "Time window", list(summary.WINDOWS), index=list(summary.WINDOWS).index(DEFAULT_WINDOW), key="window"
    )
    return summary.Filters(keyword=keyword, window_s=summary.WINDOWS[window])


def status_ui(snapshot: Snapshot, kafka: KafkaSettings, settings: DashboardSettings) -> None:
    """A banner a person understands: no broker, lost broker, or no events yet."""
    conn, address = snapshot.connection, snapshot.connection.broker
    if conn.state == "unreachable":
        st.error(
            f"**No Kafka broker answers at {address}.** Start the local one with `sentistream kafka start`, "
            f"or point the dashboard at yours with `sentistream dashboard --broker kafka://HOST:PORT`. "
            f"Retrying every {settings.retry_s:g} s on its own.",
            icon="🔌",
        )
    elif conn.state == "lost":
        ago = time.time() - conn.since
        st.warning(
            f"**Lost the connection to Kafka at {address} {ago:.0f} s ago.** Showing the last data; "
            f"reconnecting on its own every {settings.retry_s:g} s.",
            icon="⚠️",
        )
    elif conn.state == "connecting":
        st.info(f"Connecting to Kafka at {address}…", icon="⏳")
    elif snapshot.totals.scored == 0:
        sample = files("stream") / "data" / "sample_tweets.csv"
        st.info(
            f"**Connected to Kafka at {address}, but no scored events on `{kafka.scored_topic}` yet.** "
            f"Start a worker (`sentistream worker --broker {kafka.broker}`) and replay some data: "
            f"`sentistream replay {sample} --loop --rate 5 --broker {kafka.broker}`.",
            icon="💤",
        )


def model_ui(snapshot: Snapshot, settings: DashboardSettings) -> None:
    """Which model and backend is scoring (from the worker's /health, else from the events)."""
    health = worker_health(settings.worker_url)
    if health and health.get("model"):
        st.caption(
            f"Scoring with **{plain(health['model'])}** on backend **{plain(health.get('backend'))}** "
            f"(worker at {plain(settings.worker_url)})"
        )
    elif not snapshot.rows.empty:
        st.caption(
            f"Events scored by **{plain(snapshot.rows['model'].iloc[-1])}** (no worker answers /health)"
        )


def kpis_ui(kpis: summary.Kpis) -> None:
    """The headline numbers, two rows of metrics."""
    cols = st.columns(6)
    cols[0].metric("Events/s", f"{kpis.events_per_s:.1f}")
    cols[1].metric("Total scored", f"{kpis.scored:,}")
    cols[2].metric("In view", f"{kpis.in_view:,}")
    cols[3].metric("Dead-lettered", f"{kpis.dead_lettered:,}")
    cols[4].metric("Latency p50", _ms(kpis.latency_p50_ms))
    cols[5].metric("Latency p99", _ms(kpis.latency_p99_ms))
    shares = list(kpis.shares.items())[:4]
    cols = st.columns(6)
    for col, (label, share) in zip(cols, shares, strict=False):
        col.metric(f"Share {plain(label)}", f"{share:.0%}")
    cols[4].metric("Consumer lag", "n/a" if kpis.lag is None else f"{kpis.lag:,}")
    accuracy = "n/a" if kpis.accuracy is None else f"{kpis.accuracy:.0%}"
    cols[5].metric(
        "Live accuracy", accuracy, help=f"against the true labels of {kpis.labelled:,} replayed events"
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def charts_ui(rows: pd.DataFrame, filters: summary.Filters) -> None:
    """Share of each label over time and the confidence histogram."""
    left, right = st.columns(2)
    left.subheader("Sentiment over time")
    right.subheader("Confidence")
    if rows.empty:
        left.info("No events match the filters yet.")
        return
    left.altair_chart(
        charts.share_chart(summary.share_over_time(rows, filters.window_s)), use_container_width=True
    )
    right.altair_chart(charts.confidence_chart(rows), use_container_width=True)


def latest_ui(rows: pd.DataFrame) -> None:
    """The newest tweets with label and confidence, colour-coded by label; text shown as text only."""
    st.subheader("Latest tweets")
    table = summary.latest(rows)
    if table.empty:
        return
    st.text(f"Newest: {table['text'].iloc[0]}")
    labels = sorted(table["label"].unique())
    styled = table.style.map(lambda v: f"color: {charts.label_colour(v, labels)}", subset=["label"])
    st.dataframe(
        styled,
        hide_index=True,
        use_container_width=True,
        column_config={
            "confidence": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f")
        },
    )


def live_ui(feed: Feed, filters: summary.Filters, kafka: KafkaSettings, settings: DashboardSettings) -> None:
    """Everything that changes every second."""
    snapshot = feed.snapshot()
    status_ui(snapshot, kafka, settings)
    model_ui(snapshot, settings)
    rows = summary.filter_rows(snapshot.rows, filters, snapshot.taken_at)
    kpis_ui(summary.compute_kpis(snapshot, rows, filters))
    charts_ui(rows, filters)
    latest_ui(rows)


def word_clouds_ui(feed: Feed, filters: summary.Filters) -> None:
    """One word cloud per label, from the filtered events (refreshed less often: drawing is slow)."""
    snapshot = feed.snapshot()
    rows = summary.filter_rows(snapshot.rows, filters, snapshot.taken_at)
    st.subheader("Words per label")
    labels = rows["label"].value_counts().index[:4].tolist()
    if not labels:
        st.caption("Word clouds appear once events arrive.")
        return
    for col, label in zip(st.columns(len(labels)), labels, strict=True):
        frequencies = charts.word_frequencies(rows.loc[rows["label"] == label, "text"])
        image = charts.word_cloud(frequencies, charts.label_colour(label, labels))
        col.caption(plain(label))
        if image is not None:
            col.image(image, use_container_width=True)


def try_text_ui(settings: DashboardSettings) -> None:
    """A text box scored through the worker (or locally), with every label's probability."""
    text = st.text_area("Text to score", key="try_text", max_chars=5_000)
    if not (st.button("Score", key="try_score") and text.strip()):
        return
    scored = scoring.score_texts(settings.worker_url, [text], get_local_engine)
    prediction = scored.predictions[0]
    if "error" in prediction:
        st.error("The model could not score this text:")
        st.text(prediction["error"])
        return
    st.metric("Label", plain(prediction["label"]), f"{prediction['score']:.0%} confidence", delta_color="off")
    probs = scoring.probabilities_frame(prediction)
    st.bar_chart(probs, x="label", y="probability", horizontal=True)
    st.dataframe(probs, hide_index=True)
    st.caption(f"Scored by {plain(scored.model)} ({plain(scored.source)})")


def try_csv_ui(settings: DashboardSettings) -> None:
    """A CSV upload scored in batch, with the results to download."""
    limit = settings.upload_limit_mb * 1_000_000
    upload = st.file_uploader(
        f"CSV to score (up to {settings.upload_limit_mb} MB)", type=["csv"], key="try_csv"
    )
    if upload is None:
        return
    try:
        frame, cut = scoring.read_upload(upload.getvalue(), limit, settings.upload_max_rows)
    except ValueError as exc:
        st.error(str(exc))
        return
    if cut:
        st.warning(f"Only the first {settings.upload_max_rows:,} rows are scored.")
    columns = list(frame.columns)
    text_col = st.selectbox("Text column", columns, index=columns.index("text") if "text" in columns else 0)
    if st.button("Score file", key="try_csv_score"):
        st.session_state["scored_csv"] = _score_frame(frame, text_col, settings)
    result = st.session_state.get("scored_csv")
    if result is not None:
        st.dataframe(result.head(200), hide_index=True)
        st.download_button("Download scored CSV", scoring.to_safe_csv(result), "scored.csv", "text/csv")


def _score_frame(frame: pd.DataFrame, text_col: str, settings: DashboardSettings) -> pd.DataFrame:
    texts = frame[text_col].astype(str).tolist()
    progress = st.progress(0.0, text="Scoring…")
    parts = []
    for start in range(0, len(texts), scoring.PREDICT_CHUNK):
        chunk = texts[start : start + scoring.PREDICT_CHUNK]
        parts.append(scoring.score_texts(settings.worker_url, chunk, get_local_engine))
        progress.progress(
            min(1.0, (start + len(chunk)) / len(texts)), text=f"Scored {start + len(chunk):,} rows"
        )
    merged = scoring.Scored([p for s in parts for p in s.predictions], parts[-1].model, parts[-1].source)
    return scoring.with_predictions(frame, text_col, merged)


def main() -> None:
    """Render the page (Streamlit runs this script top to bottom on every interaction)."""
    st.set_page_config(page_title="Sentistream", page_icon="📈", layout="wide")
    kafka, settings = KafkaSettings(), DashboardSettings()
    feed = get_feed(kafka.model_dump_json() + settings.model_dump_json(), kafka, settings)
    st.title("Sentistream: what the stream is saying")
    filters = filters_ui()
    live, try_it = st.tabs(["Live", "Try it"])
    with live:
        st.fragment(live_ui, run_every=settings.refresh_s)(feed, filters, kafka, settings)
        st.fragment(word_clouds_ui, run_every=WORD_CLOUD_REFRESH_S)(feed, filters)
    with try_it:
        try_text_ui(settings)
        try_csv_ui(settings)


if __name__ == "__main__":
    main()
