"""The label-free estimators `benchmarks/estimate_under_shift.py` compares, on synthetic data whose
accuracy is known: each must be right where its assumption holds, or the benchmark's table means nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.estimate_under_shift import ESTIMATORS, Rows, fit, read_scored

LABELS = ["negative", "neutral", "positive"]
MEANS = np.array([[-1.5, 0.0], [0.0, 0.8], [1.5, 0.0]])  # one 2-d Gaussian per class, unit variance
SOURCE = np.array([0.16, 0.45, 0.39])  # the class shares of the tweets the bundles are trained on
AIRLINE = np.array([0.63, 0.21, 0.16])


def rows(shares: np.ndarray, n: int, seed: int) -> Rows:
    """Rows drawn with `shares`, scored with the exact posterior under the SOURCE shares: calibrated
    on data like the validation split, and wrong in the way a model is after a change of shares."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(3, size=n, p=shares)
    x = MEANS[truth] + rng.standard_normal((n, 2))
    log_likelihood = -0.5 * ((x[:, None, :] - MEANS[None]) ** 2).sum(axis=2)
    posterior = SOURCE * np.exp(log_likelihood - log_likelihood.max(axis=1, keepdims=True))
    return Rows(posterior / posterior.sum(axis=1, keepdims=True), truth, LABELS, LABELS)


@pytest.fixture(scope="module")
def fitted():
    return fit(rows(SOURCE, 4000, seed=0), [1.0, 1.0, 1.0])


@pytest.mark.parametrize("method", list(ESTIMATORS))
def test_every_estimator_is_right_on_data_like_the_validation_split(fitted, method: str) -> None:
    target = rows(SOURCE, 4000, seed=1)
    accuracy, macro_recall = target.measured()
    est_accuracy, est_recall = ESTIMATORS[method](fitted, target)
    assert est_accuracy == pytest.approx(accuracy, abs=0.03)
    if est_recall is not None:
        assert est_recall == pytest.approx(macro_recall, abs=0.04)


def test_a_change_of_class_shares_fools_cbpe_and_the_prior_shift_estimators_undo_it(fitted) -> None:
    target = rows(AIRLINE, 4000, seed=2)
    accuracy, macro_recall = target.measured()
    assert abs(ESTIMATORS["cbpe"](fitted, target)[0] - accuracy) > 0.05  # the premise of the comparison
    for method in ("bbse", "em-cbpe", "bcts-em"):
        est_accuracy, est_recall = ESTIMATORS[method](fitted, target)
        assert est_accuracy == pytest.approx(accuracy, abs=0.03), method
        assert est_recall == pytest.approx(macro_recall, abs=0.03), method


def test_a_two_label_report_gives_back_the_left_out_probability(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "text": ["a", "b"],
            "label": ["negative", "positive"],
            "p_negative": [0.2, 0.1],
            "p_positive": [0.5, 0.3],
        }
    ).to_csv(tmp_path / "predictions.csv", index=False)
    scored = read_scored(tmp_path, LABELS)
    assert scored.probs[:, 1] == pytest.approx([0.3, 0.6])  # neutral: 1 - the two written
    assert scored.view == pytest.approx(np.array([[0.2, 0.5], [0.1, 0.3]]) / [[0.7], [0.4]])
    assert scored.truth.tolist() == [0, 1] and scored.measured() == (0.5, 0.5)
