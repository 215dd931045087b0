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


# What a real tweet carries and serving must clean exactly as training did (see `model.cleaning`):
# mentions and links (replaced by placeholders), HTML tags and entities, emoji (turned into words),
# and length past `max_length` (truncated). One row in five carries each, after the class keyword.
DECORATIONS = (
    lambda text, i: f"@friend_{i} {text}",
    lambda text, i: f"{text} https://t.co/x{i}?ref=feed",
    lambda text, i: f"<b>{text}</b> &amp; more<br />",
    lambda text, i: f"{text} \U0001f389\U0001f525",
    lambda text, i: f"{text} " + " ".join(FILLER * 3),
)


def decorated_texts(rows: int, seed: int = 0) -> pd.DataFrame:
    """`synthetic_texts` with a mention, link, HTML, emoji or a long tail added to each row (in turn)."""
    frame = synthetic_texts(rows, seed)
    frame["text"] = [DECORATIONS[i % len(DECORATIONS)](text, i) for i, text in enumerate(frame["text"])]
    return frame


def write_synthetic_csv(path: Path, rows: int = 600, seed: int = 0, decorated: bool = False) -> Path:
    """The synthetic task as a `text,label` CSV (`decorated`: texts as real tweets look)."""
    (decorated_texts if decorated else synthetic_texts)(rows, seed).to_csv(path, index=False)
    return path


def synthetic_corpus() -> list[str]:
    """Sentences that cover every word of the task, to train the tiny tokenizer on."""
    words = [w for group in KEYWORDS.values() for w in group] + FILLER
    return [" ".join(words)] * 3 + [f"#{i}" for i in range(10)]
