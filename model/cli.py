"""`sentistream predict`: score texts given as arguments, or every row of a CSV file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.explain import run_explain
from model.predictions import with_predictions
from model.settings import MODEL_FLAGS, ModelSettings
from sentistream.errors import UsageError
from sentistream.settings import add_settings_arguments, settings_from_args

CSV_CHUNK_ROWS = 1024  # rows per engine call: the progress bar moves and memory stays flat


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `predict` flags (docs/ARCHITECTURE.md's command table)."""
    parser.add_argument("texts", nargs="*", help="texts to score (or use --input)")
    add_settings_arguments(parser, ModelSettings, MODEL_FLAGS)
    parser.add_argument("--input", type=Path, help="CSV file to score, one text per row")
    parser.add_argument(
        "--text-col", default="text", help="column of --input holding the text (default: text)"
    )
    parser.add_argument("--output", type=Path, help="where to write the scored CSV (default: stdout)")
    parser.add_argument("--explain", action="store_true", help="show each word's weight towards the label")
    parser.add_argument(
        "--json", action="store_true", help="with --explain: one JSON object per text and line"
    )


def run(args: argparse.Namespace) -> int:
    """Score the texts or the CSV; bad rows get an error and the others are still scored."""
    if bool(args.texts) == bool(args.input):
        raise UsageError("give texts to score as arguments, or one --input file.csv (not both)")
    settings = settings_from_args(ModelSettings, args)
    if args.explain:
        return run_explain(args.texts, settings, args.json, csv_input=args.input)
    frame = _read_csv(args.input, args.text_col) if args.input else None
    engine = settings.load_engine()
    try:
        if frame is None:
            _print_predictions(args.texts, engine.predict(args.texts))
        else:
            _score_csv(engine, frame, args.text_col, args.output)
    finally:
        engine.close()
    return 0


def _print_predictions(texts: Sequence[str], predictions: Sequence[Any]) -> None:
    for text, p in zip(texts, predictions, strict=True):
        if p.error:
            print(f"error\t{p.error}\t{text}")
        else:
            print(f"{p.label}\t{p.score:.3f}\t{text}")


def _read_csv(path: Path, text_col: str):  # -> pandas.DataFrame
    import pandas as pd

    try:
        # Strings only, empty cells stay "" so they are reported as empty rather than as NaN floats.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--input {path}: no such file") from None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UsageError(f"--input {path}: not a readable UTF-8 CSV file ({type(exc).__name__})") from None
    if text_col not in frame.columns:
        raise UsageError(
            f"--input {path} has no column {text_col!r}; pick one with --text-col ({list(frame.columns)})"
        )
    return frame


def _score_csv(engine: Any, frame: Any, text_col: str, output: Path | None) -> None:
    from tqdm import tqdm

    texts = frame[text_col].tolist()
    predictions = []
    with tqdm(total=len(texts), unit="text", desc="scoring", file=sys.stderr) as bar:
        for start in range(0, len(texts), CSV_CHUNK_ROWS):
            chunk = texts[start : start + CSV_CHUNK_ROWS]
            predictions.extend(engine.predict(chunk))
            bar.update(len(chunk))
    scored = with_predictions(frame, predictions, engine.labels, engine.name)
    scored.to_csv(output if output else sys.stdout, index=False)
    failed = sum(p.error is not None for p in predictions)
    where = output or "stdout"
    print(
        f"scored {len(predictions) - failed} of {len(predictions)} rows with {engine.name} -> {where}",
        file=sys.stderr,
    )


COMMANDS = {"predict": (add_arguments, run)}
