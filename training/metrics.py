"""Classification metrics as papers report them (scikit-learn does the arithmetic)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, per-class and macro/weighted precision/recall/F1, macro recall and the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(labels)
    per_class = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    macro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    weighted = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="weighted", zero_division=0
    )
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # TweetEval's sentiment metric: the mean of per-class recalls (robust to class imbalance).
        "macro_recall": float(macro[1]),
        "macro_precision": float(macro[0]),
        "macro_f1": float(macro[2]),
        "weighted_precision": float(weighted[0]),
        "weighted_recall": float(weighted[1]),
        "weighted_f1": float(weighted[2]),
        "per_class": {label: _class_row(per_class, i) for i, label in enumerate(labels)},
        "labels": labels,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def _class_row(per_class: tuple, index: int) -> dict:
    precision, recall, f1, support = (values[index] for values in per_class)
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)}


def trainer_metrics(labels: Sequence[str]):
    """A `compute_metrics` for the HF Trainer: the headline numbers from logits and label ids."""

    def compute(eval_pred) -> dict[str, float]:
        logits, label_ids = eval_pred
        predicted = np.asarray(logits).argmax(axis=-1)
        names = np.asarray(labels)
        full = classification_metrics(names[label_ids], names[predicted], labels)
        return {key: full[key] for key in ("accuracy", "macro_recall", "macro_f1")}

    return compute
