"""Splits: the data's own when shipped, else stratified and reproducible; --balance; models/latest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sentistream.errors import UsageError
from training.splits import balance_classes, split_dataset
from training.train import link_latest


def labelled(counts: dict[str, int]) -> pd.DataFrame:
    rows = [(f"{label} text {i}", label) for label, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["text", "label"])


def test_stratified_split_keeps_class_shares_and_is_reproducible() -> None:
    frame = labelled({"negative": 200, "neutral": 500, "positive": 300})
    splits = split_dataset(frame, seed=7)
    assert {k: len(v) for k, v in splits.items()} == {"train": 800, "validation": 100, "test": 100}
    assert splits["test"]["label"].value_counts().to_dict() == {"neutral": 50, "positive": 30, "negative": 20}
    texts = [set(part["text"]) for part in splits.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert split_dataset(frame, seed=7)["test"]["text"].tolist() == splits["test"]["text"].tolist()
    assert split_dataset(frame, seed=8)["test"]["text"].tolist() != splits["test"]["text"].tolist()


def test_shipped_splits_are_used_and_missing_ones_carved_from_train() -> None:
    train = labelled({"negative": 50, "positive": 50}).assign(split="train")
    test = labelled({"negative": 5, "positive": 5}).assign(split="test", text=lambda f: "t " + f["text"])
    splits = split_dataset(pd.concat([train, test]), validation_size=0.1)
    assert splits["test"]["text"].tolist() == test["text"].tolist()
    assert (len(splits["train"]), len(splits["validation"])) == (90, 10)
    assert "split" not in splits["train"]


def test_too_small_data_fails_with_advice() -> None:
    with pytest.raises(UsageError, match="too few to split"):
        split_dataset(labelled({"negative": 1, "positive": 1}))


def test_balance_downsamples_to_the_smallest_class() -> None:
    balanced = balance_classes(labelled({"negative": 30, "neutral": 80, "positive": 55}), seed=1)
    assert balanced["label"].value_counts().to_dict() == {"negative": 30, "neutral": 30, "positive": 30}
    assert balanced["text"].is_unique


def test_latest_points_at_the_newest_bundle(tmp_path: Path) -> None:
    first, second = tmp_path / "models" / "a-1", tmp_path / "models" / "a-2"
    for bundle in (first, second):
        bundle.mkdir(parents=True)
        link_latest(bundle)
    latest = tmp_path / "models" / "latest"
    assert latest.is_symlink() and latest.resolve() == second.resolve()
