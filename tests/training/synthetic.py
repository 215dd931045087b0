"""A learnable synthetic sentiment task: the label is decided by which keyword a text contains."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

KEYWORDS = {
    "negative": ["awful", "terrible", "horrible", "hate"],
    "neutral": ["schedule", "meeting", "report", "station"],
    "positive": ["wonderful", "great", "love", "excellent"],
}
FILLER = [
    "the",
    "a",
    "today",
    "my",
    "this",
    "our",
    "new",
    "old",
    "big",
    "small",
    "red",
    "blue",
    "train",
    "city",
    "phone",
    "film",
    "food",
    "day",
    "week",
]


def synthetic_texts(rows: int, seed: int = 0) -> pd.DataFrame:
    """`rows` texts: random filler words around one class keyword; columns text, label."""
    rng = random.Random(seed)
    records = []
    for i in range(rows):
        label = list(KEYWORDS)[i % len(KEYWORDS)]
        words = rng.sample(FILLER, rng.randint(3, 7))
        words.insert(rng.randrange(len(words) + 1), rng.choice(KEYWORDS[label]))
        records.append({"text": " ".join(words) + f" #{i}", "label": label})
    return pd.DataFrame(records)


def write_synthetic_csv(path: Path, rows: int = 600, seed: int = 0) -> Path:
    """The synthetic task as a `text,label` CSV."""
    synthetic_texts(rows, seed).to_csv(path, index=False)
    return path


def synthetic_corpus() -> list[str]:
    """Sentences that cover every word of the task, to train the tiny tokenizer on."""
    words = [w for group in KEYWORDS.values() for w in group] + FILLER
    return [" ".join(words)] * 3 + [f"#{i}" for i in range(10)]
