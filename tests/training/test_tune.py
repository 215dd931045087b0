"""`sentistream tune` on the tiny model: trials, the best bundle, the table and plot; pruning; budget."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sentistream.cli import main


@pytest.mark.slow  # real training trials
def test_tune_keeps_the_best_trial_as_an_exported_bundle(task, tmp_path: Path, capsys) -> None:
    data, base = task
    out = tmp_path / "study"
    # 200 of the 600 rows: the test is about the study's mechanics, not how well a trial learns.
    args = ["tune", "--data", str(data), "--base-model", str(base), "--trials", "2", "--epochs", "2",
            "--max-length", "32", "--max-rows", "200", "--output", str(out), "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert capsys.readouterr().out.strip().endswith(str(out / "best"))
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["trial"]) == [0, 1] and set(trials["state"]) <= {"complete", "pruned"}
    assert {"lr", "pooling", "class_weights", "layer_lr_decay", "batch_size"} <= set(trials.columns)
    best = json.loads((out / "best" / "trial.json").read_text())
    assert best["value"] == trials["value"].max()
    meta = json.loads((out / "best" / "sentistream.json").read_text())
    assert meta["metrics"]["validation"]["macro_recall"] == best["value"]
    assert meta["onnx_parity"]["onnx"]["label_agreement"] == 1.0 and (out / "best" / "model.onnx").is_file()
    assert not list((out / "trials").glob("*"))  # only the best run's bundle is kept
    assert "| trial | state | value |" in (out / "trials.md").read_text()
    assert (out / "trials.png").read_bytes()[:4] == b"\x89PNG"


def test_tune_starts_no_trial_after_its_minutes(task, tmp_path: Path) -> None:
    from training.settings import TuneSettings
    from training.tune import tune

    data, base = task
    settings = TuneSettings(data=data, base_model=str(base), trials=5, timeout_minutes=0.001, epochs=1,
                            max_length=16, max_rows=150, output=tmp_path / "s", export=False)  # fmt: skip
    tune(settings)
    assert len(pd.read_csv(tmp_path / "s" / "trials.csv")) == 1


def test_pruning_reports_each_epoch_and_stops_a_pruned_trial() -> None:
    import optuna

    from training.tune import PruneOnValidation

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return True

    class State:
        epoch = 1.0

    trial = optuna.create_study(direction="maximize", pruner=AlwaysPrune()).ask()
    callback = PruneOnValidation(trial, "macro_recall")
    callback.on_evaluate(None, State(), None, metrics={"eval_loss": 0.3})  # no metric: nothing to report
    with pytest.raises(optuna.TrialPruned):
        callback.on_evaluate(None, State(), None, metrics={"eval_macro_recall": 0.61})
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: 0.61}


def test_tune_declares_only_what_differs_from_train() -> None:
    """One owner per flag: the data, split, length, metric, seed, device and export fields that
    `train` and `tune` share are declared once (`RunSettings`); tune declares only its own budget and
    the fields whose default differs (a required model and study folder, fewer epochs per trial)."""
    from training.settings import RunSettings, TrainSettings, TuneSettings

    assert issubclass(TrainSettings, RunSettings) and issubclass(TuneSettings, RunSettings)
    assert set(TuneSettings.__annotations__) == {
        "base_model",
        "output",
        "trials",
        "timeout_minutes",
        "epochs",
    }
    shared = set(TrainSettings.model_fields) & set(TuneSettings.model_fields)
    assert shared - {"base_model", "output", "epochs"} == set(RunSettings.model_fields)
