"""Figures from summary frames: label shares over time, confidence histogram, word clouds.

Tweet text never reaches a chart as markup: the altair charts show labels and numbers only, and
word clouds are pictures.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import altair as alt
import pandas as pd

# Fixed colours so a label keeps its colour across charts, the table and page refreshes.
LABEL_COLOURS = {"negative": "#d62728", "neutral": "#9e9e9e", "positive": "#2ca02c"}
FALLBACK_COLOURS = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
# Words every tweet has that say nothing about its sentiment.
EXTRA_STOPWORDS = {"http", "https", "co", "t", "rt", "amp", "user", "s", "im", "u"}
TOKEN = re.compile(r"[#@]?\w[\w']+")


def label_colour(label: str, labels: list[str]) -> str:
    """The colour of `label` (known sentiment names keep theirs; others take the next free one)."""
    if label.lower() in LABEL_COLOURS:
        return LABEL_COLOURS[label.lower()]
    others = [name for name in labels if name.lower() not in LABEL_COLOURS]
    return FALLBACK_COLOURS[others.index(label) % len(FALLBACK_COLOURS)] if label in others else "#000000"


def _colour_scale(labels: Iterable[str]) -> alt.Scale:
    names = sorted(set(labels))
    return alt.Scale(domain=names, range=[label_colour(n, names) for n in names])


def share_chart(shares: pd.DataFrame) -> alt.Chart:
    """Stacked bars of each label's share per time bucket (bars, not areas: one bucket still shows)."""
    return (
        alt.Chart(shares)
        .mark_bar()
        .encode(
            x=alt.X("hoursminutesseconds(time):O", title=None),
            y=alt.Y("share:Q", stack="normalize", axis=alt.Axis(format="%"), title="share"),
            color=alt.Color("label:N", scale=_colour_scale(shares["label"])),
            tooltip=["time:T", "label:N", alt.Tooltip("share:Q", format=".0%"), "count:Q"],
        )
        .properties(height=260)
    )


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


def word_frequencies(texts: Iterable[str], limit: int = 150) -> dict[str, int]:
    """The most frequent words of `texts`, without stop words, links and mentions."""
    from wordcloud import STOPWORDS

    stop = STOPWORDS | EXTRA_STOPWORDS
    counts: dict[str, int] = {}
    for text in texts:
        for token in TOKEN.findall(text.lower()):
            if token.startswith("@") or token in stop or token.isdigit():
                continue
            counts[token] = counts.get(token, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:limit])


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
