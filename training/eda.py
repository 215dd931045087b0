"""`sentistream eda`: what a dataset looks like before training on it, as a report with images."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from model.cleaning import clean_batch, clean_text
from model.progress import steps
from training.datasets import LoadedDataset, load_dataset, parse_label_map
from training.plots import class_balance_png, text_length_png, word_cloud_png
from training.settings import EdaSettings

log = logging.getLogger(__name__)

# Placeholders that cleaning puts in every tweet say nothing about a class.
PLACEHOLDERS = {"user", "http", "https", "amp", "rt", "br"}


def explore(settings: EdaSettings) -> Path:
    """Write eda.json, the images and report.md for `settings.data`; returns the report directory."""
    data = load_dataset(
        settings.data, settings.format, settings.text_col, settings.label_col,
        drop_labels=settings.drop_labels(), label_map=parse_label_map(settings.label_map), require_labels=False,
    )  # fmt: skip
    frame = data.frame.assign(label=_labels(data.frame))
    out_dir = settings.output or Path(f"eda-{settings.data.stem or 'data'}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with steps("eda", 5 if settings.base_model else 4) as step:
        step("words and top tokens")
        summary = {
            "rows": data.report.as_dict(),
            "class_balance": frame["label"].value_counts().sort_index().to_dict(),
            "words_per_text": length_stats(frame),
            "top_tokens": top_tokens(frame, settings.top_tokens),
            "tokens_per_text": None,
        }
        if settings.base_model:
            step(f"token lengths ({settings.base_model})")
            summary["tokens_per_text"] = token_lengths(frame["text"], settings.base_model)
        step("plots")
        class_balance_png(frame["label"].value_counts().sort_index(), out_dir / "class_balance.png")
        text_length_png(frame, out_dir / "text_length.png")
        step("word clouds")
        clouds = _clouds(frame, out_dir)
        step("report")
        (out_dir / "eda.json").write_text(json.dumps(summary, indent=2, default=str))
        (out_dir / "report.md").write_text(eda_markdown(summary, data, clouds))
    log.info("EDA report: %s", out_dir / "report.md")
    return out_dir


def _labels(frame: pd.DataFrame) -> pd.Series:
    if "label" not in frame or frame["label"].isna().all():
        return pd.Series("all", index=frame.index)
    return frame["label"].fillna("(none)").astype(str)


def length_stats(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Words per text per class: mean, median, 95th percentile, max."""
    words = frame["text"].str.split().str.len()
    stats = words.groupby(frame["label"]).describe(percentiles=[0.5, 0.95])
    return {
        str(label): {"mean": row["mean"], "median": row["50%"], "p95": row["95%"], "max": row["max"]}
        for label, row in stats.iterrows()
    }


PERCENTILES = (50, 90, 95, 99)


def token_lengths(texts: pd.Series, base_model: str) -> dict:
    """Tokens per text as the model sees it (cleaned, special tokens included, not truncated):
    percentiles, and the smallest multiple of 8 that holds 99% of the texts whole as `--max-length`."""
    import numpy as np
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model, use_fast=True)
    cleaned = [c.text for c in clean_batch(texts.tolist())]
    lengths = np.array([len(ids) for ids in tokenizer(cleaned, truncation=False, verbose=False)["input_ids"]])
    limit = tokenizer.model_max_length if 0 < tokenizer.model_max_length <= 4096 else 512
    suggested = int(min(limit, max(8, -(-np.percentile(lengths, 99) // 8) * 8)))
    return {
        "tokenizer": base_model,
        **{f"p{q}": float(np.percentile(lengths, q)) for q in PERCENTILES},
        "max": int(lengths.max()),
        "suggested_max_length": suggested,
        "truncated_share_at_suggested": float((lengths > suggested).mean()),
    }


def token_counts(texts: pd.Series, limit: int) -> list[tuple[str, int]]:
    """The `limit` most frequent words (cleaned as the model sees them, English stop words removed)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    stop_words = sorted(ENGLISH_STOP_WORDS | PLACEHOLDERS)
    # Words of two or more letters; digits and underscores are not words here.
    vectorizer = CountVectorizer(stop_words=stop_words, token_pattern=r"(?u)\b[^\W\d_]{2,}\b")  # noqa: S106
    try:
        counts = vectorizer.fit_transform(clean_text(t) for t in texts).sum(axis=0).A1
    except ValueError:  # nothing but stop words
        return []
    vocabulary = vectorizer.get_feature_names_out()
    order = counts.argsort()[::-1][:limit]
    return [(str(vocabulary[i]), int(counts[i])) for i in order]


def top_tokens(frame: pd.DataFrame, limit: int) -> dict[str, list[tuple[str, int]]]:
    """`token_counts` per class."""
    return {str(label): token_counts(group["text"], limit) for label, group in frame.groupby("label")}


def _clouds(frame: pd.DataFrame, out_dir: Path) -> dict[str, str]:
    """One word cloud per class (from its 200 most frequent words); label -> file name."""
    files = {}
    for label, tokens in top_tokens(frame, 200).items():
        safe = "".join(c if c.isalnum() else "_" for c in label)
        files[label] = word_cloud_png(dict(tokens), f"{label}", out_dir / f"wordcloud_{safe}.png").name
    return files


def _token_section(tokens: dict | None) -> list[str]:
    if tokens is None:
        return ["## Text length (tokens)", "", "Pass `--base-model` to count tokens and get a suggested "
                "`--max-length`.", ""]  # fmt: skip
    header = " | ".join(f"p{q}" for q in PERCENTILES)
    values = " | ".join(f"{tokens[f'p{q}']:.0f}" for q in PERCENTILES)
    return [
        f"## Text length (tokens of `{tokens['tokenizer']}`)",
        "",
        f"| {header} | max |",
        "| " + " | ".join("---:" for _ in range(len(PERCENTILES) + 1)) + " |",
        f"| {values} | {tokens['max']} |",
        "",
        f"Suggested `--max-length {tokens['suggested_max_length']}`: 99% of texts fit whole "
        f"({tokens['truncated_share_at_suggested']:.1%} would be truncated).",
        "",
    ]


def eda_markdown(summary: dict, data: LoadedDataset, clouds: dict[str, str]) -> str:
    """The EDA report as markdown."""
    rows = summary["rows"]
    lines = [
        f"# Data exploration: `{data.path}`",
        "",
        f"Format `{data.format}`. {data.report.summary()}.",
        f"Malformed lines (first few): {rows['malformed_lines'] or 'none'}.",
        "",
        "## Class balance",
        "",
        "| class | rows | share |",
        "| --- | ---: | ---: |",
    ]
    total = sum(summary["class_balance"].values())
    lines += [f"| {k} | {v} | {v / total:.1%} |" for k, v in summary["class_balance"].items()]
    lines += ["", "![class balance](class_balance.png)", "", "## Text length (words)", ""]
    lines += ["| class | mean | median | p95 | max |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [
        f"| {k} | {s['mean']:.1f} | {s['median']:.0f} | {s['p95']:.0f} | {s['max']:.0f} |"
        for k, s in summary["words_per_text"].items()
    ]
    lines += ["", "![text length](text_length.png)", "", *_token_section(summary["tokens_per_text"])]
    lines += ["## Top tokens per class", ""]
    for label, tokens in summary["top_tokens"].items():
        lines += [f"- **{label}**: " + ", ".join(f"{t} ({n})" for t, n in tokens)]
    lines += ["", "## Word clouds", ""] + [f"![{label}]({name})" for label, name in clouds.items()]
    return "\n".join(lines) + "\n"
