"""Data the way people have it: split folders in every format, merged datasets, given splits, leakage."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sentistream.cli import build_parser
from sentistream.errors import UsageError
from sentistream.settings import settings_from_args
from training.datasets import load_sources
from training.settings import TrainSettings
from training.splits import find_leakage, split_dataset
from training.train import prepare_splits

TRAIN = pd.DataFrame({"text": [f"train text {i}" for i in range(30)], "label": ["negative", "positive"] * 15})
VALIDATION = pd.DataFrame({"text": ["val one", "val two"], "label": ["negative", "positive"]})
TEST = pd.DataFrame(
    {"text": ["test one", "test two", "test three"], "label": ["positive", "negative", "positive"]}
)


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_a_folder_of_split_files_keeps_its_splits(tmp_path: Path, ext: str) -> None:
    for name, frame in (("train", TRAIN), ("validation", VALIDATION), ("test", TEST)):
        write_frame(frame, tmp_path / f"{name}{ext}")
    data = load_sources([tmp_path])
    assert data.format == "splits"
    splits = split_dataset(data.frame)
    assert {name: len(part) for name, part in splits.items()} == {"train": 30, "validation": 2, "test": 3}
    assert sorted(splits["validation"]["text"]) == sorted(VALIDATION["text"])
    assert sorted(splits["test"]["text"]) == sorted(TEST["text"])


def test_a_folder_without_a_test_file_carves_one_from_train(tmp_path: Path) -> None:
    write_frame(TRAIN, tmp_path / "train.csv")
    write_frame(VALIDATION, tmp_path / "val.jsonl")  # `val` names the validation split too
    splits = split_dataset(load_sources([tmp_path]).frame, test_size=0.2)
    assert len(splits["validation"]) == 2 and len(splits["test"]) == 6 and len(splits["train"]) == 24
    assert set(splits["test"]["text"]) <= set(TRAIN["text"])


def test_a_folder_with_two_validation_files_or_no_train_file_is_a_usage_error(tmp_path: Path) -> None:
    write_frame(VALIDATION, tmp_path / "a" / "validation.csv")
    write_frame(VALIDATION, tmp_path / "a" / "dev.csv")
    write_frame(TRAIN, tmp_path / "a" / "train.csv")
    with pytest.raises(UsageError, match="two validation files"):
        load_sources([tmp_path / "a"])
    write_frame(VALIDATION, tmp_path / "b" / "validation.csv")
    with pytest.raises(UsageError, match=r"expected train\.csv"):
        load_sources([tmp_path / "b"])


def test_a_single_parquet_file_loads(tmp_path: Path) -> None:
    data = load_sources([write_frame(TRAIN, tmp_path / "d.parquet")])
    assert data.format == "parquet" and len(data.frame) == 30


def test_merged_datasets_share_one_label_set_and_drop_repeats(tmp_path: Path) -> None:
    # SST-2 style 0/1 labels and named 3-class labels: both end up as negative/neutral/positive.
    a = write_frame(
        pd.DataFrame(
            {"sentence": ["good film", "bad film", "shared text", "argued text"], "label": [1, 0, 1, 1]}
        ),
        tmp_path / "sst.csv",
    )
    b = write_frame(
        pd.DataFrame({"text": ["a meeting", "shared text", "argued text", "fine day"],
                      "sentiment": ["neutral", "positive", "negative", "positive"]}),
        tmp_path / "tweets.jsonl",
    )  # fmt: skip
    data = load_sources([a, b])
    frame = data.frame.set_index("text")
    assert data.labels == ["negative", "neutral", "positive"]
    assert frame.loc["good film", "label"] == "positive" and frame.loc["bad film", "label"] == "negative"
    assert frame.loc["good film", "source"] == "sst" and frame.loc["a meeting", "source"] == "tweets"
    assert list(data.frame["text"]).count("shared text") == 1  # the same text in both: kept once
    assert "argued text" not in frame.index  # labelled two ways across the datasets: dropped
    assert (data.report.cross_source_duplicates, data.report.cross_source_conflicts) == (1, 2)
    assert "1 duplicates and 2 conflicts across merged datasets" in data.report.summary()


def test_given_validation_and_test_files_become_those_splits(tmp_path: Path) -> None:
    train = write_frame(TRAIN, tmp_path / "t.csv")
    validation = write_frame(VALIDATION, tmp_path / "v.csv")
    test = write_frame(TEST, tmp_path / "x.tsv")
    data = load_sources([train], validation=validation, test=test)
    splits = split_dataset(data.frame)
    assert {name: len(part) for name, part in splits.items()} == {"train": 30, "validation": 2, "test": 3}
    # --max-rows samples the training rows only: the given evaluation splits stay whole.
    settings = TrainSettings(data=[train], validation_data=validation, test_data=test, max_rows=10,
                             base_model="unused")  # fmt: skip
    sampled = prepare_splits(load_sources([train], validation=validation, test=test), settings)
    assert {name: len(part) for name, part in sampled.items()} == {"train": 10, "validation": 2, "test": 3}


def test_a_given_split_the_data_already_has_is_a_usage_error(tmp_path: Path) -> None:
    for name, frame in (("train", TRAIN), ("validation", VALIDATION)):
        write_frame(frame, tmp_path / "d" / f"{name}.csv")
    extra = write_frame(VALIDATION, tmp_path / "v.csv")
    with pytest.raises(UsageError, match="already has a validation split"):
        load_sources([tmp_path / "d"], validation=extra)


def test_train_flags_repeat_data_and_take_given_splits(tmp_path: Path) -> None:
    args = build_parser("train").parse_args(
        ["train", "--data", "a.csv", "--data", "b.csv", "--validation-data", "v.csv", "--test-data", "t.csv",
         "--pooling", "mean", "--class-weights", "balanced", "--layer-lr-decay", "0.9"]
    )  # fmt: skip
    settings = settings_from_args(TrainSettings, args)
    assert settings.data == [Path("a.csv"), Path("b.csv")]
    assert (settings.validation_data, settings.test_data) == (Path("v.csv"), Path("t.csv"))
    assert (settings.pooling, settings.class_weights, settings.layer_lr_decay) == ("mean", "balanced", 0.9)


def test_preset_fills_only_what_the_user_left_unset(monkeypatch) -> None:
    from training.settings import PRESETS

    preset = PRESETS["tweets-cpu"]
    settings = TrainSettings(data="d.csv", preset="tweets-cpu", lr=3e-5)
    assert settings.lr == 3e-5  # given: kept
    assert (settings.pooling, settings.epochs) == (preset["pooling"], preset["epochs"])
    monkeypatch.setenv("SENTISTREAM_TRAIN_EPOCHS", "7")
    monkeypatch.setenv("SENTISTREAM_TRAIN_DATA", "a.csv,b.csv")
    from_env = TrainSettings(preset="tweets-cpu")
    assert from_env.epochs == 7 and from_env.data == [Path("a.csv"), Path("b.csv")]
    assert TrainSettings(data="d.csv").pooling == "cls"  # no preset: the plain defaults


def test_leakage_counts_exact_and_near_duplicates_of_train_texts() -> None:
    train = pd.DataFrame({"text": ["Great game @bob http://x.co/1", "so tired today", "plain train text"]})
    validation = pd.DataFrame({"text": ["so tired today", "GREAT game  @alice https://y.org", "new text"]})
    test = pd.DataFrame({"text": ["nothing shared", "Plain  TRAIN text"]})
    found = find_leakage({"train": train, "validation": validation, "test": test})
    assert (found["validation"]["exact"], found["validation"]["near"]) == (1, 1)
    assert found["validation"]["share"] == pytest.approx(2 / 3)
    assert sorted(found["validation"]["examples"]) == ["GREAT game  @alice https://y.org", "so tired today"]
    assert (found["test"]["exact"], found["test"]["near"], found["test"]["rows"]) == (0, 1, 2)


def test_leakage_is_in_the_data_report_of_a_split_folder(tmp_path: Path) -> None:
    write_frame(TRAIN, tmp_path / "train.csv")
    write_frame(pd.DataFrame({"text": ["train text 3", "TRAIN TEXT 4", "fresh"],
                              "label": ["positive", "negative", "positive"]}), tmp_path / "validation.csv")  # fmt: skip
    write_frame(TEST, tmp_path / "test.csv")
    data = load_sources([tmp_path])
    prepare_splits(data, TrainSettings(data=[tmp_path], base_model="unused"))
    assert (data.report.leakage["validation"]["exact"], data.report.leakage["validation"]["near"]) == (1, 1)
    assert (
        "validation: 1 exact and 1 near duplicates of train texts (66.7% of 3 rows)"
        in data.report.leakage_summary()
    )
    assert data.report.as_dict()["leakage"]["test"]["exact"] == 0
