"""The report images: confusion matrix, training curves, class balance, text lengths, word clouds.

matplotlib with the Agg backend (no display on a server); every function writes one PNG and
returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Write `fig` to `path` as a PNG, close it, return `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def confusion_matrix_png(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> Path:
    """Counts with row-normalised shading (rows: true label, columns: predicted)."""
    import numpy as np

    plt = pyplot()
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(labels), 1.2 + 1.0 * len(labels)))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    for (row, col), count in np.ndenumerate(counts):
        color = "white" if shares[row, col] > 0.5 else "black"
        ax.text(col, row, f"{int(count)}\n{shares[row, col]:.0%}", ha="center", va="center", color=color)
    return save_figure(fig, path)


def training_curves_png(history: Sequence[dict], metric: str, path: Path) -> Path:
    """Loss (training and validation) and `metric` and accuracy on a training sample next to validation,
    per epoch (from Trainer.log_history): training far above validation is overfitting."""
    plt = pyplot()
    train = [(h["epoch"], h["loss"]) for h in history if "loss" in h and "epoch" in h]
    evals = [h for h in history if "eval_loss" in h]
    samples = [h for h in history if "train_accuracy" in h]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    if train:
        left.plot(*zip(*train, strict=True), label="training loss", alpha=0.8)
    left.plot([h["epoch"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="validation loss")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    for key, name, color in ((metric, metric, "tab:green"), ("accuracy", "accuracy", "tab:blue")):
        right.plot([h["epoch"] for h in evals], [h.get(f"eval_{key}") for h in evals], "o-", color=color,
                   label=f"validation {name}")  # fmt: skip
        if samples:
            right.plot([h["epoch"] for h in samples], [h.get(f"train_{key}") for h in samples], "s--",
                       color=color, alpha=0.6, label=f"training {name}")  # fmt: skip
    right.set(xlabel="epoch", ylabel="score", title=f"{metric} and accuracy", ylim=(0, 1))
    right.legend(fontsize="small")
    return save_figure(fig, path)


def reliability_png(curves: dict, path: Path) -> Path:
    """Reliability diagram: accuracy against mean confidence per top-probability bin, one line per
    set of probabilities (`curves`: name -> `model.calibration.Reliability`), and the diagonal a
    calibrated model follows."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    for name, curve in curves.items():
        points = [(c, a) for c, a in zip(curve.confidence, curve.accuracy, strict=True) if c is not None]
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label=f"{name}: ECE {curve.ece:.3f}")
    ax.set(
        xlabel="confidence (top probability)",
        ylabel="accuracy",
        title="reliability",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(fontsize="small", loc="upper left")
    return save_figure(fig, path)


def class_balance_png(counts: pd.Series, path: Path) -> Path:
    """Bar chart of rows per label."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.5 + 1.0 * len(counts), 3.2))
    ax.bar(counts.index.astype(str), counts.to_numpy(), color="tab:blue")
    ax.set(ylabel="rows", title="class balance")
    return save_figure(fig, path)


def text_length_png(frame: pd.DataFrame, path: Path) -> Path:
    """Histogram of words per text, one line per label (99th percentile cut, so outliers do not flatten it)."""
    plt = pyplot()
    words = frame["text"].str.split().str.len()
    upper = max(int(words.quantile(0.99)), 1)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, group in words.groupby(frame["label"], sort=True):
        ax.hist(
            group.clip(upper=upper),
            bins=40,
            range=(0, upper),
            histtype="step",
            label=str(label),
            density=True,
        )
    ax.set(xlabel="words per text", ylabel="share of texts", title="text length by class")
    ax.legend()
    return save_figure(fig, path)


def word_cloud_png(frequencies: dict[str, int], title: str, path: Path) -> Path:
    """A word cloud of one class's token frequencies."""
    from wordcloud import WordCloud

    plt = pyplot()
    cloud = WordCloud(width=600, height=300, background_color="white", random_state=0)
    cloud.generate_from_frequencies(frequencies or {"(empty)": 1})
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.imshow(cloud, interpolation="bilinear")
    ax.set(title=title)
    ax.axis("off")
    return save_figure(fig, path)
