"""The report's calibration section and label-free estimates, on synthetic probabilities (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.calibration import calibrated, softmax
from training.report import ReportContext, Scored, write_report
from training.train import fit_calibration

LABELS = ["negative", "neutral", "positive"]


def synthetic(rows: int, sharpen: float = 1.0, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(logits x sharpen, true labels drawn from softmax(logits), label ids): calibrated at sharpen 1."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(rows, 3))
    ids = np.array([rng.choice(3, p=p) for p in softmax(logits)])
    return logits * sharpen, [LABELS[i] for i in ids], ids


def report(tmp_path: Path, probabilities: np.ndarray, true: list[str], **context) -> tuple[dict, str]:
    scored = Scored(
        [f"text {i}" for i in range(len(true))], true, pd.DataFrame(probabilities, columns=LABELS)
    )
    write_report(tmp_path, scored, ReportContext(title="t", model="m", data="d", **context))
    return json.loads((tmp_path / "metrics.json").read_text()), (tmp_path / "report.md").read_text()


def test_calibrated_probabilities_estimate_the_measured_numbers(tmp_path: Path) -> None:
    logits, true, _ = synthetic(6000)
    metrics, markdown = report(tmp_path, softmax(logits), true)
    model = metrics["model"]
    assert model["estimated_accuracy"] == pytest.approx(model["accuracy"], abs=0.02)
    assert model["estimated_macro_recall"] == pytest.approx(model["macro_recall"], abs=0.02)
    assert metrics["estimated_accuracy"] == model["estimated_accuracy"]  # also at the top, for scripts
    assert metrics["estimated_macro_recall"] == model["estimated_macro_recall"]
    assert model["ece"] < 0.03 and "ece_uncalibrated" not in model
    assert "the bundle has no calibration" in markdown


def test_overconfident_probabilities_overstate_and_the_report_says_so(tmp_path: Path) -> None:
    logits, true, _ = synthetic(6000, sharpen=3.0)
    model = report(tmp_path, softmax(logits), true)[0]["model"]
    assert model["estimated_accuracy"] > model["accuracy"] + 0.1
    assert model["ece"] > 0.1


def test_the_report_shows_ece_before_and_after_and_a_reliability_diagram(tmp_path: Path) -> None:
    logits, true, ids = synthetic(3000, sharpen=3.0, seed=1)
    fit = fit_calibration(logits[:1500], ids[:1500], "validation", LABELS)
    assert fit.nll_after < fit.nll_before and fit.ece_after < fit.ece_before / 2
    temperatures = fit.by_label(LABELS)
    served = calibrated(logits[1500:], list(temperatures.values()))
    metrics, markdown = report(
        tmp_path, served, true[1500:], temperatures=temperatures, calibration=fit.model_dump()
    )
    model = metrics["model"]
    assert model["ece"] < 0.04 < 0.1 < model["ece_uncalibrated"]
    assert model["estimated_accuracy"] == pytest.approx(model["accuracy"], abs=0.03)
    assert f"{model['ece_uncalibrated']:.4f} before calibration, {model['ece']:.4f} after" in markdown
    assert f"{fit.ece_before:.4f} before, {fit.ece_after:.4f} after" in markdown
    assert "![reliability diagram](reliability.png)" in markdown
    assert (tmp_path / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_binary_view_of_a_three_class_model_is_renormalised(tmp_path: Path) -> None:
    # evaluate on two-label data keeps two of the model's columns; the estimate renormalises them.
    probabilities = np.array([[0.4, 0.5, 0.1], [0.1, 0.5, 0.4]])
    scored = Scored(["a", "b"], ["negative", "positive"], pd.DataFrame(probabilities, columns=LABELS)[["negative", "positive"]])  # fmt: skip
    write_report(tmp_path, scored, ReportContext(title="t", model="m", data="d"))
    model = json.loads((tmp_path / "metrics.json").read_text())["model"]
    assert model["accuracy"] == 1.0 and model["estimated_accuracy"] == pytest.approx(0.8)


def test_with_the_bundles_shift_fit_the_report_estimates_under_shift_and_keeps_cbpe_beside_it(
    tmp_path: Path,
) -> None:
    from tests.model.test_estimate_under_shift import AIRLINE, identity_shift, scored

    probs, truth = scored(AIRLINE, 4000, seed=7)
    true = [LABELS[i] for i in truth]
    metrics, markdown = report(tmp_path, probs, true, shift=identity_shift())
    model = metrics["model"]
    assert "class shares the estimate found: negative" in markdown
    assert f"would estimate accuracy {model['cbpe_accuracy']:.4f}" in markdown
    assert model["estimate_method"] == "cbpe-under-shift"
    assert model["cbpe_accuracy"] == pytest.approx(probs.max(axis=1).mean())
    assert abs(model["estimated_accuracy"] - model["accuracy"]) < abs(
        model["cbpe_accuracy"] - model["accuracy"]
    )
    assert model["estimated_shares"]["negative"] > 0.16 + 0.2  # it saw the complaints
    assert metrics["estimated_accuracy"] == model["estimated_accuracy"]


def test_on_two_labels_of_three_the_estimate_under_shift_gives_the_left_out_probability_back(
    tmp_path: Path,
) -> None:
    from tests.model.test_estimate_under_shift import AIRLINE, identity_shift, scored

    probs, truth = scored(AIRLINE, 3000, seed=8)
    keep = truth != 1
    two = pd.DataFrame(probs[keep], columns=LABELS)[["negative", "positive"]]  # served, not renormalised
    true = [LABELS[i] for i in truth[keep]]
    scored_rows = Scored([f"t{i}" for i in range(len(true))], true, two)
    write_report(tmp_path, scored_rows, ReportContext(title="t", model="m", data="d", shift=identity_shift()))
    model = json.loads((tmp_path / "metrics.json").read_text())["model"]
    assert model["estimate_method"] == "cbpe-under-shift"
    assert set(model["estimated_shares"]) == {"negative", "positive"}
    assert model["estimated_accuracy"] == pytest.approx(model["accuracy"], abs=0.05)

    one = Scored(["a"], ["negative"], pd.DataFrame([[0.7]], columns=["negative"]))  # two left out
    write_report(tmp_path / "one", one, ReportContext(title="t", model="m", data="d", shift=identity_shift()))
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["model"]["estimate_method"] == "cbpe"
