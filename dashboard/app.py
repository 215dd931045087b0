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
from dataclasses import replace
from datetime import UTC, datetime
from importlib.resources import files

import pandas as pd
import streamlit as st

from dashboard import alerts, charts, explanations, history, lifecycle, scoring, summary
from dashboard.feed import Feed, Snapshot
from dashboard.settings import DashboardSettings, worker_token
from model.settings import ModelSettings
from sentistream.errors import SentistreamError
from stream.events import SentimentStats
from stream.settings import ConsumerGroupSettings, KafkaSettings

DEFAULT_WINDOW = "last 15 minutes"
ESTIMATED_ACCURACY = "Estimated accuracy (no labels)"  # beside the measured "Live accuracy"
MODELS_KEY = "models"  # the model filter's widget key: the word-cloud fragment reads it too
WORD_CLOUD_REFRESH_S = 10
MODELS_REFRESH_S = 5.0  # the Models tab: stats windows close every 10 s, deployments are rare


@st.cache_resource(show_spinner=False)
def get_feed(key: str, _kafka: KafkaSettings, _settings: DashboardSettings) -> Feed:
    """The one feed of this server process for these settings (`key` is what the cache hashes)."""
    return Feed(_kafka, _settings, ConsumerGroupSettings().group_id).start()


@st.cache_resource(show_spinner="Loading the model for 'Try it'…", max_entries=2)
def get_local_engine(key: str, _settings):
    """The engine these model settings describe (`key`, their JSON, is what the cache hashes)."""
    return _settings.load_engine()


def local_engine():
    """The engine `SENTISTREAM_MODEL`/`_BACKEND`/... describe now, for scoring when no worker answers."""
    settings = ModelSettings()
    return get_local_engine(settings.model_dump_json(), settings)


class TryItError(Exception):
    """'Try it' cannot score: the worker refused, or the local model cannot be loaded (one line)."""


def score(settings: DashboardSettings, texts: list[str]) -> scoring.Scored:
    """`texts` scored by the worker or the local engine; TryItError with one line when neither can."""
    from pydantic import ValidationError

    try:
        return scoring.score_texts(settings.worker_url, texts, local_engine, worker_token(settings))
    except scoring.WorkerRefusedError as exc:
        raise TryItError(str(exc)) from None
    except ValidationError as exc:
        raise TryItError(
            f"no worker answers and the model settings are invalid: {exc.errors()[0]['msg']}"
        ) from None
    except SentistreamError as exc:
        raise TryItError(f"no worker answers and the local model cannot be loaded: {exc}") from None


@st.cache_data(ttl=10, show_spinner=False)
def worker_health(worker_url: str) -> dict | None:
    """The worker's /health answer (model, backend), or None when no worker answers."""
    import requests

    try:
        return requests.get(f"{worker_url.rstrip('/')}/health", timeout=0.5).json()
    except (requests.RequestException, ValueError):
        return None


def plain(name: object, limit: int = 80) -> str:
    """A topic-supplied name reduced to characters no markdown, HTML or link can be made of.

    Letters, digits, `_ - . @ /` and single spaces survive (no `:`, so no `scheme://` link);
    controls, format characters and every markup character go; long names are cut with "…".
    """
    text = " ".join(re.sub(r"[^\w\-.@/ ]", " ", str(name)[: limit * 4]).split())
    return (text[: limit - 1] + "…" if len(text) > limit else text) or "?"


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


def rejections_ui(snapshot: Snapshot) -> None:
    """A banner per rejected deployment that a worker reports in its latest stats window."""
    for reason, workers in lifecycle.rejections(snapshot.stats).items():
        names = ", ".join(_code(w) for w in workers[:5])
        more = f" and {len(workers) - 5} more" if len(workers) > 5 else ""
        st.warning(
            f"**Worker {names}{more} rejected a model deployment** and keeps serving its current model. "
            "Fix the bundle and deploy it again (`sentistream deploy BUNDLE`), or roll back "
            "(`sentistream deploy --rollback`). The worker's reason:",
            icon="🛑",
        )
        st.text(reason[:500])  # the worker's words, shown as text only


def model_filter_ui(rows: pd.DataFrame) -> tuple[str, ...]:
    """The models to show (a multiselect of the model_versions seen; none chosen: every model)."""
    options = lifecycle.model_options(rows, st.session_state.get(MODELS_KEY, ()))
    chosen = st.multiselect(
        "Models",
        options,
        key=MODELS_KEY,
        placeholder="All models",
        help="model_version of the model that scored each event (unknown: events from before versions)",
    )
    return tuple(chosen)


def model_ui(snapshot: Snapshot, settings: DashboardSettings) -> None:
    """Which model and backend is scoring (from the worker's /health, else from the events)."""
    health = worker_health(settings.worker_url)
    if health and health.get("model"):
        st.caption(
            f"Scoring with **{plain(health['model'])}** on backend **{plain(health.get('backend'))}** "
            f"(worker at `{settings.worker_url.replace('`', '')}`)"
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
    cols = st.columns(7)
    for col, (label, share) in zip(cols, shares, strict=False):
        col.metric(f"Share {plain(label)}", f"{share:.0%}")
    cols[4].metric("Consumer lag", "n/a" if kpis.lag is None else f"{kpis.lag:,}")
    accuracy = "n/a" if kpis.accuracy is None else f"{kpis.accuracy:.0%}"
    cols[5].metric(
        "Live accuracy",
        accuracy,
        help=f"measured: the label against the true labels of {kpis.labelled:,} replayed events",
    )
    estimated = "n/a" if kpis.estimated_accuracy is None else f"{kpis.estimated_accuracy:.0%}"
    cols[6].metric(
        ESTIMATED_ACCURACY,
        estimated,
        help=f"estimated without labels from the model's calibrated confidence over {kpis.estimated_events:,} "
        "events (the workers' stats windows in view), allowing for class shares other than the training "
        f"data's{_true_mix(kpis.estimated_shares)}; trustworthy for a calibrated bundle, not for VADER",
    )


def _true_mix(shares: dict[str, float] | None) -> str:
    if not shares:
        return ""
    mix = ", ".join(f"{label} {share:.0%}" for label, share in shares.items())
    return f" (it estimates the true mix as {mix}; the shares above are the predicted mix)"


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


def latest_ui(rows: pd.DataFrame, labels: list[str]) -> None:
    """The newest tweets with label and confidence, colour-coded by label; text shown as text only."""
    st.subheader("Latest tweets")
    table = summary.latest(rows)
    if table.empty:
        return
    st.text(f"Newest: {table['text'].iloc[0]}")
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
    alerts.live_banner_ui(kafka)
    status_ui(snapshot, kafka, settings)
    rejections_ui(snapshot)
    model_ui(snapshot, settings)
    filters = replace(filters, models=model_filter_ui(snapshot.rows))
    rows = summary.filter_rows(snapshot.rows, filters, snapshot.taken_at)
    kpis_ui(summary.compute_kpis(snapshot, rows, filters))
    shown = charts.cap_labels(rows)  # a topic with thousands of labels still draws a few colours
    charts_ui(shown, filters)
    latest_ui(rows, sorted(shown["label"].unique()))


def models_tab_ui(feed: Feed, filters: summary.Filters, kafka: KafkaSettings) -> None:
    """The model lifecycle: deployments, events per model, shadow agreement, live accuracy per model."""
    snapshot = feed.snapshot()
    rows = summary.filter_rows(snapshot.rows, filters, snapshot.taken_at)
    windows = lifecycle.recent(snapshot.windows, filters.window_s, snapshot.taken_at)
    left, right = st.columns(2)
    with left:
        deployments_ui(snapshot, kafka)
        canary_ui(snapshot)
    with right:
        st.subheader("Events per model")
        counts = lifecycle.events_per_model(windows, rows)
        if counts.empty:
            st.caption("Appears once scored events or stats windows arrive.")
        else:
            st.dataframe(counts, hide_index=True, use_container_width=True)
            st.caption("scored: the workers' stats windows in the time window; in view: the events kept here")
    shadow_ui(windows)
    accuracy_ui(windows)


def deployments_ui(snapshot: Snapshot, kafka: KafkaSettings) -> None:
    """The current champion and challenger on the control topic (names shown as table cells)."""
    st.subheader("Deployments")
    deployed = lifecycle.deployments_frame(snapshot.deployments)
    if deployed.empty:
        st.caption(
            f"Nothing deployed on `{plain(kafka.models_topic)}` yet: workers serve the model they started "
            "with. `sentistream deploy BUNDLE` ships one into the running stream."
        )
        return
    st.dataframe(
        deployed,
        hide_index=True,
        use_container_width=True,
        column_config={
            "earlier": st.column_config.NumberColumn(help="champions `--rollback` can go back to")
        },
    )


def canary_ui(snapshot: Snapshot) -> None:
    """A canary's state, the reason it ended (as text: it comes from the topic) and its gates."""
    st.subheader("Canary")
    now = datetime.fromtimestamp(snapshot.taken_at, UTC)
    view = lifecycle.canary_view(snapshot.deployments, snapshot.windows, now)
    if view is None:
        st.caption(
            "No canary. `sentistream deploy BUNDLE --canary 0.1` serves a candidate on a tenth of the input "
            "partitions and promotes it or rolls it back on its gates."
        )
        return
    canary, verdict = view.canary, view.verdict
    where = f"partitions {', '.join(str(p) for p in canary.partitions[:20])} of {_code(canary.topic)}"
    if canary.status == "rolled_back":
        st.error(
            f"**Canary {_code(canary.model_version)} was rolled back**; the champion serves {where} again. Why:"
        )
    elif canary.status == "promoted":
        st.success(
            f"**Canary {_code(canary.model_version)} was promoted** to champion on every partition. Why:"
        )
    else:
        st.info(f"**Canary {_code(canary.model_version)}** serves {where}; the gates so far:")
    if verdict.reason:
        st.text(verdict.reason[:1000])  # the decision's words, shown as text only
    if verdict.gates:
        st.dataframe(lifecycle.gates_frame(verdict), hide_index=True, use_container_width=True)
    if view.live and verdict.decision != "pending":
        st.caption(f"The gates say {verdict.decision}; the `deploy --canary` watching it publishes that.")


def shadow_ui(windows: list[SentimentStats]) -> None:
    """Champion/challenger agreement per window, the events the challenger dropped, the latest confusion."""
    st.subheader("Shadow challenger")
    agreement = lifecycle.agreement_over_time(windows)
    if agreement.empty:
        st.caption(
            "No challenger is scored in shadow. `sentistream deploy --shadow BUNDLE` scores one beside "
            "the champion on the same events; `sentistream deploy --promote` makes it the champion."
        )
        return
    latest = agreement[agreement["time"] == agreement["time"].max()]
    cols = st.columns(4)
    cols[0].metric("Agreement, latest window", _share(latest["agreed"].sum(), latest["compared"].sum()))
    cols[1].metric("Agreement, in view", _share(agreement["agreed"].sum(), agreement["compared"].sum()))
    cols[2].metric("Compared", f"{agreement['compared'].sum():,}")
    cols[3].metric("Dropped by the challenger", f"{agreement['dropped'].sum():,}")
    left, right = st.columns(2)
    left.altair_chart(charts.agreement_chart(agreement), use_container_width=True)
    confusion = lifecycle.latest_confusion(windows)
    right.caption(
        f"Latest window ({confusion.window_end:%H:%M:%S} UTC): rows are the champion "
        f"{_code(confusion.champion)}, columns the challenger {_code(confusion.challenger)}"
    )
    right.dataframe(confusion.table, use_container_width=True)


def accuracy_ui(windows: list[SentimentStats]) -> None:
    """Live accuracy per model over time, from the events that carried a true label."""
    st.subheader("Live accuracy per model")
    over_time = lifecycle.accuracy_over_time(windows)
    if over_time.empty:
        st.caption("Appears when the replayed events carry a `true_label` (a labelled dataset).")
        return
    left, right = st.columns(2)
    left.altair_chart(charts.accuracy_chart(over_time), use_container_width=True)
    right.dataframe(
        lifecycle.accuracy_per_model(over_time),
        hide_index=True,
        use_container_width=True,
        column_config={"accuracy": st.column_config.NumberColumn(format="percent")},
    )


def _code(name: object, limit: int = 80) -> str:
    """A topic-supplied name (model_version, host:pid) as inline code, kept whole where `plain` would
    turn its `+` and `:` into spaces: without backticks or line breaks nothing leaves the code span,
    and nothing inside one is markup or a link."""
    return "`" + (re.sub(r"[^\w\-.@/:+ ]", "", str(name)[: limit * 4])[:limit] or "?") + "`"


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "n/a"


@st.cache_data(ttl=WORD_CLOUD_REFRESH_S * 3, max_entries=16, show_spinner=False)
def word_clouds(
    feed_key: str, keyword: str, window_s: float | None, models: tuple[str, ...], refresh: int, _feed: Feed
) -> list[tuple[str, object]]:
    """(label, picture) of the most frequent labels: drawn once per `refresh` slot for every viewer."""
    snapshot = _feed.snapshot()
    filters = summary.Filters(keyword, window_s, models)
    rows = summary.filter_rows(snapshot.rows, filters, snapshot.taken_at)
    rows = rows.tail(charts.MAX_CLOUD_ROWS)
    labels = rows["label"].value_counts().index[:4].tolist()
    frequencies = charts.word_frequencies_by_label(rows["text"], rows["label"], labels)
    colours = sorted(charts.cap_labels(rows)["label"].unique())
    return [
        (label, charts.word_cloud(frequencies[label], charts.label_colour(label, colours)))
        for label in labels
    ]


def word_clouds_ui(feed: Feed, feed_key: str, filters: summary.Filters) -> None:
    """One word cloud per label, from the filtered events (refreshed less often: drawing is slow)."""
    st.subheader("Words per label")
    refresh = summary.refresh_slot(WORD_CLOUD_REFRESH_S)
    models = tuple(st.session_state.get(MODELS_KEY, ()))  # the model filter, set in live_ui
    clouds = word_clouds(feed_key, filters.keyword, filters.window_s, models, refresh, feed)
    if not clouds:
        st.caption("Word clouds appear once events arrive.")
        return
    for col, (label, image) in zip(st.columns(len(clouds)), clouds, strict=True):
        col.caption(plain(label))
        if image is not None:
            col.image(image, use_container_width=True)


def try_text_ui(settings: DashboardSettings) -> None:
    """A text box scored through the worker (or locally), with every label's probability."""
    text = st.text_area("Text to score", key="try_text", max_chars=5_000)
    if not (st.button("Score", key="try_score") and text.strip()):
        return
    try:
        scored = score(settings, [text])
    except TryItError as exc:
        st.error("Could not score this text:")
        st.text(str(exc))
        return
    prediction = scored.predictions[0]
    if not prediction.ok:
        st.error("The model could not score this text:")
        st.text(prediction.error)
        return
    st.metric("Label", plain(prediction.label), f"{prediction.score:.0%} confidence", delta_color="off")
    probs = scoring.probabilities_frame(prediction)
    st.bar_chart(probs, x="label", y="probability", horizontal=True)
    st.dataframe(probs, hide_index=True)
    st.caption(f"Scored by {plain(scored.model)} ({scored.source})")  # source: our own words and URL


def try_csv_ui(settings: DashboardSettings) -> None:
    """A CSV upload scored in batch, with the results to download."""
    limit = settings.upload_limit_mb * 1_000_000
    upload = st.file_uploader(
        f"CSV to score (up to {settings.upload_limit_mb} MB)", type=["csv"], key="try_csv"
    )
    if upload is None:
        return
    try:
        upload = scoring.read_upload(
            upload.getvalue(),
            limit,
            settings.upload_max_rows,
            settings.upload_max_columns,
            settings.upload_max_cells,
            settings.upload_max_cell_chars,
        )
    except ValueError as exc:
        st.error(str(exc))
        return
    frame = upload.frame
    if upload.rows_cut:
        st.warning(
            f"Only the first {len(frame):,} rows are scored (at most {settings.upload_max_cells:,} cells)."
        )
    if upload.cells_cut:
        st.warning(f"{upload.cells_cut:,} cells were cut to {settings.upload_max_cell_chars:,} characters.")
    columns = list(frame.columns)
    text_col = st.selectbox("Text column", columns, index=columns.index("text") if "text" in columns else 0)
    if st.button("Score file", key="try_csv_score"):
        try:
            st.session_state["scored_csv"] = _score_frame(frame, text_col, settings)
        except TryItError as exc:
            st.session_state.pop("scored_csv", None)
            st.error("Could not score this file:")
            st.text(str(exc))
    result = st.session_state.get("scored_csv")
    if result is not None:
        st.dataframe(result.head(200), hide_index=True)
        st.download_button("Download scored CSV", scoring.to_safe_csv(result), "scored.csv", "text/csv")


def _score_frame(frame: pd.DataFrame, text_col: str, settings: DashboardSettings) -> pd.DataFrame:
    texts = frame[text_col].astype(str).tolist()
    progress = st.progress(0.0, text="Scoring…")
    parts: list[scoring.Scored] = []
    done = 0
    for chunk in scoring.chunks(texts):  # each within the worker's /predict count and byte limits
        parts.append(score(settings, chunk))
        done += len(chunk)
        progress.progress(done / len(texts), text=f"Scored {done:,} rows")
    return scoring.scored_upload(frame, scoring.merge(parts))


def sign_in_configured() -> bool:
    """True when the app's secrets configure Streamlit's OIDC sign-in (an `[auth]` table)."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all (Streamlit raises its own not-found error)
        return False


def sign_in_ui() -> None:
    """With `[auth]` in the secrets, nothing below renders until the visitor signed in through the
    configured identity provider (`st.login`); docs/ARCHITECTURE.md, "Threat model"."""
    if not sign_in_configured() or st.user.get("is_logged_in"):
        return
    st.title("Sentistream")
    st.button("Sign in", on_click=st.login, type="primary")
    st.stop()


def main() -> None:
    """Render the page (Streamlit runs this script top to bottom on every interaction)."""
    st.set_page_config(page_title="Sentistream", page_icon="📈", layout="wide")
    sign_in_ui()
    kafka, settings = KafkaSettings(), DashboardSettings()
    feed_key = kafka.model_dump_json() + settings.model_dump_json()
    feed = get_feed(feed_key, kafka, settings)
    st.title("Sentistream: what the stream is saying")
    filters = filters_ui()
    live, models, try_it, past = st.tabs(["Live", "Models", "Try it", "History"])
    with live:
        st.fragment(live_ui, run_every=settings.refresh_s)(feed, filters, kafka, settings)
        st.fragment(word_clouds_ui, run_every=WORD_CLOUD_REFRESH_S)(feed, feed_key, filters)
    with models:
        models_every = max(settings.refresh_s, MODELS_REFRESH_S)
        st.fragment(models_tab_ui, run_every=models_every)(feed, filters, kafka)
    with try_it:
        try_text_ui(settings)
        explanations.try_it_ui(settings.worker_url, local_engine, worker_token(settings))
        try_csv_ui(settings)
    with past:
        history.history_tab_ui(kafka)


if __name__ == "__main__":
    main()
