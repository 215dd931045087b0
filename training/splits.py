"""Train/validation/test splits: the data's own when it ships them, else stratified with a fixed seed."""

from __future__ import annotations

import logging

import pandas as pd

from model.cleaning import clean_text
from sentistream.errors import UsageError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


def split_dataset(
    frame: pd.DataFrame, seed: int = 42, validation_size: float = 0.1, test_size: float = 0.1
) -> dict[str, pd.DataFrame]:
    """`{"train", "validation", "test"}` frames; splits the data lacks are carved from its train rows."""
    given = _given_splits(frame)
    train, carved_test = given.pop("train"), "test" not in given
    if carved_test:
        train, given["test"] = _stratified(train, test_size, seed)
    if "validation" not in given:
        # A fraction of what is left, so validation is `validation_size` of the whole data.
        fraction = validation_size / (1 - test_size) if carved_test else validation_size
        train, given["validation"] = _stratified(train, fraction, seed)
    splits = {"train": train, **given}
    for name in SPLITS:
        if splits[name].empty:
            raise UsageError(
                f"the {name} split is empty; give more rows (each class needs a few in every split)"
            )
    return {name: splits[name].reset_index(drop=True) for name in SPLITS}


def _given_splits(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    if "split" not in frame or frame["split"].isna().all():
        return {"train": frame}
    parts = {str(name): part.drop(columns="split") for name, part in frame.groupby("split", sort=False)}
    if "train" not in parts:
        # Only evaluation splits shipped (e.g. a test file): treat all of it as data to split.
        return {"train": frame.drop(columns="split")}
    return {name: part for name, part in parts.items() if name in SPLITS}


def _stratified(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held-out) with class proportions kept where every class has at least two rows."""
    from sklearn.model_selection import train_test_split

    counts = frame["label"].value_counts()
    stratify = frame["label"] if counts.min() >= 2 and len(frame) * fraction >= len(counts) else None
    if stratify is None:
        log.warning("too few rows per class to stratify; splitting at random")
    try:
        return train_test_split(frame, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:  # sklearn's way of saying one side of the split would be empty
        raise UsageError(
            f"{len(frame)} rows are too few to split into train, validation and test; give more rows"
        ) from None


def find_leakage(splits: dict[str, pd.DataFrame], examples: int = 5) -> dict[str, dict]:
    """Validation/test texts that the train split also holds: `exact` (same string) and `near` (the
    same after the project's cleaning and case-folding, e.g. another @mention or link, or CAPS).

    A model scored on texts it trained on looks better than it is; the report says how much.
    """

    def near_key(text: str) -> str:
        return " ".join(clean_text(text).casefold().split())

    train = splits["train"]["text"]
    exact_train, near_train = set(train), {near_key(t) for t in train}
    found = {}
    for name in ("validation", "test"):
        texts = splits[name]["text"]
        exact = texts.isin(exact_train)
        near = ~exact & texts.map(near_key).isin(near_train)
        found[name] = {
            "rows": len(texts),
            "exact": int(exact.sum()),
            "near": int(near.sum()),
            "share": float((exact | near).mean()) if len(texts) else 0.0,
            "examples": texts[exact | near].head(examples).tolist(),
        }
    return found


def balance_classes(frame: pd.DataFrame, seed: int = 42) -> pd.DataFrame:
    """Downsample every class to the size of the smallest one (`--balance`)."""
    smallest = int(frame["label"].value_counts().min())
    parts = [group.sample(n=smallest, random_state=seed) for _, group in frame.groupby("label", sort=True)]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)
