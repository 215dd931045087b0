"""Load a labelled dataset in any known format into one clean frame of `text`, `label` (+ `split`).

Every format goes through the same steps: read (`training/formats.py`), pick the text and label
columns, normalise labels to lower-case names, then drop rows with no text, exact duplicates and
texts that appear with conflicting labels. Each drop is counted in the `LoadReport`, so a user sees
what the loader did to their data. Light to import: pandas only, no torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from sentistream.errors import UsageError
from training.formats import FORMATS, RawTable, read_table

__all__ = [
    "FORMATS",
    "LoadReport",
    "LoadedDataset",
    "load_dataset",
    "load_sources",
    "normalise_labels",
    "parse_label_map",
]

TEXT_COLUMNS = ("text", "review", "tweet", "sentence", "content", "body", "message", "comment")
LABEL_COLUMNS = ("label", "sentiment", "labels", "target", "polarity", "class", "airline_sentiment")
KNOWN_LABELS = ("negative", "neutral", "positive")
LABEL_ALIASES = {"neg": "negative", "pos": "positive", "neu": "neutral", "negative": "negative",
                 "neutral": "neutral", "positive": "positive"}  # fmt: skip
# Numeric label conventions, tried in order: GLUE/SST-2 binary, TweetEval 3-class, -1/0/1, Sentiment140.
NUMERIC_CONVENTIONS = (
    {"0": "negative", "1": "positive"},
    {"0": "negative", "1": "neutral", "2": "positive"},
    {"-1": "negative", "0": "neutral", "1": "positive"},
    {"0": "negative", "2": "neutral", "4": "positive"},
)
MALFORMED_LINES_SHOWN = 5


@dataclass
class LoadReport:
    """What the loader read and what it dropped, and why."""

    rows_read: int = 0
    malformed_rows: int = 0
    malformed_lines: list[int] = field(default_factory=list)
    empty_text: int = 0
    missing_label: int = 0
    dropped_labels: dict[str, int] = field(default_factory=dict)
    exact_duplicates: int = 0
    conflicting_duplicates: int = 0
    # Across merged datasets (`--data A --data B`): texts already in an earlier one, or labelled otherwise.
    cross_source_duplicates: int = 0
    cross_source_conflicts: int = 0
    rows_kept: int = 0
    # Filled in once the data is split: texts of validation/test also in train (see `splits.find_leakage`).
    leakage: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return asdict(self)

    def summary(self) -> str:
        """One line for logs."""
        dropped = sum(self.dropped_labels.values())
        return (
            f"{self.rows_read} rows read, {self.rows_kept} kept; dropped: {self.malformed_rows} malformed, "
            f"{self.empty_text} empty text, {self.missing_label} missing label, {dropped} by --drop-label, "
            f"{self.exact_duplicates} exact duplicates, {self.conflicting_duplicates} conflicting duplicates"
            + (
                f", {self.cross_source_duplicates} duplicates and {self.cross_source_conflicts} conflicts across "
                "merged datasets"
                if self.cross_source_duplicates or self.cross_source_conflicts
                else ""
            )
        )

    def leakage_summary(self) -> str:
        """One line: how many validation/test texts the train split also holds, exactly or nearly."""
        if not self.leakage:
            return "not checked"
        parts = [
            f"{split}: {found['exact']} exact and {found['near']} near duplicates of train texts "
            f"({found['share']:.1%} of {found['rows']} rows)"
            for split, found in self.leakage.items()
        ]
        return "; ".join(parts)


@dataclass
class LoadedDataset:
    """A cleaned dataset: `frame` has `text`, `label` (when labelled), maybe `split` and `created_at`."""

    frame: pd.DataFrame
    format: str
    report: LoadReport
    path: Path

    @property
    def labels(self) -> list[str]:
        """The label names present, sorted (the model's output order)."""
        if "label" not in self.frame or self.frame["label"].isna().all():
            return []
        return sorted(self.frame["label"].dropna().unique().tolist())

    @property
    def fingerprint(self) -> str:
        """A short hash of the cleaned rows, recorded in the bundle so a model names its data."""
        columns = [c for c in ("text", "label", "split") if c in self.frame]
        hashed = pd.util.hash_pandas_object(self.frame[columns].astype(str), index=False)
        return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()[:16]


def load_sources(
    paths: Sequence[Path],
    format: str = "auto",
    text_col: str | None = None,
    label_col: str | None = None,
    *,
    drop_labels: Iterable[str] = (),
    label_map: Mapping[str, str] | None = None,
    validation: Path | None = None,
    test: Path | None = None,
) -> LoadedDataset:
    """One dataset from several: `paths` merged (a `source` column), plus given validation/test files.

    Every file goes through `load_dataset` on its own (so each gets its own label convention, all mapped
    to the same names); then texts repeated across datasets are kept once, in the most held-out split.
    """
    options = {"text_col": text_col, "label_col": label_col, "drop_labels": list(drop_labels),
               "label_map": label_map}  # fmt: skip
    parts = [load_dataset(path, format, **options) for path in paths]
    if validation is not None or test is not None:
        for part in parts:  # rows of the main data that name no split are its training rows
            part.frame = part.frame.assign(split=part.frame.get("split", pd.Series(index=part.frame.index)))
            part.frame["split"] = part.frame["split"].fillna("train")
    for split, path in (("validation", validation), ("test", test)):
        if path is not None:
            parts.append(_given_split(load_dataset(path, format, **options), split, parts))
    if len(parts) == 1:
        return parts[0]
    return _merge(parts, _source_names([part.path for part in parts]))


def _given_split(part: LoadedDataset, split: str, others: list[LoadedDataset]) -> LoadedDataset:
    """A `--validation-data`/`--test-data` file: every row is that split; the main data may not have one."""
    for other in others:
        if "split" in other.frame and (other.frame["split"] == split).any():
            raise UsageError(
                f"{other.path} already has a {split} split; drop --{split}-data or pass that data's train file"
            )
    part.frame = part.frame.assign(split=split)
    return part


def _source_names(paths: list[Path]) -> list[str]:
    """A short, unique name per dataset (file stem or folder name; numbered when two are the same)."""
    names = [path.stem if path.is_file() else path.name for path in paths]
    return [f"{name}-{i + 1}" if names.count(name) > 1 else name for i, name in enumerate(names)]


def _merge(parts: list[LoadedDataset], names: list[str]) -> LoadedDataset:
    frames = [part.frame.assign(source=name) for part, name in zip(parts, names, strict=True)]
    frame = pd.concat(frames, ignore_index=True)
    report = LoadReport()
    for part in parts:
        for key, value in part.report.as_dict().items():
            if isinstance(value, int):
                setattr(report, key, getattr(report, key) + value)
        report.malformed_lines = (report.malformed_lines + part.report.malformed_lines)[
            :MALFORMED_LINES_SHOWN
        ]
        for label, count in part.report.dropped_labels.items():
            report.dropped_labels[label] = report.dropped_labels.get(label, 0) + count
    frame = _drop_cross_source_duplicates(frame, report)
    report.rows_kept = len(frame)
    formats = sorted({part.format for part in parts})
    return LoadedDataset(frame.reset_index(drop=True), "+".join(formats), report, parts[0].path)


def _drop_cross_source_duplicates(frame: pd.DataFrame, report: LoadReport) -> pd.DataFrame:
    """Texts in more than one dataset: keep one row (test over validation over train, else the first
    dataset's); texts the datasets label differently are dropped everywhere."""
    conflicting = frame.groupby("text")["label"].transform("nunique") > 1
    spread = frame.groupby("text")["source"].transform("nunique") > 1
    report.cross_source_conflicts = int((conflicting & spread).sum())
    frame = frame[~(conflicting & spread)]
    if "split" in frame:
        rank = frame["split"].map({"test": 0, "validation": 1}).fillna(2)
        frame = frame.assign(_rank=rank).sort_values("_rank", kind="stable").drop(columns="_rank")
    spread = frame.groupby("text")["source"].transform("nunique") > 1
    repeated = frame.duplicated(subset=["text"], keep="first") & spread
    report.cross_source_duplicates = int(repeated.sum())
    return frame[~repeated].sort_index()


def load_dataset(
    path: str | Path,
    format: str = "auto",
    text_col: str | None = None,
    label_col: str | None = None,
    *,
    drop_labels: Iterable[str] = (),
    label_map: Mapping[str, str] | None = None,
    require_labels: bool = True,
) -> LoadedDataset:
    """Read, normalise and clean a dataset; raise `UsageError` with one line on bad input."""
    path = Path(path)
    raw = read_table(path, format)
    report = LoadReport(rows_read=len(raw.frame) + len(raw.malformed), malformed_rows=len(raw.malformed))
    report.malformed_lines = raw.malformed[:MALFORMED_LINES_SHOWN]
    frame = _select_columns(raw, text_col, label_col, require_labels, path)
    if "label" in frame:
        names = {**raw.label_names, **{k.lower(): v for k, v in (label_map or {}).items()}}
        frame = _apply_labels(frame, names, {d.lower() for d in drop_labels}, require_labels, report)
    frame = _drop_bad_rows(frame, report, require_labels)
    if frame.empty:
        raise UsageError(f"no rows left in {path} after cleaning ({report.summary()})")
    report.rows_kept = len(frame)
    return LoadedDataset(frame.reset_index(drop=True), raw.format, report, path)


def _select_columns(
    raw: RawTable, text_col: str | None, label_col: str | None, require_labels: bool, path: Path
) -> pd.DataFrame:
    columns = list(raw.frame.columns)
    text = _pick_column(columns, text_col or raw.text_col, TEXT_COLUMNS, "--text-col", path)
    label = _pick_column(
        columns, label_col or raw.label_col, LABEL_COLUMNS, "--label-col", path, required=False
    )
    if label is None and require_labels:
        raise UsageError(f"no label column in {path}; pass --label-col (columns: {', '.join(columns)})")
    extra = [c for c in raw.frame.columns if c not in (text, label, "text", "label")]
    frame = raw.frame[[text] + ([label] if label else []) + extra].copy()
    frame.columns = ["text"] + (["label"] if label else []) + extra
    return frame


def _pick_column(
    columns: list[str],
    wanted: str | None,
    guesses: tuple[str, ...],
    flag: str,
    path: Path,
    required: bool = True,
) -> str | None:
    """`wanted` if it exists, else the first known name (case-insensitive); missing -> UsageError."""
    if wanted is not None and wanted not in columns:
        raise UsageError(
            f"no column {wanted!r} in {path}; it has: {', '.join(map(str, columns))} (fix {flag})"
        )
    if wanted is not None:
        return wanted
    by_lower = {str(c).lower(): c for c in columns}
    found = next((by_lower[g] for g in guesses if g in by_lower), None)
    if found is None and required:
        raise UsageError(
            f"cannot tell which column of {path} holds the text; pass {flag} (columns: {', '.join(columns)})"
        )
    return found


def _apply_labels(
    frame: pd.DataFrame, names: dict[str, str], drop: set[str], require_labels: bool, report: LoadReport
) -> pd.DataFrame:
    raw = frame["label"].map(_raw_label)
    dropped = raw.isin(drop) | raw.map(lambda v: names.get(v, v)).isin(drop)
    report.dropped_labels = {str(k): int(v) for k, v in raw[dropped].value_counts().items()}
    frame, raw = frame[~dropped].copy(), raw[~dropped]
    frame["label"] = normalise_labels(raw, names, strict=require_labels)
    return frame


def normalise_labels(
    raw: pd.Series, names: Mapping[str, str] | None = None, *, strict: bool = True
) -> pd.Series:
    """Map raw label strings to lower-case names; unknown values raise `UsageError` when `strict`."""
    names = dict(names or {})
    present = set(raw.dropna().unique()) - set(names)
    if present and all(_is_number(v) for v in present):
        names.update(_numeric_convention(present, strict))
    labels = raw.map(lambda v: None if v is None else names.get(v, LABEL_ALIASES.get(v, v)))
    unknown = labels.dropna()[~labels.dropna().isin(KNOWN_LABELS + tuple(names.values()))]
    if strict and not unknown.empty:
        raise UsageError(_unknown_labels_message(unknown))
    return labels


def _numeric_convention(values: set[str], strict: bool) -> dict[str, str]:
    as_ints = {str(int(float(v))) for v in values}
    for convention in NUMERIC_CONVENTIONS:
        if as_ints <= set(convention):
            return {v: convention[str(int(float(v)))] for v in values}
    if strict:
        shown = ", ".join(sorted(values, key=float)[:10])
        raise UsageError(
            f"numeric labels {shown} follow no known convention; name them with --label-map 0=negative,..."
        )
    return {}


def _unknown_labels_message(unknown: pd.Series) -> str:
    counts = unknown.value_counts()
    shown = ", ".join(f"{value!r} ({count} rows)" for value, count in counts.head(10).items())
    first = str(counts.index[0])
    return (
        f"unknown label values: {shown}; map them with --label-map {first}=neutral "
        f"or drop them with --drop-label {first}"
    )


def _raw_label(value: object) -> str | None:
    """Lower-case, stripped label text; None for missing. `1.0` and `1` are the same label."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip().lower()
    if _is_number(text) and float(text).is_integer():
        text = str(int(float(text)))
    return text or None


def _is_number(value: str) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _drop_bad_rows(frame: pd.DataFrame, report: LoadReport, require_labels: bool) -> pd.DataFrame:
    text = frame["text"].map(lambda v: v if isinstance(v, str) else None)
    empty = text.isna() | (text.fillna("").str.strip() == "")
    report.empty_text = int(empty.sum())
    frame = frame[~empty].assign(text=text[~empty])
    if "label" in frame and require_labels:
        missing = frame["label"].isna()
        report.missing_label = int(missing.sum())
        frame = frame[~missing]
    return _drop_duplicates(frame, report)


def _drop_duplicates(frame: pd.DataFrame, report: LoadReport) -> pd.DataFrame:
    """Keep one of each exact (text, label) repeat; drop every row of a text labelled two ways."""
    scope = ["split"] if "split" in frame else []
    keys = scope + ["text"] + (["label"] if "label" in frame else [])
    exact = frame.duplicated(subset=keys, keep="first")
    report.exact_duplicates = int(exact.sum())
    frame = frame[~exact]
    if "label" not in frame:
        return frame
    conflicting = frame.duplicated(subset=[*scope, "text"], keep=False)
    report.conflicting_duplicates = int(conflicting.sum())
    return frame[~conflicting]


def parse_label_map(spec: str | None) -> dict[str, str]:
    """`"0=negative,4=positive"` -> {"0": "negative", "4": "positive"}; bad pairs -> UsageError."""
    if not spec:
        return {}
    pairs = [item.split("=", 1) for item in spec.split(",") if item.strip()]
    if any(len(pair) != 2 or not pair[0].strip() or not pair[1].strip() for pair in pairs):
        raise UsageError(
            f"--label-map takes RAW=NAME pairs separated by commas, e.g. 0=negative,4=positive; got {spec!r}"
        )
    return {raw.strip().lower(): name.strip().lower() for raw, name in pairs}
