"""Temperature scaling, ECE and the label-free accuracy estimate (CBPE) on synthetic probabilities."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from model.calibration import (
    ExpectedConfusion,
    calibrated,
    estimate,
    expected_calibration_error,
    fit_class_temperatures,
    fit_temperature,
    nll,
    softmax,
    uncalibrated,
)
from tests.model.conftest import TEXTS

LABELS = ["negative", "neutral", "positive"]


def calibrated_set(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): calibrated at T = 1 by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(rows, 3)) + rng.normal(0.0, 1.0, size=(1, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits)])
    return logits, labels


def test_fitting_a_temperature_undoes_overconfidence() -> None:
    logits, labels = calibrated_set(4000)
    overconfident = logits * 3.0  # what an over-trained network does: same arg-max, sharper softmax
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert nll(overconfident, labels, temperature) < nll(overconfident, labels) - 0.2
    before = expected_calibration_error(softmax(overconfident), labels)
    after = expected_calibration_error(softmax(overconfident, temperature), labels)
    assert before > 0.15 and after < 0.03


def test_a_calibrated_set_keeps_a_temperature_near_one() -> None:
    logits, labels = calibrated_set(4000, seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)


def test_the_estimate_equals_the_measured_numbers_on_a_calibrated_set() -> None:
    # Labels drawn from the probabilities themselves: the expected confusion matrix is the truth's mean.
    logits, labels = calibrated_set(20000, seed=2)
    probs = softmax(logits)
    predicted = probs.argmax(axis=1)
    expected = estimate(probs, LABELS)
    assert expected.accuracy == pytest.approx((predicted == labels).mean(), abs=0.01)
    recalls = [(predicted[labels == k] == k).mean() for k in range(3)]
    assert expected.macro_recall == pytest.approx(np.mean(recalls), abs=0.01)


def test_the_estimate_is_wrong_on_a_miscalibrated_set_and_right_after_calibration() -> None:
    logits, labels = calibrated_set(20000, seed=3)
    sharp = logits * 3.0
    measured = (sharp.argmax(axis=1) == labels).mean()
    assert estimate(softmax(sharp), LABELS).accuracy > measured + 0.1  # overconfidence overstates it
    temperature = fit_temperature(sharp[:5000], labels[:5000])
    assert estimate(softmax(sharp, temperature), LABELS).accuracy == pytest.approx(measured, abs=0.015)


def test_a_temperature_per_predicted_label_cools_only_the_overconfident_label() -> None:
    # What class weights do: the rows predicted as one label are overconfident, the others are not.
    logits, labels = calibrated_set(20000, seed=5)
    sharp = logits.copy()
    sharp[logits.argmax(axis=1) == 0] *= 3.0
    overall, per_label = fit_class_temperatures(sharp[:5000], labels[:5000])
    assert per_label[0] == pytest.approx(3.0, rel=0.15)
    assert per_label[1] == pytest.approx(1.0, rel=0.15) and per_label[2] == pytest.approx(1.0, rel=0.15)
    assert 1.1 < overall < per_label[0]  # one T is a compromise that fits no label
    held_out, truth = sharp[5000:], labels[5000:]
    measured = (held_out.argmax(axis=1) == truth).mean()
    one_t = abs(estimate(softmax(held_out, overall), LABELS).accuracy - measured)
    by_label = abs(estimate(calibrated(held_out, per_label), LABELS).accuracy - measured)
    assert by_label < 0.015 < one_t
    assert (calibrated(held_out, per_label).argmax(axis=1) == held_out.argmax(axis=1)).all()
    np.testing.assert_allclose(uncalibrated(calibrated(held_out, per_label), per_label), softmax(held_out))


def test_sums_merge_by_addition_like_one_pass() -> None:
    probs = softmax(calibrated_set(300, seed=4)[0])
    whole = estimate(probs, LABELS)
    parts = ExpectedConfusion()
    for chunk in (probs[:100], probs[100:]):
        parts.merge(estimate(chunk, LABELS))
    one_by_one = ExpectedConfusion()
    for row in probs:
        one_by_one.add(dict(zip(LABELS, row, strict=True)))
    for other in (parts, one_by_one):
        assert other.events == whole.events == 300
        assert other.accuracy == pytest.approx(whole.accuracy)
        assert other.macro_recall == pytest.approx(whole.macro_recall)


def test_an_empty_estimate_has_no_numbers() -> None:
    assert ExpectedConfusion().accuracy is None and ExpectedConfusion().macro_recall is None


# Stored: 2.5 for every label; or 1.5 for negative, 4.0 for positive and 2.5 (the default) for neutral.
CALIBRATIONS = {
    "one": ({}, [2.5, 2.5, 2.5]),
    "by label": ({"negative": 1.5, "positive": 4.0}, [1.5, 2.5, 4.0]),
}


@pytest.fixture(params=list(CALIBRATIONS))
def calibrated_bundle(request, bundle_dir: Path, tmp_path: Path) -> tuple[Path, list[float]]:
    """The tiny bundle with stored temperatures, and the T per label they mean."""
    from model.bundle import Calibration, load_bundle, write_bundle_meta

    by_label, expected = CALIBRATIONS[request.param]
    copy = Path(shutil.copytree(bundle_dir, tmp_path / "calibrated"))
    meta = load_bundle(copy).meta
    calibration = Calibration(temperature=2.5, temperatures=by_label)
    write_bundle_meta(copy, meta.model_copy(update={"calibration": calibration}))
    return copy, expected


@pytest.mark.parametrize("backend,int8", [("torch", None), ("onnx", False), ("onnx", True)])
def test_every_engine_applies_the_stored_temperature(
    bundle_dir: Path, calibrated_bundle: tuple[Path, list[float]], backend: str, int8: bool | None
) -> None:
    from model.engines import load_engine

    def probabilities(bundle: Path) -> np.ndarray:
        engine = load_engine(bundle, backend, "cpu", int8=int8)
        try:
            return np.array([[p.scores[label] for label in LABELS] for p in engine.predict(TEXTS)])
        finally:
            engine.close()

    bundle, temperatures = calibrated_bundle
    plain, served = probabilities(bundle_dir), probabilities(bundle)
    # log p is the logits up to a constant per row, so softmax(log p / T) is softmax(logits / T).
    np.testing.assert_allclose(served, calibrated(np.log(plain), temperatures), atol=1e-5)
    assert (served.argmax(axis=1) == plain.argmax(axis=1)).all()
    assert served.max(axis=1).mean() < plain.max(axis=1).mean() - 0.01  # softer, as T > 1 makes it


def test_torch_and_onnx_serve_the_same_calibrated_probabilities(
    calibrated_bundle: tuple[Path, list[float]],
) -> None:
    from model.engines import load_engine

    out = {}
    for backend in ("torch", "onnx"):
        engine = load_engine(calibrated_bundle[0], backend, "cpu", int8=False)
        out[backend] = np.array([[p.scores[label] for label in LABELS] for p in engine.predict(TEXTS)])
        engine.close()
    np.testing.assert_allclose(out["onnx"], out["torch"], atol=1e-4)


def test_a_bundle_without_calibration_serves_plain_softmax(bundle_dir: Path) -> None:
    from model.bundle import load_bundle

    assert load_bundle(bundle_dir).meta.calibration is None
    assert load_bundle(bundle_dir).meta.temperatures == [1.0, 1.0, 1.0]
