"""A real training run on a learnable synthetic task, the bundle it writes, and its report."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sentistream.cli import main
from training.settings import TrainSettings

LABELS = ["negative", "neutral", "positive"]
# The first test pays for the module's training run: minutes on a loaded 2-core machine, so the
# default 300 s would cut it (a bound against a hang, not a speed claim). Slow: a real training run
# (about 90 s of setup here), so `make test-fast` leaves it to `make test`.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def quick_settings(data: Path, base: Path, output: Path, **overrides) -> TrainSettings:
    """A recipe that learns the synthetic task in seconds on a CPU."""
    options = {"epochs": 5, "lr": 3e-3, "batch_size": 16, "max_length": 32, "device": "cpu", "patience": 5}
    return TrainSettings(data=data, base_model=str(base), output=output, **{**options, **overrides})


@dataclass
class ResumedRun:
    """A training run stopped by Ctrl-C after step 5, then finished with --resume."""

    bundle: Path
    checkpoints: list[str]  # what the interrupted run left
    refused: int  # exit status of `train` into that output without --resume
    steps: list[int]  # the steps the resumed run ran
    max_steps: int
    optimizer_state: int  # entries in Adam's state when the resumed run began (-1: no optimizer)


@pytest.fixture(scope="module")
def resumed(task, tmp_path_factory: pytest.TempPathFactory) -> ResumedRun:
    """One run serves the resume test and every test of the finished bundle (a second full training
    would double this module's time); a broken resume fails them all, which it should."""
    from transformers import TrainerCallback

    from training import train as train_module

    class CtrlCAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                os.kill(os.getpid(), signal.SIGINT)

    class Steps(TrainerCallback):
        """What the resumed run started from: its first step, how many it ran, the optimizer's state."""

        def __init__(self) -> None:
            self.steps: list[int] = []
            self.max_steps = 0
            self.optimizer_state = -1

        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            self.max_steps = state.max_steps
            self.optimizer_state = len(optimizer.state) if optimizer is not None else -1

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(state.global_step)

    real_build = train_module.build_trainer

    def with_ctrl_c(*args, **kwargs):
        trainer = real_build(*args, **kwargs)
        trainer.add_callback(CtrlCAtStep())
        return trainer

    data, base = task
    out = tmp_path_factory.mktemp("run") / "bundle"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "build_trainer", with_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            train_module.train(quick_settings(data, base, out))
    checkpoints = [c.name for c in sorted((out / "checkpoints" / "finetune").glob("checkpoint-*"))]
    refused = main(["train", "--data", str(data), "--base-model", str(base), "--output", str(out)])
    steps = Steps()
    bundle = train_module.train(quick_settings(data, base, out, resume=True), callbacks=[steps])
    return ResumedRun(bundle, checkpoints, refused, steps.steps, steps.max_steps, steps.optimizer_state)


@pytest.fixture(scope="module")
def bundle(resumed: ResumedRun) -> Path:
    """The bundle `train` writes for the synthetic task."""
    return resumed.bundle


def test_learns_the_synthetic_task(bundle: Path) -> None:
    meta = json.loads((bundle / "sentistream.json").read_text())
    assert meta["labels"] == LABELS
    assert meta["metrics"]["test"]["accuracy"] >= 0.9
    assert meta["metrics"]["validation"]["macro_recall"] >= 0.9
    assert meta["data_fingerprint"] and meta["max_length"] == 32
    assert not (bundle / "checkpoints").exists()  # a finished bundle carries no optimizer state


def test_report_files_hold_the_numbers_of_metrics_json(bundle: Path) -> None:
    report = bundle / "report"
    for name in ("report.md", "metrics.json", "predictions.csv", "misclassified.csv"):
        assert (report / name).stat().st_size > 0
    for image in ("confusion_matrix.png", "training_curves.png", "reliability.png"):
        assert (report / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((report / "metrics.json").read_text())["model"]
    predictions = pd.read_csv(report / "predictions.csv")
    assert metrics["n"] == len(predictions) == np.sum(metrics["confusion_matrix"])
    assert metrics["accuracy"] == pytest.approx((predictions["label"] == predictions["predicted"]).mean())
    recalls = [metrics["per_class"][label]["recall"] for label in LABELS]
    assert metrics["macro_recall"] == pytest.approx(np.mean(recalls))
    mistakes = pd.read_csv(report / "misclassified.csv")
    assert len(mistakes) == (~predictions["correct"]).sum()
    assert mistakes["score"].is_monotonic_decreasing
    markdown = (report / "report.md").read_text()
    assert f"{metrics['accuracy']:.4f}" in markdown and "VADER" in markdown
    assert "![confusion matrix](confusion_matrix.png)" in markdown
    assert "![reliability diagram](reliability.png)" in markdown
    assert f"{metrics['ece_uncalibrated']:.4f} before calibration, {metrics['ece']:.4f} after" in markdown
    assert metrics["cbpe_accuracy"] == pytest.approx(
        predictions[[f"p_{x}" for x in LABELS]].max(axis=1).mean()
    )
    assert metrics["estimate_method"] == "cbpe-under-shift" and 0 < metrics["estimated_accuracy"] <= 1
    assert "class shares the estimate found:" in markdown


def test_the_bundle_records_a_temperature_fitted_on_the_validation_split(bundle: Path) -> None:
    meta = json.loads((bundle / "sentistream.json").read_text())
    calibration = meta["calibration"]
    assert calibration["method"] == "class_temperature" and calibration["split"] == "validation"
    assert set(calibration["temperatures"]) == set(LABELS)
    assert calibration["n"] >= 50 and calibration["temperature"] > 0
    assert calibration["nll_after"] <= calibration["nll_before"]  # the fit minimises it on this split
    shift = calibration["shift"]  # the estimate under shift starts from the validation split's shares
    assert set(shift["shares"]) == set(shift["bias"]) == set(LABELS) and shift["temperature"] > 0
    assert sum(shift["shares"].values()) == pytest.approx(1.0) and abs(sum(shift["bias"].values())) < 1e-6
    test = meta["metrics"]["test"]
    assert {"ece", "ece_uncalibrated", "estimated_accuracy", "estimated_macro_recall"} <= set(test)
    markdown = (bundle / "report" / "report.md").read_text()
    assert f"{calibration['ece_before']:.4f} before, {calibration['ece_after']:.4f} after" in markdown


def test_bundle_scores_like_the_trained_model_in_every_engine(bundle: Path) -> None:
    """Train/serve skew: the engines clean, tokenise and truncate the raw test texts themselves and must
    match what the Trainer scored; the texts carry everything cleaning touches and overrun max_length."""
    from model.bundle import load_bundle
    from model.cleaning import clean_text
    from model.engines import load_engine

    predictions = pd.read_csv(bundle / "report" / "predictions.csv")
    trained = predictions[[f"p_{label}" for label in LABELS]].to_numpy()
    texts = predictions["text"]
    for marker in ("@friend_", "https://", "<br />", "&amp;", "\U0001f389"):
        assert texts.str.contains(marker, regex=False).any(), marker
    tokenizer = load_bundle(bundle).load_tokenizer()
    lengths = [len(tokenizer(clean_text(text))["input_ids"]) for text in texts]
    assert sum(length > 32 for length in lengths) >= 5  # past max_length: truncation decides the result
    for backend, int8 in (("torch", None), ("onnx", False)):
        engine = load_engine(bundle, backend=backend, device="cpu", int8=int8)
        scored = engine.predict(predictions["text"].tolist())
        engine.close()
        probs = np.array([[p.scores[label] for label in LABELS] for p in scored])
        np.testing.assert_allclose(probs, trained, atol=1e-4, err_msg=backend)
        assert [p.label for p in scored] == predictions["predicted"].tolist()


def test_onnx_parity_is_recorded(bundle: Path) -> None:
    parity = json.loads((bundle / "sentistream.json").read_text())["onnx_parity"]
    assert parity["split"] == "validation" and parity["n"] >= 50
    assert parity["onnx"]["label_disagreement"] == 0.0
    assert parity["onnx"]["max_prob_diff"] < 1e-4
    assert 0.0 <= parity["onnx_int8"]["max_prob_diff"] < 0.2


def test_export_refuses_a_bundle_whose_onnx_disagrees(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    import shutil

    from sentistream.errors import SentistreamError
    from training import export

    copy = Path(shutil.copytree(bundle, tmp_path / "copy"))
    real = export._probabilities

    def flipped(bundle_dir, backend, int8, texts):
        probs = real(bundle_dir, backend, int8, texts)
        return probs[:, ::-1] if backend == "onnx" and not int8 else probs  # an ONNX graph gone wrong

    monkeypatch.setattr(export, "_probabilities", flipped)
    with pytest.raises(SentistreamError, match=r"changed .* of labels"):
        export.export_bundle(copy, ["awful day", "great film", "the meeting"])
    assert not (copy / "model.onnx").exists() and not (copy / "model.int8.onnx").exists()


def test_export_command_rewrites_onnx_and_parity(bundle: Path, tmp_path: Path, capsys) -> None:
    import shutil

    copy = Path(shutil.copytree(bundle, tmp_path / "copy"))
    (copy / "model.onnx").unlink()
    (copy / "model.int8.onnx").unlink()
    assert main(["export", "--model", str(copy)]) == 0
    assert (copy / "model.onnx").is_file() and (copy / "model.int8.onnx").is_file()
    parity = json.loads((copy / "sentistream.json").read_text())["onnx_parity"]
    assert parity["split"] == "test" and parity["onnx"]["label_agreement"] == 1.0
    assert "label agreement 1.0000" in capsys.readouterr().out


def test_evaluate_command_writes_a_report(bundle: Path, task, tmp_path: Path, capsys) -> None:
    data, _ = task
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(bundle), "--data", str(data), "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["n"] == 600 and metrics["model"]["accuracy"] >= 0.9
    assert metrics["baseline_vader"]["n"] == 600
    assert (out / "confusion_matrix.png").is_file() and not (out / "training_curves.png").exists()
    assert (out / "reliability.png").is_file()
    model = metrics["model"]
    predictions = pd.read_csv(out / "predictions.csv")
    # CBPE's accuracy is the mean top probability; the engine served the calibrated ones.
    assert model["cbpe_accuracy"] == pytest.approx(predictions["score"].mean())
    # the bundle carries the fit for the estimate under shift, so that is what evaluate reports
    assert model["estimate_method"] == "cbpe-under-shift"
    assert sum(model["estimated_shares"].values()) == pytest.approx(1.0)
    assert 0 < model["estimated_accuracy"] <= 1 and 0 < model["estimated_macro_recall"] <= 1
    assert metrics["estimated_accuracy"] == model["estimated_accuracy"]
    assert metrics["estimated_macro_recall"] == model["estimated_macro_recall"]
    temperatures = json.loads((bundle / "sentistream.json").read_text())["calibration"]["temperatures"]
    assert model["temperatures"] == pytest.approx(temperatures) and "ece_uncalibrated" in model
    assert f"accuracy {metrics['model']['accuracy']:.4f}" in capsys.readouterr().out


def test_two_phase_recipe_keeps_the_frozen_layers_frozen(task, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from training.train import train

    data, base = task
    settings = quick_settings(
        data, base, tmp_path / "b", epochs=2, freeze_base_epochs=1, unfreeze_last=1, export=False
    )
    out = train(settings)
    before, after = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    bottom = "distilbert.transformer.layer.0.attention.q_lin.weight"
    top = "distilbert.transformer.layer.1.attention.q_lin.weight"
    np.testing.assert_array_equal(before[bottom], after[bottom])
    np.testing.assert_array_equal(
        before["distilbert.embeddings.word_embeddings.weight"],
        after["distilbert.embeddings.word_embeddings.weight"],
    )
    assert not np.array_equal(before[top], after[top])
    assert not np.array_equal(before["classifier.weight"], after["classifier.weight"])
    assert not (out / "model.onnx").exists()


def test_ctrl_c_leaves_a_checkpoint_that_resume_finishes(resumed: ResumedRun) -> None:
    assert resumed.checkpoints == ["checkpoint-6"]  # saved right after the step that saw Ctrl-C
    assert resumed.refused == 2  # an unfinished run's output is not overwritten without --resume
    # It continued from checkpoint-6: step 7 first, only the remaining steps, Adam's moments restored
    # (a fresh run would start at step 1, run every step, and begin with an empty optimizer state).
    assert resumed.steps[0] == 7
    assert resumed.steps == list(range(7, resumed.max_steps + 1))
    assert resumed.optimizer_state > 0
    meta = json.loads((resumed.bundle / "sentistream.json").read_text())
    assert meta["metrics"]["test"]["accuracy"] >= 0.9
