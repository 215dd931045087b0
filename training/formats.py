"""Readers for the dataset formats `sentistream train` knows, and the `--format auto` detector.

Each reader turns one on-disk layout into a `RawTable`: a frame of raw strings plus the line numbers
of rows it could not parse. Readers never clean or judge rows; `training/datasets.py` does that once
for every format, so the report counts the same things whatever the input looked like.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sentistream.errors import UsageError

FORMATS = (
    "auto", "csv", "tsv", "jsonl", "parquet", "splits", "imdb", "sentiment140", "tweeteval", "twitter-entity"
)  # fmt: skip
# A folder of split files, as most exported datasets come: train.csv, validation.csv, test.csv (any of
# these extensions; `val` and `dev` also name the validation split).
SPLIT_FILES = {"train": "train", "validation": "validation", "val": "validation", "dev": "validation",
               "test": "test"}  # fmt: skip
SPLIT_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".parquet")

SENTIMENT140_COLUMNS = ["label", "id", "date", "query", "user", "text"]
SENTIMENT140_LABELS = {"0": "negative", "2": "neutral", "4": "positive"}
TWITTER_ENTITY_COLUMNS = ["id", "entity", "label", "text"]
TWITTER_ENTITY_LABELS = {"positive", "negative", "neutral", "irrelevant"}
TWEETEVAL_SPLITS = {"train": "train", "val": "validation", "test": "test"}
ACLIMDB_SPLITS = ("train", "test")

# IMDb reviews run past the csv module's default 128 KiB field limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class RawTable:
    """Rows as read (all strings), before any cleaning; `malformed` holds 1-based line numbers."""

    frame: pd.DataFrame
    format: str
    malformed: list[int] = field(default_factory=list)
    text_col: str | None = None
    label_col: str | None = None
    label_names: dict[str, str] = field(default_factory=dict)


def read_table(path: Path, fmt: str = "auto") -> RawTable:
    """Read `path` in format `fmt` ("auto" detects it)."""
    if not path.exists():
        raise UsageError(f"dataset not found: {path} (pass an existing file or folder with --data)")
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    return READERS[fmt](path)


def detect_format(path: Path) -> str:
    """Guess the format of a file or folder from its layout and first line."""
    if path.is_dir():
        return _detect_folder(path)
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith("_text.txt"):
        return "tweeteval"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    return _detect_csv(_first_row(path))


def _detect_folder(path: Path) -> str:
    if (path / "aclImdb").is_dir() or (path / "train" / "pos").is_dir():
        return "imdb"
    if (path / "mapping.txt").exists() or any(path.glob("*_text.txt")):
        return "tweeteval"
    if any(path.glob("twitter_*.csv")):
        return "twitter-entity"
    if _split_files(path):
        return "splits"
    raise UsageError(
        f"cannot tell the format of folder {path}: expected train.csv (and validation.csv, test.csv; or .tsv, "
        ".jsonl, .parquet), an aclImdb/ layout, TweetEval *_text.txt files or twitter_*.csv files; "
        "pass a file, or --format"
    )


def _split_files(folder: Path) -> dict[str, Path]:
    """split name -> file, for the `train`/`validation`/`test` files directly in `folder`."""
    found: dict[str, Path] = {}
    for file in sorted(folder.iterdir()):
        split = SPLIT_FILES.get(file.stem.lower())
        if file.is_file() and split and file.suffix.lower() in SPLIT_EXTENSIONS:
            if split in found:
                raise UsageError(
                    f"{folder} has two {split} files ({found[split].name}, {file.name}); keep one"
                )
            found[split] = file
    return found


def _detect_csv(first: list[str]) -> str:
    lowered = [cell.strip().lower() for cell in first]
    if lowered[:2] == ["review", "sentiment"]:
        return "imdb"
    if len(first) == 6 and first[0].strip() in SENTIMENT140_LABELS:
        return "sentiment140"
    if len(first) == 4 and first[0].strip().isdigit() and lowered[2] in TWITTER_ENTITY_LABELS:
        return "twitter-entity"
    return "csv"


def _first_row(path: Path) -> list[str]:
    with path.open(encoding="latin-1", newline="") as handle:
        return next(csv.reader(handle), [])


def read_delimited(path: Path, delimiter: str = ",", fmt: str = "csv") -> RawTable:
    """A CSV/TSV with a header row; rows with the wrong number of fields are malformed."""
    lines = _csv_rows(path, delimiter, encoding=_encoding(path))
    header = next(lines, (0, []))[1]
    if not header:
        raise UsageError(f"{path} is empty; a CSV needs a header row naming its columns")
    header = [h.strip() for h in header]
    rows, malformed = _rows_of_width(lines, len(header))
    return RawTable(pd.DataFrame(rows, columns=header, dtype=object), fmt, malformed)


def read_tsv(path: Path) -> RawTable:
    """A tab-separated file with a header row."""
    return read_delimited(path, "\t", "tsv")


def read_jsonl(path: Path) -> RawTable:
    """One JSON object per line; lines that are not an object are malformed."""
    records, malformed = [], []
    with path.open(encoding=_encoding(path), errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            record = _json_object(line) if line.strip() else {}
            if record is None:
                malformed.append(number)
            elif record:
                records.append(record)
    return RawTable(pd.DataFrame.from_records(records).astype(object), "jsonl", malformed)


def read_parquet(path: Path) -> RawTable:
    """An Apache Parquet file (pyarrow); every column read as it is, then turned into strings."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own error types for corrupt or non-parquet files
        raise UsageError(f"cannot read {path} as Parquet ({type(exc).__name__}); check the file") from None
    return RawTable(frame.astype(object).where(frame.notna(), None), "parquet")


def read_splits(path: Path) -> RawTable:
    """A folder of `train`, `validation` and `test` files; each file's extension picks its reader."""
    if not path.is_dir():
        raise UsageError(
            f"--format splits takes a folder holding train.csv (and validation.csv, test.csv): {path}"
        )
    files = _split_files(path)
    if "train" not in files:
        raise UsageError(f"{path} has no train file; expected train.csv (or .tsv, .jsonl, .parquet)")
    tables = {split: READERS[detect_format(file)](file) for split, file in files.items()}
    frames = [table.frame.assign(split=split) for split, table in tables.items()]
    malformed = [line for table in tables.values() for line in table.malformed]
    first = tables["train"]
    return RawTable(
        pd.concat(frames, ignore_index=True), "splits", malformed, first.text_col, first.label_col,
        first.label_names,
    )  # fmt: skip


def read_imdb(path: Path) -> RawTable:
    """IMDb: the 50k-row `review,sentiment` CSV or the `aclImdb/` folder (train/test x pos/neg)."""
    if path.is_dir():
        return _read_aclimdb(path / "aclImdb" if (path / "aclImdb").is_dir() else path)
    table = read_delimited(path, fmt="imdb")
    table.text_col, table.label_col = "review", "sentiment"
    return table


def _read_aclimdb(root: Path) -> RawTable:
    from tqdm.auto import tqdm

    folders = [(split, polarity) for split in ACLIMDB_SPLITS for polarity in ("pos", "neg")]
    files = [(s, p, f) for s, p in folders for f in sorted((root / s / p).glob("*.txt"))]
    if not files:
        raise UsageError(f"no reviews under {root}: expected train/pos, train/neg, test/pos, test/neg *.txt")
    rows = [
        {"text": f.read_text(encoding="utf-8", errors="replace"), "label": polarity, "split": split}
        for split, polarity, f in tqdm(files, desc="reading aclImdb", unit="file", leave=False)
    ]
    return RawTable(
        pd.DataFrame(rows, dtype=object), "imdb", label_names={"pos": "positive", "neg": "negative"}
    )


def read_sentiment140(path: Path) -> RawTable:
    """Sentiment140: header-less 6-column latin-1 CSV, label 0/2/4, a date column with a time zone."""
    rows, malformed = _rows_of_width(_csv_rows(path, ",", encoding="latin-1"), 6)
    frame = pd.DataFrame(rows, columns=SENTIMENT140_COLUMNS, dtype=object)
    frame["created_at"] = parse_twitter_dates(frame["date"])
    return RawTable(
        frame.drop(columns=["date", "query"]), "sentiment140", malformed, label_names=SENTIMENT140_LABELS
    )


def parse_twitter_dates(values: pd.Series) -> pd.Series:
    """`Mon Apr 06 22:19:45 PDT 2009` -> UTC timestamps (NaT where unparseable)."""
    offsets = {"PDT": "-0700", "PST": "-0800", "UTC": "+0000", "GMT": "+0000"}
    parts = values.astype(str).str.extract(r"^\w{3} (\w{3} \d{1,2} [\d:]{8}) (\w+) (\d{4})$")
    stamp = parts[0] + " " + parts[2] + " " + parts[1].map(offsets).fillna("+0000")
    return pd.to_datetime(stamp, format="%b %d %H:%M:%S %Y %z", errors="coerce", utc=True)


def read_tweeteval(path: Path) -> RawTable:
    """TweetEval: `{train,val,test}_text.txt` + `_labels.txt` line-aligned, `mapping.txt` id -> name."""
    folder = path if path.is_dir() else path.parent
    prefixes = [path.name.removesuffix("_text.txt")] if path.is_file() else list(TWEETEVAL_SPLITS)
    frames = [_tweeteval_split(folder, p) for p in prefixes if (folder / f"{p}_text.txt").exists()]
    if not frames:
        raise UsageError(f"no TweetEval files in {folder}: expected train_text.txt and train_labels.txt")
    return RawTable(pd.concat(frames, ignore_index=True), "tweeteval", label_names=_tweeteval_mapping(folder))


def _tweeteval_split(folder: Path, prefix: str) -> pd.DataFrame:
    texts = _lines(folder / f"{prefix}_text.txt")
    labels_file = folder / f"{prefix}_labels.txt"
    labels = _lines(labels_file) if labels_file.exists() else [None] * len(texts)
    if len(labels) != len(texts):
        raise UsageError(
            f"{prefix}_text.txt has {len(texts)} lines but {prefix}_labels.txt has {len(labels)}; "
            "they must be line-aligned"
        )
    split = TWEETEVAL_SPLITS.get(prefix, prefix)
    return pd.DataFrame({"text": texts, "label": labels, "split": split}, dtype=object)


def _tweeteval_mapping(folder: Path) -> dict[str, str]:
    mapping = folder / "mapping.txt"
    if not mapping.exists():
        return {}
    pairs = (line.split("\t", 1) for line in _lines(mapping) if "\t" in line)
    return {key.strip(): name.strip().lower() for key, name in pairs}


def read_twitter_entity(path: Path) -> RawTable:
    """Twitter entity sentiment: header-less `id,entity,label,text` CSV(s), a folder of train/validation."""
    if path.is_dir():
        parts = [_twitter_entity_file(f) for f in sorted(path.glob("twitter_*.csv"))]
        malformed = [line for part in parts for line in part.malformed]
        return RawTable(pd.concat([p.frame for p in parts], ignore_index=True), "twitter-entity", malformed)
    return _twitter_entity_file(path)


def _twitter_entity_file(path: Path) -> RawTable:
    rows, malformed = _rows_of_width(_csv_rows(path, ",", encoding=_encoding(path)), 4)
    frame = pd.DataFrame(rows, columns=TWITTER_ENTITY_COLUMNS, dtype=object)
    if "validation" in path.name or "test" in path.name:
        frame["split"] = "validation" if "validation" in path.name else "test"
    elif path.name.startswith("twitter_training"):
        frame["split"] = "train"
    return RawTable(frame, "twitter-entity", malformed)


def _csv_rows(path: Path, delimiter: str, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number of the record, fields) for each non-blank record."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with path.open(encoding=encoding, errors="replace", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        start = 1
        for row in reader:
            if row:
                yield start, row
            start = reader.line_num + 1


def _rows_of_width(lines: Iterator[tuple[int, list[str]]], width: int) -> tuple[list[list[str]], list[int]]:
    """Split records into those with `width` fields and the line numbers of the others."""
    rows, malformed = [], []
    for line, row in lines:
        if len(row) == width:
            rows.append(row)
        else:
            malformed.append(line)
    return rows, malformed


def _encoding(path: Path) -> str:
    """utf-8 (BOM tolerated) unless the first 64 KiB do not decode, then latin-1."""
    with path.open("rb") as handle:
        head = handle.read(65536)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the 64 KiB boundary is not a reason to switch encodings.
        if exc.start < len(head) - 4:
            return "latin-1"
    return "utf-8-sig"


def _json_object(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _lines(path: Path) -> list[str]:
    # str.splitlines would also split on U+2028 and friends, which tweets contain; only "\n" ends a line.
    text = path.read_text(encoding="utf-8", errors="replace")
    return text.removesuffix("\n").split("\n") if text else []


READERS: dict[str, Callable[[Path], RawTable]] = {
    "csv": read_delimited,
    "tsv": read_tsv,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "splits": read_splits,
    "imdb": read_imdb,
    "sentiment140": read_sentiment140,
    "tweeteval": read_tweeteval,
    "twitter-entity": read_twitter_entity,
}
