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

import math
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
    """Running sums for the label-free estimate, mergeable by addition (rows, windows, workers).

    `support[j]`: the expected number of true-j rows (sum of p_j over all rows).
    `correct[k]`: the expected number of correct rows predicted k (sum of p_k over rows predicted k).
    `cells` and `shares` (bundles calibrated for it, `LabelShift`): rows per cell and the validation
    class shares; with them `accuracy` and `macro_recall` are the estimate under shift, without them
    (older bundles, VADER, sums of different models) plain CBPE from the two sums above.
    """

    events: int = 0
    support: dict[str, float] = field(default_factory=dict)
    correct: dict[str, float] = field(default_factory=dict)
    cells: dict[str, int] = field(default_factory=dict)
    shares: dict[str, float] | None = None
    mixed: bool = False  # sums of models with other validation shares were merged: CBPE only

    def add(self, scores: dict[str, float], shift: LabelShift | None = None) -> None:
        """Count one row's probabilities (renormalised over the labels given); with the bundle's
        `shift`, its cell too."""
        total = sum(scores.values())
        if not scores or not total > 0:
            return
        predicted = max(scores, key=scores.__getitem__)
        self.events += 1
        for label, p in scores.items():
            self.support[label] = self.support.get(label, 0.0) + p / total
        self.correct[predicted] = self.correct.get(predicted, 0.0) + scores[predicted] / total
        key = shift.cell(scores) if shift is not None else None
        if key is not None:
            self.cells[key] = self.cells.get(key, 0) + 1
            self._take_shares(dict(zip(shift.labels, shift.shares, strict=True)))  # type: ignore[union-attr]

    def merge(self, other: ExpectedConfusion) -> None:
        """Add another set of sums (another window or worker)."""
        self.events += other.events
        for mine, theirs in ((self.support, other.support), (self.correct, other.correct)):
            for label, value in theirs.items():
                mine[label] = mine.get(label, 0.0) + value
        for key, count in other.cells.items():
            self.cells[key] = self.cells.get(key, 0) + count
        self.mixed |= other.mixed
        if other.shares is not None:
            self._take_shares(other.shares)

    def _take_shares(self, shares: dict[str, float]) -> None:
        if self.shares is None:
            self.shares = dict(shares)
        elif list(self.shares) != list(shares) or any(
            abs(self.shares[label] - shares[label]) > 1e-6 for label in shares
        ):
            self.mixed = True  # cells of models fitted on other splits: no one reference to start EM from

    def _under_shift(self) -> tuple[float, float, np.ndarray] | None:
        if self.mixed or not self.cells or not self.shares:
            return None
        # rows counted without a cell (no label-shift fit) would be missing from the cells' estimate
        if sum(self.cells.values()) != self.events:
            return None
        return cells_estimate(self.cells, list(self.shares), list(self.shares.values()))

    @property
    def accuracy(self) -> float | None:
        """Expected share of correct rows; None without rows."""
        if not self.events:
            return None
        shifted = self._under_shift()
        return shifted[0] if shifted else sum(self.correct.values()) / self.events

    @property
    def macro_recall(self) -> float | None:
        """Mean over labels of expected correct / expected support (labels with support > 0)."""
        shifted = self._under_shift()
        if shifted:
            return shifted[1]
        recalls = [self.correct.get(label, 0.0) / n for label, n in self.support.items() if n > 0]
        return float(np.mean(recalls)) if recalls else None

    @property
    def estimated_shares(self) -> dict[str, float] | None:
        """The class shares the estimate under shift found (None where it does not apply)."""
        shifted = self._under_shift()
        return (
            dict(zip(self.shares, map(float, shifted[2]), strict=True)) if shifted and self.shares else None
        )


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


# --- Accuracy estimated under a change of class shares ---------------------------------------------
#
# CBPE trusts the calibration to hold on the new data. It does not when the class shares move: a
# tweet model calibrated on 16% negatives is cautious about every negative call, and on complaints
# (60% negative) those calls are right far more often than their probability says. So the estimate
# first finds the class shares of the data it sees, then re-weights each row's probabilities to them
# (Saerens et al., 2002: p'(y|x) is p(y|x) x new share / old share, normalised), then runs CBPE on the
# re-weighted probabilities. Two refinements, both measured (benchmarks/README.md, "Under shift"):
# - The probabilities EM starts from come from a re-calibration fitted for the estimate only, one
#   temperature and a bias per label (bias-corrected temperature scaling, Alexandari et al., 2020), so
#   their mean on the validation split is its class shares, which EM needs as its reference. The
#   served probabilities and labels are untouched.
# - Pure EM mistakes a change of wording for a change of shares (on other tweets it drove a whole
#   class to 0%), so each EM step is pulled back towards the validation shares: the shares are the
#   fixed point of (EM update + SHARE_SHRINK x reference) / (1 + SHARE_SHRINK).
#
# The stream cannot keep every row, so a row is counted as a cell: its predicted label and its
# re-calibrated probabilities rounded to 1/CELL_GRID. Cells add up over windows and workers, and the
# estimate runs on the merged cells (`ExpectedConfusion.cells`).

SHARE_SHRINK = 0.25  # the weight of the validation shares against one EM update
EM_ITERATIONS = 200  # the shrunk fixed point is reached in well under 100 steps
EM_TOLERANCE = 1e-7
CELL_GRID = 40  # cells of 0.025: on 4,000 real tweets (about 840 cells) the estimate moved by <= 0.004


def fit_label_shift(logits: np.ndarray, label_ids: Sequence[int]) -> tuple[float, np.ndarray]:
    """(T, bias per label) minimising the NLL of softmax(logits / T + bias) on held-out rows; the
    bias is centred (softmax ignores a common shift)."""
    from scipy.optimize import minimize

    z = np.asarray(logits, dtype=np.float64)
    ids = np.asarray(label_ids, dtype=int)

    def loss(params: np.ndarray) -> float:
        q = softmax(z / np.exp(params[0]) + params[1:])
        return float(-np.log(q[np.arange(len(q)), ids] + 1e-300).mean())

    found = minimize(loss, np.zeros(1 + z.shape[1]), method="L-BFGS-B").x
    return float(np.exp(found[0])), found[1:] - found[1:].mean()


def adapt_shares(
    q: np.ndarray, reference: np.ndarray, weights: np.ndarray | None = None, shrink: float = SHARE_SHRINK
) -> tuple[np.ndarray, np.ndarray]:
    """(class shares of the rows, the rows' probabilities re-weighted to them) by shrunk EM from the
    `reference` shares; `weights`: how many rows each line of `q` stands for (cells), 1 when None."""
    q = np.asarray(q, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    w = np.ones(len(q)) if weights is None else np.asarray(weights, dtype=np.float64)
    shares = reference.copy()
    for _ in range(EM_ITERATIONS):
        r = reweighted(q, shares / reference)
        update = (w @ r / w.sum() + shrink * reference) / (1 + shrink)
        done = np.abs(update - shares).max() < EM_TOLERANCE
        shares = update
        if done:
            break
    return shares, reweighted(q, shares / reference)


def reweighted(q: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """Rows of `q` times `ratio` per label, normalised (Bayes' rule for new class shares)."""
    r = q * ratio
    return r / np.maximum(r.sum(axis=1, keepdims=True), np.finfo(float).tiny)


@dataclass(frozen=True)
class LabelShift:
    """What the estimate under shift needs from a bundle: how its probabilities were served
    (`temperatures` per predicted label), the re-calibration for the estimate (`temperature`, `bias`)
    and the validation split's class `shares`, all in `labels` order."""

    labels: list[str]
    temperatures: list[float]
    temperature: float
    bias: list[float]
    shares: list[float]

    def recalibrated(self, served: np.ndarray) -> np.ndarray:
        """The re-calibrated probabilities of served rows (columns in `labels` order)."""
        logits = np.log(np.clip(uncalibrated(served, self.temperatures), 1e-300, None))
        return softmax(logits / self.temperature + np.asarray(self.bias))

    def cell(self, scores: dict[str, float]) -> str | None:
        """One served row as its cell key `predicted|i,j,...` (re-calibrated probability x CELL_GRID,
        rounded, in `labels` order); None for a row without this bundle's labels.

        Plain floats, not numpy: it runs once per scored event (about 3 us against numpy's 25). The
        same numbers as `recalibrated`: log p times the served T of the row's label is the logit up
        to a constant per row, which the softmax drops."""
        try:
            served = [float(scores[label]) for label in self.labels]
        except (KeyError, TypeError, ValueError):
            return None
        if not all(math.isfinite(p) and p >= 0 for p in served) or not sum(served) > 0:
            return None
        top = max(range(len(served)), key=served.__getitem__)
        scale = self.temperatures[top] / self.temperature
        z = [scale * math.log(p) + b if p > 0 else -math.inf for p, b in zip(served, self.bias, strict=True)]
        high = max(z)
        e = [math.exp(v - high) for v in z]
        total = sum(e)
        return f"{self.labels[top]}|{','.join(str(round(v / total * CELL_GRID)) for v in e)}"


def estimate_under_shift(
    q: np.ndarray, predicted: np.ndarray, reference: Sequence[float], weights: np.ndarray | None = None
) -> tuple[float, float, np.ndarray]:
    """(accuracy, macro-recall, class shares) of rows with re-calibrated probabilities `q` and
    predicted label indices `predicted`: CBPE on `q` re-weighted to the shares found by shrunk EM."""
    w = np.ones(len(q)) if weights is None else np.asarray(weights, dtype=np.float64)
    shares, r = adapt_shares(q, np.asarray(reference, dtype=np.float64), w)
    m = r.shape[1]
    correct = np.array([(w * r[:, k])[predicted == k].sum() for k in range(m)])
    support = w @ r
    recalls = [correct[k] / support[k] for k in range(m) if support[k] > 0]
    return float(correct.sum() / w.sum()), float(np.mean(recalls)), shares


def cells_estimate(
    cells: dict[str, int], labels: Sequence[str], reference: Sequence[float]
) -> tuple[float, float, np.ndarray] | None:
    """`estimate_under_shift` on merged cells (None without any)."""
    rows, predicted, weights = [], [], []
    for key, count in cells.items():
        label, _, grid = key.partition("|")
        values = np.array([float(v) for v in grid.split(",")])
        if label not in labels or len(values) != len(labels) or count <= 0 or not values.sum() > 0:
            continue  # a cell from another label set: not this estimate's
        rows.append(values / values.sum())
        predicted.append(list(labels).index(label))
        weights.append(count)
    if not rows:
        return None
    return estimate_under_shift(
        np.array(rows), np.array(predicted), reference, np.array(weights, dtype=float)
    )
