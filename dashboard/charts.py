"""Figures from summary frames: label shares over time, confidence histogram, word clouds, and the
model lifecycle (shadow agreement, live accuracy per model).

Tweet text never reaches a chart as markup: the altair charts show labels and numbers only, and
word clouds are pictures.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import altair as alt
import pandas as pd

from dashboard.feed import OTHER

# Fixed colours so a label keeps its colour across charts, the table and page refreshes.
LABEL_COLOURS = {"negative": "#d62728", "neutral": "#9e9e9e", "positive": "#2ca02c"}
FALLBACK_COLOURS = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
OTHER_COLOUR = "#bdbdbd"
LEGEND_LABEL_PX = 480  # a model_version (name@version+checksum) is long and must read whole
# Labels come from the topic: the charts draw the most frequent few, the rest as one "(other)".
MAX_LABELS = len(LABEL_COLOURS) + len(FALLBACK_COLOURS)
# Word clouds read the newest rows only and count a bounded vocabulary of bounded words, so a
# stream of random tokens costs the same as a stream of real ones.
MAX_CLOUD_ROWS = 5_000
MAX_VOCABULARY = 20_000
MAX_WORD_CHARS = 30
MAX_CLOUD_TEXT_CHARS = 280  # a tweet's length: a 1,000-character text counts no more than one
# Words every tweet has that say nothing about its sentiment.
EXTRA_STOPWORDS = {"http", "https", "co", "t", "rt", "amp", "user", "s", "im", "u"}
TOKEN = re.compile(r"[#@]?\w[\w']+")


def label_colour(label: str, labels: list[str]) -> str:
    """The colour of `label` (known sentiment names keep theirs; others take the next free one).

    Only the first MAX_LABELS of `labels` get a colour of their own; the rest share OTHER_COLOUR.
    """
    if label.lower() in LABEL_COLOURS:
        return LABEL_COLOURS[label.lower()]
    others = [n for n in labels[:MAX_LABELS] if n.lower() not in LABEL_COLOURS and n != OTHER]
    return FALLBACK_COLOURS[others.index(label) % len(FALLBACK_COLOURS)] if label in others else OTHER_COLOUR


def cap_labels(rows: pd.DataFrame, max_labels: int = MAX_LABELS) -> pd.DataFrame:
    """`rows` with every label but the `max_labels` most frequent renamed OTHER (for the charts)."""
    top = rows["label"].value_counts().index[:max_labels]
    if rows["label"].isin(top).all():
        return rows
    return rows.assign(label=rows["label"].where(rows["label"].isin(top), OTHER))


def _colour_scale(labels: Iterable[str]) -> alt.Scale:
    names = sorted(set(labels))[: MAX_LABELS + 1]
    return alt.Scale(domain=names, range=[label_colour(n, names) for n in names])


def share_chart(shares: pd.DataFrame, continuous: bool = False) -> alt.Chart:
    """Stacked shares of each label per time bucket (labels and numbers only, never text).

    Live: bars on an ordinal clock axis (bars, not areas: one bucket still shows). `continuous`
    (the History tab): areas on a temporal axis, on which alert markers can be layered.
    """
    chart = alt.Chart(shares).mark_area() if continuous else alt.Chart(shares).mark_bar()
    x = alt.X("time:T", title=None) if continuous else alt.X("hoursminutesseconds(time):O", title=None)
    return chart.encode(
        x=x,
        y=alt.Y("share:Q", stack="normalize", axis=alt.Axis(format="%"), title="share"),
        color=alt.Color("label:N", scale=_colour_scale(shares["label"])),
        tooltip=["time:T", "label:N", alt.Tooltip("share:Q", format=".0%"), "count:Q"],
    ).properties(height=260)


def confidence_chart(rows: pd.DataFrame) -> alt.Chart:
    """Histogram of the model's confidence (probability of the chosen label), by label."""
    return (
        alt.Chart(rows[["score", "label"]])
        .mark_bar()
        .encode(
            x=alt.X("score:Q", bin=alt.Bin(extent=[0, 1], step=0.05), title="confidence"),
            y=alt.Y("count():Q", title="events"),
            color=alt.Color("label:N", scale=_colour_scale(rows["label"])),
            tooltip=["label:N", "count():Q"],
        )
        .properties(height=260)
    )


def agreement_chart(agreement: pd.DataFrame) -> alt.LayerChart:
    """Champion/challenger agreement per window (line, left axis) over the events the challenger
    dropped (bars, right axis); names and numbers only."""
    base = alt.Chart(agreement.assign(pair=agreement["champion"] + " vs " + agreement["challenger"]))
    x = alt.X("hoursminutesseconds(time):O", title=None)
    tooltip = ["time:T", "pair:N", alt.Tooltip("agreement:Q", format=".1%"), "compared:Q", "dropped:Q"]
    dropped = base.mark_bar(color=OTHER_COLOUR, opacity=0.6).encode(
        x=x,
        y=alt.Y(
            "sum(dropped):Q", title="dropped by the challenger", axis=alt.Axis(format="d", tickMinStep=1)
        ),
        tooltip=tooltip,
    )
    agreed = base.mark_line(point=True).encode(
        x=x,
        y=alt.Y("agreement:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title="agreement"),
        color=alt.Color("pair:N", title=None, legend=alt.Legend(orient="bottom", labelLimit=LEGEND_LABEL_PX)),
        tooltip=tooltip,
    )
    return alt.layer(dropped, agreed).resolve_scale(y="independent").properties(height=260)


def accuracy_chart(accuracy: pd.DataFrame) -> alt.Chart:
    """Live accuracy per window, one line per model (dashed for a shadow challenger)."""
    frame = accuracy.assign(series=accuracy["model"] + " (" + accuracy["role"] + ")")
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("hoursminutesseconds(time):O", title=None),
            y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            color=alt.Color(
                "series:N", title=None, legend=alt.Legend(orient="bottom", labelLimit=LEGEND_LABEL_PX)
            ),
            strokeDash=alt.StrokeDash(
                "role:N",
                legend=None,
                scale=alt.Scale(domain=["champion", "challenger"], range=[[1, 0], [4, 3]]),
            ),
            tooltip=["time:T", "model:N", "role:N", alt.Tooltip("accuracy:Q", format=".1%"), "labelled:Q"],
        )
        .properties(height=260)
    )


def word_frequencies_by_label(
    texts: Iterable[str], labels: Iterable[str], wanted: Iterable[str], limit: int = 150
) -> dict[str, dict[str, int]]:
    """The most frequent words of each wanted label's texts, in one pass over a bounded vocabulary.

    Each text counts up to MAX_CLOUD_TEXT_CHARS characters. Stop words, links, mentions, numbers
    and words over MAX_WORD_CHARS are left out; once MAX_VOCABULARY distinct words are counted,
    new words are ignored (known ones still count).
    """
    from wordcloud import STOPWORDS

    stop = STOPWORDS | EXTRA_STOPWORDS
    counts: dict[str, Counter[str]] = {label: Counter() for label in wanted}
    vocabulary: set[str] = set()
    for text, label in zip(texts, labels, strict=True):
        counter = counts.get(label)
        if counter is None:
            continue
        for token in TOKEN.findall(text[:MAX_CLOUD_TEXT_CHARS].lower()):
            if token.startswith("@") or token in stop or token.isdigit() or len(token) > MAX_WORD_CHARS:
                continue
            if token not in vocabulary:
                if len(vocabulary) >= MAX_VOCABULARY:
                    continue
                vocabulary.add(token)
            counter[token] += 1
    return {label: dict(counter.most_common(limit)) for label, counter in counts.items()}


def word_cloud(frequencies: dict[str, int], colour: str):
    """A word-cloud picture (PIL image) of `frequencies`, drawn in one colour; None when empty."""
    if not frequencies:
        return None
    from wordcloud import WordCloud

    cloud = WordCloud(
        width=480,
        height=260,
        background_color="white",
        random_state=0,  # the same words give the same picture on every refresh
        color_func=lambda *args, **kwargs: colour,
    )
    return cloud.generate_from_frequencies(frequencies).to_image()
