"""`sentistream evaluate`: score any labelled dataset with a bundle, next to the VADER baseline."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from model.bundle import Calibration, load_bundle
from model.engines import load_engine
from model.progress import predict_in_chunks
from model.settings import ModelSettings
from sentistream.errors import SentistreamError, UsageError
from training.datasets import load_dataset, parse_label_map
from training.metrics import classification_metrics
from training.report import ReportContext, Scored, probabilities_frame, write_report
from training.settings import EvaluateSettings

log = logging.getLogger(__name__)


def evaluate(settings: EvaluateSettings, model: ModelSettings) -> tuple[Path, dict]:
    """Write the evaluation report for `model` on `settings.data`; returns (dir, metrics).

    No --model scores with the VADER lexicon, as everywhere else (`predict`, the worker): a baseline
    report for the data, written to ./eval-vader-<data name> unless --output says where.
    """
    frame = evaluation_rows(settings)  # a missing or unreadable --data fails here, before the model
    engine = model.load_engine()
    try:
        labels = shared_labels(frame["label"], engine.labels)
        scored = score(engine, frame["text"].tolist(), frame["label"].tolist(), labels)
    finally:
        engine.close()
    data_name = _data_name(settings.data)
    out_dir = settings.output or (
        Path(model.model) / f"eval-{data_name}" if model.model else Path(f"eval-vader-{data_name}")
    )
    calibration = served_calibration(model.model, engine.backend)
    context = ReportContext(
        title="Evaluation report", model=f"{engine.name} ({engine.backend} on {engine.device})",
        data=str(settings.data), split=settings.split,
        baseline=vader_baseline(scored.texts, scored.true, labels),
        temperatures=calibration.by_label(engine.labels) if calibration else None,
        calibration=calibration.model_dump() if calibration else None,
        shift=calibration.label_shift(engine.labels) if calibration else None,
    )  # fmt: skip
    metrics = write_report(out_dir, scored, context)
    log.info(
        "accuracy %.4f (estimated without labels %.4f), macro recall %.4f (estimated %.4f), ECE %.4f "
        "on %d rows; report: %s",
        metrics["accuracy"], metrics["estimated_accuracy"], metrics["macro_recall"],
        metrics["estimated_macro_recall"], metrics["ece"], metrics["n"], out_dir / "report.md",
    )  # fmt: skip
    return out_dir, metrics


def served_calibration(model: str | Path | None, backend: str) -> Calibration | None:
    """The calibration the engine applied: the bundle's, none for the lexicon or a plain HF model."""
    if model is None or backend in ("vader", "constant"):
        return None
    return load_bundle(model).meta.calibration


def evaluation_rows(settings: EvaluateSettings) -> pd.DataFrame:
    """The labelled rows to score: one split when asked, at most `--limit` (stratified)."""
    data = load_dataset(
        settings.data, settings.format, settings.text_col, settings.label_col,
        drop_labels=settings.drop_labels(), label_map=parse_label_map(settings.label_map),
    )  # fmt: skip
    log.info("%s (%s format): %s", settings.data, data.format, data.report.summary())
    frame = data.frame
    if settings.split != "all":
        if "split" not in frame or not (frame["split"] == settings.split).any():
            raise UsageError(f"{settings.data} has no {settings.split} split; use --split all")
        frame = frame[frame["split"] == settings.split]
    if settings.limit is not None and len(frame) > settings.limit:
        from sklearn.model_selection import train_test_split

        frame, _ = train_test_split(
            frame, train_size=settings.limit, random_state=settings.seed, stratify=frame["label"]
        )
    return frame.reset_index(drop=True)


def shared_labels(true: pd.Series, model_labels: Sequence[str]) -> list[str]:
    """The model's labels that the data uses (a 3-class model on binary data picks between two)."""
    unseen = sorted(set(true) - set(model_labels))
    if unseen:
        raise UsageError(
            f"labels {unseen} are not among the model's {list(model_labels)}; map them with --label-map"
        )
    present = set(true)
    return [label for label in model_labels if label in present] if len(present) >= 2 else list(model_labels)


def score(engine, texts: Sequence[str], true: Sequence[str], labels: Sequence[str] | None = None) -> Scored:
    """Run `engine` over `texts`; probabilities restricted to `labels` (default: the engine's)."""
    labels = list(labels or engine.labels)
    predictions = predict_in_chunks(engine, list(texts), f"scoring ({engine.backend})")
    failed = [p.error for p in predictions if p.error]
    if failed:
        raise SentistreamError(f"{len(failed)} of {len(texts)} texts could not be scored, e.g.: {failed[0]}")
    probabilities = probabilities_frame([p.scores for p in predictions], labels)
    return Scored(list(texts), list(true), probabilities)


def vader_baseline(texts: Sequence[str], true: Sequence[str], labels: Sequence[str]) -> dict | None:
    """VADER's metrics on the same rows (on binary data its neutral is left out of the arg-max)."""
    engine = load_engine(None, backend="vader")
    try:
        if not set(labels) <= set(engine.labels):
            log.info("no VADER baseline: labels %s are not VADER's %s", list(labels), engine.labels)
            return None
        scored = score(engine, texts, true, labels)
    finally:
        engine.close()
    return classification_metrics(scored.true, scored.predicted, list(labels))


def _data_name(path: Path) -> str:
    return (path.stem if path.is_file() else path.name) or "data"
