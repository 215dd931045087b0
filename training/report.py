"""The evaluation report a person reads: metrics.json, predictions, mistakes, images and report.md."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from model.calibration import LabelShift, estimate, estimate_under_shift, reliability, uncalibrated
from training.metrics import classification_metrics
from training.plots import confusion_matrix_png, reliability_png, training_curves_png

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PREDICTIONS_FILE = "predictions.csv"
MISCLASSIFIED_FILE = "misclassified.csv"
HISTORY_FILE = "history.json"  # the Trainer's log: losses and metrics per step and epoch (the curves' data)
HEADLINE = ("accuracy", "macro_recall", "macro_f1", "weighted_f1", "macro_precision")


@dataclass
class Scored:
    """Texts with their true labels and a model's probabilities (columns = the labels, in order)."""

    texts: list[str]
    true: list[str]
    probabilities: pd.DataFrame

    @property
    def predicted(self) -> list[str]:
        """The label with the highest probability per row."""
        return self.probabilities.idxmax(axis=1).tolist()


@dataclass
class ReportContext:
    """What the report says about where the numbers come from."""

    title: str
    model: str
    data: str
    split: str = "test"
    baseline: dict | None = None
    history: list[dict] = field(default_factory=list)
    best_metric: str = "macro_recall"
    extra: dict = field(default_factory=dict)
    # label -> the temperature its predictions were calibrated with (None: no calibration); the
    # report then also shows them as they were before (`model.calibration.uncalibrated`): exact when
    # the data has every label of the model; on a subset (a 3-class model on binary data) a row whose
    # top label was left out is undone with the T of its top kept label, an approximation.
    temperatures: dict[str, float] | None = None
    calibration: dict | None = None  # the bundle's Calibration (the fit on the validation split)
    shift: LabelShift | None = None  # with it, the estimates allow for other class shares


def write_report(out_dir: Path, scored: Scored, context: ReportContext) -> dict:
    """Write every report file into `out_dir`; returns the model's metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = list(scored.probabilities.columns)
    metrics = classification_metrics(scored.true, scored.predicted, labels)
    metrics.update(
        calibration_metrics(scored, context.temperatures, out_dir / "reliability.png", context.shift)
    )
    frame = _predictions_frame(scored)
    frame.to_csv(out_dir / PREDICTIONS_FILE, index=False)
    _misclassified(frame).to_csv(out_dir / MISCLASSIFIED_FILE, index=False)
    confusion_matrix_png(metrics["confusion_matrix"], labels, out_dir / "confusion_matrix.png")
    if context.history:
        training_curves_png(context.history, context.best_metric, out_dir / "training_curves.png")
        (out_dir / HISTORY_FILE).write_text(json.dumps(context.history, indent=2, default=str))
    summary = {
        "model": metrics,
        # The label-free estimates again at the top, where a script checking them looks first.
        "estimated_accuracy": metrics["estimated_accuracy"],
        "estimated_macro_recall": metrics["estimated_macro_recall"],
        "baseline_vader": context.baseline,
        "context": _context_dict(context),
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(summary, indent=2, default=str))
    (out_dir / REPORT_FILE).write_text(report_markdown(metrics, context, frame))
    return metrics


def calibration_metrics(
    scored: Scored, temperatures: dict[str, float] | None, plot: Path, shift: LabelShift | None = None
) -> dict:
    """ECE of the probabilities (and of the uncalibrated ones when temperatures were applied), the
    reliability diagram, and accuracy and macro-recall estimated from the probabilities alone: under
    shift when the bundle has the fit for it (`shift`), else CBPE (`model.calibration`)."""
    labels = list(scored.probabilities.columns)
    probs = scored.probabilities.to_numpy(dtype=np.float64)
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), np.finfo(float).tiny)
    index = {label: i for i, label in enumerate(labels)}
    truth = [index[label] for label in scored.true]
    expected = estimate(probs, labels)
    after = reliability(probs, truth)
    curves = {"served": after}
    out = {
        "estimated_accuracy": expected.accuracy,
        "estimated_macro_recall": expected.macro_recall,
        "estimate_method": "cbpe",
        "ece": after.ece,
        "mean_confidence": float(probs.max(axis=1).mean()) if len(probs) else None,
    }
    if temperatures is not None and len(probs):
        before = reliability(uncalibrated(probs, [temperatures[label] for label in labels]), truth)
        curves = {"before calibration": before, f"calibrated ({_temperatures(temperatures)})": after}
        out.update({"temperatures": temperatures, "ece_uncalibrated": before.ece})
    raw = scored.probabilities.to_numpy(dtype=np.float64)
    under_shift = _estimate_under_shift(raw, labels, shift) if shift is not None and len(probs) else None
    if under_shift is not None:
        accuracy, macro_recall, shares = under_shift
        out.update({
            "estimated_accuracy": accuracy, "estimated_macro_recall": macro_recall,
            "estimate_method": "cbpe-under-shift", "estimated_shares": shares,
            "cbpe_accuracy": expected.accuracy, "cbpe_macro_recall": expected.macro_recall,
        })  # fmt: skip
    reliability_png(curves, plot)
    return out


def _estimate_under_shift(
    probs: np.ndarray, labels: list[str], shift: LabelShift
) -> tuple[float, float, dict[str, float]] | None:
    """The estimate under shift on rows whose served probabilities of `labels` are `probs`. On a
    subset of the model's labels (binary data) the one left-out label's served probability is 1 minus
    the others' (served rows sum to 1), and the re-calibrated probabilities and the validation shares
    are renormalised over `labels`; with two left out there is no estimate under shift (None)."""
    served = np.zeros((len(probs), len(shift.labels)))
    missing = [j for j, label in enumerate(shift.labels) if label not in labels]
    if len(missing) > 1 or any(label not in shift.labels for label in labels):
        return None
    for i, label in enumerate(labels):
        served[:, shift.labels.index(label)] = probs[:, i]
    if missing:
        served[:, missing[0]] = np.clip(1 - probs.sum(axis=1), 0, 1)
    served = np.clip(served, 1e-12, None)
    columns = [shift.labels.index(label) for label in labels]
    q = shift.recalibrated(served / served.sum(axis=1, keepdims=True))[:, columns]
    reference = np.asarray(shift.shares)[columns]
    accuracy, macro_recall, shares = estimate_under_shift(
        q / q.sum(axis=1, keepdims=True), probs.argmax(axis=1), reference / reference.sum()
    )
    return accuracy, macro_recall, dict(zip(labels, map(float, shares), strict=True))


def _predictions_frame(scored: Scored) -> pd.DataFrame:
    probabilities = scored.probabilities.reset_index(drop=True)
    frame = pd.DataFrame({"text": scored.texts, "label": scored.true, "predicted": scored.predicted})
    frame["score"] = probabilities.max(axis=1).to_numpy()
    frame["correct"] = frame["label"] == frame["predicted"]
    return pd.concat([frame, probabilities.add_prefix("p_")], axis=1)


def _misclassified(frame: pd.DataFrame) -> pd.DataFrame:
    """Wrong predictions, the most confident first (those say most about what the model learned wrong)."""
    return frame[~frame["correct"]].sort_values("score", ascending=False, kind="stable")


def _context_dict(context: ReportContext) -> dict:
    return {k: v for k, v in vars(context).items() if k not in ("baseline", "history")}


def report_markdown(metrics: dict, context: ReportContext, frame: pd.DataFrame) -> str:
    """The report as markdown, images linked relative to the report."""
    lines = [
        f"# {context.title}",
        "",
        f"- model: `{context.model}`",
        f"- data: `{context.data}` ({context.split} split, {metrics['n']} rows)",
        *[f"- {key}: {value}" for key, value in context.extra.items() if not isinstance(value, dict)],
        "",
        "## Headline metrics",
        "",
        *_headline_table(metrics, context.baseline),
        "",
        "Macro recall is the mean of per-class recalls (TweetEval's sentiment metric).",
        "",
        "## Per class",
        "",
        *_per_class_table(metrics),
        "",
        "## Confusion matrix",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        *_calibration_section(metrics, context),
    ]
    if context.history:
        lines += ["## Training curves", "", "![training curves](training_curves.png)", ""]
    lines += _mistakes_section(frame)
    return "\n".join(lines) + "\n"


def _headline_table(metrics: dict, baseline: dict | None) -> list[str]:
    header = "| metric | model | VADER baseline |" if baseline else "| metric | model |"
    rows = [header, "| --- | ---: | ---: |" if baseline else "| --- | ---: |"]
    for key in HEADLINE:
        cells = [f"{metrics[key]:.4f}"] + ([f"{baseline[key]:.4f}"] if baseline else [])
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return rows


def _calibration_section(metrics: dict, context: ReportContext) -> list[str]:
    lines = [
        "## Calibration and estimated accuracy",
        "",
        "Expected calibration error (ECE, 15 bins of the top probability): how far confidence is from "
        "accuracy. Estimated accuracy and macro-recall come from the probabilities alone, without the "
        "labels: the expected confusion matrix (CBPE), after re-weighting the probabilities to the class "
        "shares this data seems to have where the bundle has the fit for it (`model.calibration`); next "
        "to the measured ones they show how far the label-free estimate in the stream can be trusted on "
        "data like this.",
        "",
        "| | measured | estimated without labels | difference |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key in ("accuracy", "macro_recall"):
        estimated = metrics[f"estimated_{key}"]
        if estimated is not None:
            lines.append(
                f"| {key} | {metrics[key]:.4f} | {estimated:.4f} | {estimated - metrics[key]:+.4f} |"
            )
    lines += ["", f"- ECE on this {context.split} split: {_ece_line(metrics)}"]
    if metrics.get("estimate_method") == "cbpe-under-shift":
        shares = ", ".join(f"{label} {share:.0%}" for label, share in metrics["estimated_shares"].items())
        lines.append(
            f"- class shares the estimate found: {shares}; trusting the validation shares instead (CBPE) "
            f"would estimate accuracy {metrics['cbpe_accuracy']:.4f}, macro-recall {metrics['cbpe_macro_recall']:.4f}"
        )
    fit = context.calibration
    if fit and fit.get("ece_before") is not None:
        lines.append(
            f"- ECE on the {fit['split']} split the temperature was fitted on ({fit['n']} rows): "
            f"{fit['ece_before']:.4f} before, {fit['ece_after']:.4f} after "
            f"({_temperatures(fit['temperatures'] or {'all': fit['temperature']})}; "
            f"NLL {fit['nll_before']:.4f} -> {fit['nll_after']:.4f})"
        )
    return [*lines, "", "![reliability diagram](reliability.png)", ""]


def _temperatures(temperatures: dict[str, float]) -> str:
    return "T " + ", ".join(f"{label} {t:.2f}" for label, t in temperatures.items())


def _ece_line(metrics: dict) -> str:
    if "ece_uncalibrated" in metrics:
        return (
            f"{metrics['ece_uncalibrated']:.4f} before calibration, {metrics['ece']:.4f} after "
            f"({_temperatures(metrics['temperatures'])} by predicted label)"
        )
    return f"{metrics['ece']:.4f} (the bundle has no calibration)"


def _per_class_table(metrics: dict) -> list[str]:
    rows = ["| class | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
    for label, row in metrics["per_class"].items():
        rows.append(
            f"| {label} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |"
        )
    return rows


def _mistakes_section(frame: pd.DataFrame, shown: int = 10) -> list[str]:
    mistakes = _misclassified(frame).head(shown)
    rows = [
        "## Most confident mistakes",
        "",
        f"All predictions: [{PREDICTIONS_FILE}]({PREDICTIONS_FILE}); mistakes: [{MISCLASSIFIED_FILE}]({MISCLASSIFIED_FILE}).",
        "",
        "| true | predicted | score | text |",
        "| --- | --- | ---: | --- |",
    ]
    if mistakes.empty:
        return [*rows[:4], "No mistakes."]
    for row in mistakes.itertuples():
        text = " ".join(str(row.text).split())[:160].replace("|", "\\|")
        rows.append(f"| {row.label} | {row.predicted} | {row.score:.3f} | {text} |")
    return rows


def probabilities_frame(rows: Sequence[dict[str, float]], labels: Sequence[str]) -> pd.DataFrame:
    """Per-row label -> probability dicts as a frame with one column per label (missing -> 0)."""
    return pd.DataFrame(list(rows), columns=list(labels)).fillna(0.0).astype(float)
