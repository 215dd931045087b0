"""Calibrated probabilities and accuracy estimated without labels.

Temperature scaling (Guo et al., 2017), one temperature per predicted label: the logits of a row
whose arg-max is k are divided by T_k, each T_k fitted on the held-out rows predicted k by minimising
their negative log-likelihood (a label predicted on too few rows gets the single T fitted on all).
Why this and not Platt, isotonic, Dirichlet or bias terms: dividing a row's logits by one positive
number never changes its arg-max, so labels, accuracy and the ONNX parity checks stay exactly as they
were; a few parameters cannot overfit a validation split of a few hundred rows; and it is one
division inside the engines' shared post-processing, identical for PyTorch and both ONNX graphs.
Why per predicted label and not one T: the `tweets-cpu` recipe trains with class weights, which push
probability towards the rare class, so the rows predicted as that class are overconfident and the
others are not (measured: predicted negative 45% right at 66% confidence, positive 75% at 73%); one
T cannot cool one class and not the others, and the overconfidence carries to other domains.

Estimated performance (NannyML's CBPE): if probabilities are calibrated, a row predicted as k with
probability p_j for class j is, in expectation, p_j of a true-j row. Summing over rows gives the
expected confusion matrix E[C][j][k] = sum over rows predicted k of p_j, and from it accuracy
(mean top probability) and per-class recall, with no labels at all. Every quantity here is a sum
over rows, so windows and workers merge by adding (`ExpectedConfusion`).

Numpy only: the stream worker and the dashboard import this without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

ECE_BINS = 15  # the usual choice (Guo et al.); equal-width bins of the top probability
T_BOUNDS = (0.05, 20.0)  # far outside anything fine-tuning produces; keeps the search finite
MIN_CLASS_ROWS = 50  # fewer validation rows predicted as a label: it gets the one T fitted on all rows


def softmax(logits: np.ndarray, temperature: float | np.ndarray = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature` in float64, stable for large logits
    (`temperature`: one number, or one per row shaped (rows, 1))."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def row_temperatures(logits: np.ndarray, temperatures: float | Sequence[float]) -> float | np.ndarray:
    """One T for every row, or each row's T by its arg-max (`temperatures` in label order): (rows, 1)."""
    if np.ndim(temperatures) == 0:
        return float(temperatures)  # type: ignore[arg-type]
    return np.asarray(temperatures, dtype=np.float64)[np.asarray(logits).argmax(axis=-1)][:, None]


def calibrated(logits: np.ndarray, temperatures: float | Sequence[float] = 1.0) -> np.ndarray:
    """Probabilities as the engines serve them: softmax(logits / T of the row's predicted label)."""
    return softmax(logits, row_temperatures(logits, temperatures))


def uncalibrated(probabilities: np.ndarray, temperatures: float | Sequence[float]) -> np.ndarray:
    """The probabilities before calibration: log p is logits / T plus a constant per row, and the
    arg-max is the same, so softmax(T x log p) gives back softmax(logits) exactly."""
    probs = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return softmax(row_temperatures(probs, temperatures) * np.log(probs))


def nll(logits: np.ndarray, label_ids: Sequence[int], temperature: float | np.ndarray = 1.0) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / T)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-log_probs[np.arange(len(z)), np.asarray(label_ids, dtype=int)].mean())


def fit_temperature(logits: np.ndarray, label_ids: Sequence[int]) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) on (logits, label_ids).

    The NLL is smooth and unimodal in log T, so a bounded scalar search finds it in a few dozen
    evaluations of one vectorised expression.
    """
    from scipy.optimize import minimize_scalar

    if len(label_ids) == 0:
        return 1.0
    low, high = np.log(T_BOUNDS)
    found = minimize_scalar(
        lambda log_t: nll(logits, label_ids, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(found.x))


def fit_class_temperatures(logits: np.ndarray, label_ids: Sequence[int]) -> tuple[float, list[float]]:
    """(T fitted on all rows, T per predicted label in label order): each label's fitted on the rows
    predicted as it, or the overall T where fewer than MIN_CLASS_ROWS rows were."""
    logits, ids = np.asarray(logits, dtype=np.float64), np.asarray(label_ids, dtype=int)
    overall = fit_temperature(logits, ids)
    predicted = logits.argmax(axis=1)
    per_label = [
        fit_temperature(logits[predicted == k], ids[predicted == k])
        if (predicted == k).sum() >= MIN_CLASS_ROWS
        else overall
        for k in range(logits.shape[1])
    ]
    return overall, per_label


@dataclass(frozen=True)
class Reliability:
    """Top-probability bins: rows, mean confidence and accuracy per bin, and the ECE they give."""

    edges: list[float]
    counts: list[int]
    confidence: list[float | None]
    accuracy: list[float | None]
    ece: float


def reliability(probabilities: np.ndarray, label_ids: Sequence[int], bins: int = ECE_BINS) -> Reliability:
    """Expected calibration error of the top label: sum over bins of share x |accuracy - confidence|."""
    probs = np.asarray(probabilities, dtype=np.float64)
    top = probs.max(axis=1)
    hit = probs.argmax(axis=1) == np.asarray(label_ids, dtype=int)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(top, edges[1:-1], right=True), 0, bins - 1)
    counts, confidence, accuracy, ece = [], [], [], 0.0
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        counts.append(n)
        confidence.append(float(top[inside].mean()) if n else None)
        accuracy.append(float(hit[inside].mean()) if n else None)
        if n:
            ece += n / len(top) * abs(accuracy[-1] - confidence[-1])  # type: ignore[operator]
    return Reliability(edges.tolist(), counts, confidence, accuracy, float(ece))


def expected_calibration_error(
    probabilities: np.ndarray, label_ids: Sequence[int], bins: int = ECE_BINS
) -> float:
    """ECE of the top label (see `reliability`)."""
    return reliability(probabilities, label_ids, bins).ece


@dataclass
class ExpectedConfusion:
    """Running sums for CBPE, mergeable by addition (rows, windows, workers).

    `support[j]`: the expected number of true-j rows (sum of p_j over all rows).
    `correct[k]`: the expected number of correct rows predicted k (sum of p_k over rows predicted k).
    """

    events: int = 0
    support: dict[str, float] = field(default_factory=dict)
    correct: dict[str, float] = field(default_factory=dict)

    def add(self, scores: dict[str, float]) -> None:
        """Count one row's probabilities (renormalised over the labels given)."""
        total = sum(scores.values())
        if not scores or not total > 0:
            return
        predicted = max(scores, key=scores.__getitem__)
        self.events += 1
        for label, p in scores.items():
            self.support[label] = self.support.get(label, 0.0) + p / total
        self.correct[predicted] = self.correct.get(predicted, 0.0) + scores[predicted] / total

    def merge(self, other: ExpectedConfusion) -> None:
        """Add another set of sums (another window or worker)."""
        self.events += other.events
        for mine, theirs in ((self.support, other.support), (self.correct, other.correct)):
            for label, value in theirs.items():
                mine[label] = mine.get(label, 0.0) + value

    @property
    def accuracy(self) -> float | None:
        """Expected share of correct rows (the mean calibrated top probability); None without rows."""
        return sum(self.correct.values()) / self.events if self.events else None

    @property
    def macro_recall(self) -> float | None:
        """Mean over labels of expected correct / expected support (labels with support > 0)."""
        recalls = [self.correct.get(label, 0.0) / n for label, n in self.support.items() if n > 0]
        return float(np.mean(recalls)) if recalls else None


def estimate(probabilities: np.ndarray, labels: Sequence[str]) -> ExpectedConfusion:
    """CBPE sums of a batch of probability rows (columns in `labels` order)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), np.finfo(float).tiny)
    predicted = probs.argmax(axis=1)
    top = probs[np.arange(len(probs)), predicted]
    return ExpectedConfusion(
        events=len(probs),
        support={label: float(probs[:, j].sum()) for j, label in enumerate(labels)},
        correct={label: float(top[predicted == j].sum()) for j, label in enumerate(labels)},
    )
