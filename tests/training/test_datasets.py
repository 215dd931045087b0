"""Every dataset loader on small fixture files written here, malformed rows included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentistream.errors import UsageError
from training.datasets import load_dataset, parse_label_map
from training.formats import detect_format


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_with_named_columns_drops_empty_duplicates_and_conflicts(tmp_path: Path) -> None:
    data = write(
        tmp_path / "d.csv",
        "id,body,stars\n"
        "1,great film,Positive\n"
        "2,great film,positive\n"  # exact duplicate once labels are normalised
        "3,,negative\n"  # empty text
        "4,   ,negative\n"  # whitespace only
        "5,meh,neutral\n"
        "6,meh,negative\n"  # same text, another label: both rows go
        "7,too,many,fields\n"  # malformed
        '8,"multi\nline text",negative\n',
    )
    ds = load_dataset(data, text_col="body", label_col="stars")
    assert ds.format == "csv"
    assert sorted(ds.frame["text"]) == ["great film", "multi\nline text"]
    assert dict(zip(ds.frame["text"], ds.frame["label"], strict=True))["great film"] == "positive"
    r = ds.report
    assert (r.rows_read, r.rows_kept, r.malformed_rows, r.malformed_lines) == (8, 2, 1, [8])
    assert (r.empty_text, r.exact_duplicates, r.conflicting_duplicates) == (2, 1, 2)
    assert ds.labels == ["negative", "positive"]


def test_missing_column_lists_the_columns_that_exist(tmp_path: Path) -> None:
    data = write(tmp_path / "d.csv", "words,sentiment\nok,positive\n")
    with pytest.raises(UsageError, match=r"no column 'text'.*words, sentiment"):
        load_dataset(data, text_col="text")
    with pytest.raises(UsageError, match=r"--text-col.*words, sentiment"):
        load_dataset(data)
    with pytest.raises(UsageError, match=r"no column 'stars'.*words, sentiment.*--label-col"):
        load_dataset(data, text_col="words", label_col="stars")


def test_unknown_labels_are_listed_with_the_flags_that_fix_them(tmp_path: Path) -> None:
    data = write(tmp_path / "d.csv", "text,label\na,positive\nb,Irrelevant\nc,irrelevant\nd,negative\n")
    with pytest.raises(UsageError, match=r"'irrelevant' \(2 rows\).*--label-map.*--drop-label irrelevant"):
        load_dataset(data)
    dropped = load_dataset(data, drop_labels=["Irrelevant"])
    assert dropped.report.dropped_labels == {"irrelevant": 2}
    assert sorted(dropped.frame["label"]) == ["negative", "positive"]
    mapped = load_dataset(data, label_map=parse_label_map("irrelevant=neutral"))
    assert sorted(mapped.frame["label"]) == ["negative", "neutral", "neutral", "positive"]


def test_numeric_labels_follow_the_known_conventions(tmp_path: Path) -> None:
    binary = write(tmp_path / "b.csv", "sentence,label\nx,0\ny,1\n")
    three = write(tmp_path / "t.csv", "text,label\nx,0\ny,1\nz,2\n")
    assert load_dataset(binary).frame["label"].tolist() == ["negative", "positive"]
    assert load_dataset(three).frame["label"].tolist() == ["negative", "neutral", "positive"]
    odd = write(tmp_path / "o.csv", "text,label\nx,7\ny,9\n")
    with pytest.raises(UsageError, match="--label-map"):
        load_dataset(odd)


def test_nothing_left_after_cleaning_says_why(tmp_path: Path) -> None:
    data = write(tmp_path / "d.csv", "text,label\n,positive\n  ,negative\n")
    with pytest.raises(UsageError, match=r"no rows left.*2 empty text"):
        load_dataset(data)


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_dataset(tmp_path / "nope.csv")


def test_tsv_and_jsonl_with_a_bad_line(tmp_path: Path) -> None:
    tsv = write(tmp_path / "d.tsv", 'text\tlabel\nsaid "hi"\tpositive\nbroken line\nsad\tnegative\n')
    ds = load_dataset(tsv)
    assert ds.format == "tsv" and ds.frame["text"].tolist() == ['said "hi"', "sad"]
    assert ds.report.malformed_lines == [3]
    lines = [
        json.dumps({"text": "good", "label": "pos"}),
        "{not json",
        "",
        json.dumps({"text": "bad", "label": "neg"}),
    ]
    jsonl = write(tmp_path / "d.jsonl", "\n".join(lines) + "\n")
    ds = load_dataset(jsonl)
    assert ds.format == "jsonl" and ds.frame["label"].tolist() == ["positive", "negative"]
    assert ds.report.malformed_lines == [2]


def test_unlabelled_file_loads_for_replay(tmp_path: Path) -> None:
    data = write(tmp_path / "d.csv", "tweet,user\nhello there,a\n,b\nbye,c\n")
    ds = load_dataset(data, require_labels=False)
    assert ds.frame["text"].tolist() == ["hello there", "bye"]
    assert ds.frame["user"].tolist() == ["a", "c"]
    assert "label" not in ds.frame or ds.frame["label"].isna().all()
    with pytest.raises(UsageError, match="--label-col"):
        load_dataset(data)


def test_imdb_csv(tmp_path: Path) -> None:
    data = write(
        tmp_path / "IMDB Dataset.csv",
        'review,sentiment\n"Great<br />film, loved it",positive\nDull,negative\n',
    )
    ds = load_dataset(data)
    assert ds.format == "imdb"
    assert ds.frame["label"].tolist() == ["positive", "negative"]
    assert ds.frame["text"][0] == "Great<br />film, loved it"  # cleaning is model/'s job, at tokenisation


def test_aclimdb_folder_keeps_its_splits(tmp_path: Path) -> None:
    root = tmp_path / "aclImdb"
    write(root / "train" / "pos" / "0_9.txt", "wonderful")
    write(root / "train" / "neg" / "1_2.txt", "awful")
    write(root / "test" / "pos" / "2_8.txt", "lovely")
    write(root / "test" / "neg" / "3_1.txt", "boring")
    write(root / "train" / "unsup" / "4_0.txt", "unlabelled, ignored")
    ds = load_dataset(tmp_path)
    assert ds.format == "imdb"
    rows = set(zip(ds.frame["text"], ds.frame["label"], ds.frame["split"], strict=True))
    assert rows == {
        ("wonderful", "positive", "train"),
        ("awful", "negative", "train"),
        ("lovely", "positive", "test"),
        ("boring", "negative", "test"),
    }


def test_sentiment140_latin1_headerless_with_dates(tmp_path: Path) -> None:
    rows = [
        '"0","1467810369","Mon Apr 06 22:19:45 PDT 2009","NO_QUERY","alice","is upset caf\xe9"',
        '"4","1467810672","Mon Apr 06 22:19:49 PDT 2009","NO_QUERY","bob","@user yay"',
        '"4","1467810917","broken"',
        '"2","1467811000","Tue Apr 07 01:00:00 PDT 2009","NO_QUERY","carol","meh"',
    ]
    data = write(tmp_path / "training.1600000.processed.noemoticon.csv", "\n".join(rows) + "\n", "latin-1")
    assert detect_format(data) == "sentiment140"
    ds = load_dataset(data)
    assert ds.frame["label"].tolist() == ["negative", "positive", "neutral"]
    assert ds.frame["text"][0] == "is upset café"
    assert ds.frame["created_at"][0].isoformat() == "2009-04-07T05:19:45+00:00"
    assert ds.report.malformed_lines == [3]
    replay = load_dataset(data, require_labels=False)
    assert len(replay.frame) == 3 and "created_at" in replay.frame


def test_tweeteval_folder_with_mapping_and_splits(tmp_path: Path) -> None:
    write(tmp_path / "mapping.txt", "0\tnegative\n1\tneutral\n2\tpositive\n")
    write(tmp_path / "train_text.txt", "bad day\nok day\ngreat day \u2028 really\n")
    write(tmp_path / "train_labels.txt", "0\n1\n2\n")
    write(tmp_path / "val_text.txt", "fine\n")
    write(tmp_path / "val_labels.txt", "1\n")
    write(tmp_path / "test_text.txt", "awful\n")
    write(tmp_path / "test_labels.txt", "0\n")
    ds = load_dataset(tmp_path)
    assert ds.format == "tweeteval"
    assert ds.frame["label"].tolist() == ["negative", "neutral", "positive", "neutral", "negative"]
    assert ds.frame["split"].tolist() == ["train", "train", "train", "validation", "test"]
    assert ds.frame["text"][2] == "great day \u2028 really"  # a U+2028 inside a tweet does not end the line
    write(tmp_path / "test_labels.txt", "0\n1\n")
    with pytest.raises(UsageError, match="line-aligned"):
        load_dataset(tmp_path)


def test_twitter_entity_sentiment_with_drop_label(tmp_path: Path) -> None:
    rows = [
        '2401,Borderlands,Positive,"im getting on borderlands and i will murder you all,"',
        "2402,Borderlands,Irrelevant,what is this",
        "2403,Borderlands,Negative,",
        "2404,Borderlands,Neutral,just a game",
        "2405,Borderlands",
    ]
    data = write(tmp_path / "twitter_training.csv", "\n".join(rows) + "\n")
    assert detect_format(data) == "twitter-entity"
    with pytest.raises(UsageError, match="--drop-label irrelevant"):
        load_dataset(data)
    ds = load_dataset(data, drop_labels=["Irrelevant"])
    assert ds.frame["label"].tolist() == ["positive", "neutral"]
    assert ds.frame["split"].unique().tolist() == ["train"]
    r = ds.report
    assert (r.dropped_labels, r.empty_text, r.malformed_lines) == ({"irrelevant": 1}, 1, [5])


def test_label_map_spec_is_checked() -> None:
    assert parse_label_map("0=Negative, 4=positive") == {"0": "negative", "4": "positive"}
    with pytest.raises(UsageError, match="RAW=NAME"):
        parse_label_map("0:negative")


def test_fingerprint_changes_with_the_data(tmp_path: Path) -> None:
    a = load_dataset(write(tmp_path / "a.csv", "text,label\nx,positive\ny,negative\n"))
    b = load_dataset(write(tmp_path / "b.csv", "text,label\nx,positive\ny,positive\n"))
    assert a.fingerprint != b.fingerprint and len(a.fingerprint) == 16
