"""`sentistream predict`: score texts given as arguments, or every row of a file `train` could read."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.cleaning import nothing_visible, validate_text
from model.engines.base import Prediction
from model.explain import run_explain
from model.predictions import with_predictions
from model.progress import predict_in_chunks
from model.settings import MODEL_FLAGS, ModelSettings
from sentistream.errors import UsageError
from sentistream.settings import add_settings_arguments, settings_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `predict` flags (docs/ARCHITECTURE.md's command table)."""
    parser.add_argument("texts", nargs="*", help="texts to score (or use --input)")
    add_settings_arguments(parser, ModelSettings, MODEL_FLAGS)
    parser.add_argument(
        "--input",
        type=Path,
        help="file to score, one text per row: CSV, TSV, JSON lines or Parquet (what `train` reads)",
    )
    parser.add_argument("--text-col", default=None, help="column of --input holding the text (default: text)")
    parser.add_argument(
        "--output", type=Path, help="where to write the scored rows (default: stdout); its folder must exist"
    )
    parser.add_argument("--explain", action="store_true", help="show each word's weight towards the label")
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per text and line (with --input: per row, instead of CSV)",
    )


def run(args: argparse.Namespace) -> int:
    """Score the texts or the file; bad rows get an error and the others are still scored."""
    if bool(args.texts) == bool(args.input):
        raise UsageError("give texts to score as arguments, or one --input file (not both)")
    settings = settings_from_args(ModelSettings, args)
    _check_output(args.output)  # before the model loads and the file is scored
    if args.explain:
        return run_explain(args.texts, settings, args.json, csv_input=args.input)
    frame, text_col = _read_input(args.input, args.text_col) if args.input else (None, "")
    engine = settings.load_engine()
    try:
        if frame is None:
            _print_predictions(args.texts, predict_as_the_stream_does(engine, args.texts), args.json, engine)
        else:
            _score_rows(engine, frame, text_col, args.output, args.json)
    finally:
        engine.close()
    return 0


def predict_as_the_stream_does(engine: Any, texts: Sequence[object]) -> list[Prediction]:
    """`engine.predict`, except that a text the stream dead-letters at `validate` gets its reason.

    The rule is `model.cleaning.nothing_visible`, the one `stream.events.Tweet` applies (invisible-only
    or markup-only texts), so a text scores here only if it would there.
    Texts the engine itself refuses (empty, whitespace, not a string) keep the engine's message.
    """
    reasons = [None if validate_text(t) else nothing_visible(t) for t in texts]  # type: ignore[arg-type]
    scored = iter(engine.predict([t for t, r in zip(texts, reasons, strict=True) if r is None]))
    return [next(scored) if r is None else Prediction(None, None, error=r) for r in reasons]


def _print_predictions(
    texts: Sequence[str], predictions: Sequence[Prediction], as_json: bool, engine: Any
) -> None:
    for text, p in zip(texts, predictions, strict=True):
        if as_json:
            print(json.dumps(_prediction_json(text, p, engine.name), ensure_ascii=False))
        elif p.error:
            print(f"error\t{p.error}\t{text}")
        else:
            print(f"{p.label}\t{p.score:.3f}\t{text}")


def _prediction_json(text: str, p: Prediction, model: str) -> dict:
    return {"text": text, "label": p.label, "score": p.score, "scores": p.scores, "truncated": p.truncated,
            "error": p.error, "model": model}  # fmt: skip


def _check_output(output: Path | None) -> None:
    """Refuse an --output that cannot be written, before any work is done."""
    if output is None:
        return
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; give a file name, such as {output / 'scored.csv'}")
    if not output.parent.is_dir():
        raise UsageError(
            f"--output {output}: the folder {output.parent} does not exist; create it (mkdir -p) or pick another"
        )


def _read_input(path: Path, text_col: str | None):  # -> (pandas.DataFrame, text column)
    """The rows of `path`, read by the readers `train` uses (training/formats.py), all kept."""
    from training.formats import read_table  # lazy: pyarrow (through pandas)

    if path.is_dir():
        raise UsageError(f"--input {path} is a folder; pass one file (.csv, .tsv, .jsonl or .parquet)")
    if not path.exists():
        raise UsageError(f"--input {path}: no such file")
    table = read_table(path)
    text_col = text_col or table.text_col or "text"
    if text_col not in table.frame.columns:
        raise UsageError(
            f"--input {path} has no column {text_col!r}; pick one with --text-col ({list(table.frame.columns)})"
        )
    if table.malformed:
        lines = ", ".join(map(str, table.malformed[:5])) + (", ..." if len(table.malformed) > 5 else "")
        print(f"skipped {len(table.malformed)} malformed rows of {path} (lines {lines})", file=sys.stderr)
    return table.frame, text_col


def _score_rows(engine: Any, frame: Any, text_col: str, output: Path | None, as_json: bool) -> None:
    texts = frame[text_col].tolist()
    predictions = predict_in_chunks(
        engine, texts, "scoring", lambda chunk: predict_as_the_stream_does(engine, chunk)
    )
    scored = with_predictions(frame, predictions, engine.labels, engine.name)
    target = output if output else sys.stdout
    if as_json:
        scored.to_json(target, orient="records", lines=True, force_ascii=False)
    else:
        scored.to_csv(target, index=False)
    failed = sum(p.error is not None for p in predictions)
    where = output or "stdout"
    print(
        f"scored {len(predictions) - failed} of {len(predictions)} rows with {engine.name} -> {where}",
        file=sys.stderr,
    )


COMMANDS = {"predict": (add_arguments, run)}
