"""Predictions as columns of a table: what `predict --input` writes and the dashboard's upload offers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from model.engines.base import Prediction


def with_predictions(
    frame: Any, predictions: Sequence[Prediction], labels: Sequence[str], model: str
):  # -> pandas.DataFrame
    """`frame` plus predicted_label, predicted_score, score_<label> per label, truncated, error, model."""
    # "predicted_" so a labelled input keeps its own `label` column next to the model's verdict.
    scored = frame.copy()
    scored["predicted_label"] = [p.label for p in predictions]
    scored["predicted_score"] = [p.score for p in predictions]
    for label in labels:
        scored[f"score_{label}"] = [p.scores.get(label) for p in predictions]
    scored["truncated"] = [p.truncated for p in predictions]
    scored["error"] = [p.error or "" for p in predictions]
    scored["model"] = model
    return scored
