"""`sentistream tune`: search the recipe's hyperparameters with Optuna, keep the best run as a bundle.

Each trial is a `sentistream train` run (no ONNX export) whose validation metric is reported to
Optuna after every epoch; the median pruner stops trials that fall behind. The budget is a number of
trials and, optionally, minutes (no new trial starts after them). Only the best trial's bundle is
kept (`<output>/best`, exported to ONNX at the end); every trial is listed in `trials.csv`/`trials.md`
and drawn in `trials.png`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import TrainerCallback

from sentistream.errors import UsageError
from training.export import export_bundle
from training.plots import pyplot, save_figure
from training.settings import TrainSettings, TuneSettings
from training.train import train

log = logging.getLogger(__name__)

BEST_DIR = "best"
TRIALS_DIR = "trials"
# What each trial may change; everything else comes from the command line.
SEARCH_SPACE = {
    "lr": ("log-uniform", 1e-5, 2e-4),
    "batch_size": ("choice", 16, 32),
    "pooling": ("choice", "cls", "mean"),
    "class_weights": ("choice", "none", "balanced"),
    "layer_lr_decay": ("uniform", 0.7, 1.0),
    "warmup_ratio": ("uniform", 0.0, 0.2),
    "weight_decay": ("uniform", 0.0, 0.1),
}


def tune(settings: TuneSettings) -> Path:
    """Run the study; returns the best bundle's directory."""
    import optuna

    out = settings.output
    if (out / BEST_DIR).exists():
        raise UsageError(f"{out} already holds a tuning run; pick another --output")
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
        # Prune from the first reported epoch once two trials have finished.
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    timeout = settings.timeout_minutes * 60 if settings.timeout_minutes else None
    study.optimize(lambda trial: run_trial(trial, settings), n_trials=settings.trials, timeout=timeout)
    write_trials(study, out, settings.best_metric)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise UsageError(f"no trial finished within the budget; raise --timeout-minutes or --trials ({out})")
    best = out / BEST_DIR
    if settings.export:
        export_best(best)
    log.info("best trial %d: %s %.4f with %s", study.best_trial.number, settings.best_metric,
             study.best_value, study.best_params)  # fmt: skip
    return best


def run_trial(trial: Any, settings: TuneSettings) -> float:
    """Train with the trial's hyperparameters; keep the bundle only while it is the best so far."""
    run_dir = settings.output / TRIALS_DIR / f"trial-{trial.number}"
    options = {name: suggest(trial, name, spec) for name, spec in SEARCH_SPACE.items()}
    train_settings = TrainSettings(**trial_base(settings), **options, output=run_dir, export=False)
    try:
        bundle = train(train_settings, callbacks=[PruneOnValidation(trial, settings.best_metric)])
    finally:
        if not (run_dir / "sentistream.json").is_file():  # pruned or failed: nothing worth keeping
            shutil.rmtree(run_dir, ignore_errors=True)
    value = json.loads((bundle / "sentistream.json").read_text())["metrics"]["validation"][
        settings.best_metric
    ]
    keep_if_best(trial, value, bundle, settings.output / BEST_DIR)
    return value


def trial_base(settings: TuneSettings) -> dict[str, Any]:
    """The TrainSettings fields every trial shares (the data, the model, the budget per trial)."""
    shared = set(TrainSettings.model_fields) & set(TuneSettings.model_fields) - {"output", "export"}
    return {name: getattr(settings, name) for name in shared}


def suggest(trial: Any, name: str, spec: tuple) -> Any:
    """One hyperparameter value from `SEARCH_SPACE`."""
    kind, *values = spec
    if kind == "log-uniform":
        return trial.suggest_float(name, values[0], values[1], log=True)
    if kind == "uniform":
        return trial.suggest_float(name, values[0], values[1])
    return trial.suggest_categorical(name, values)


def keep_if_best(trial: Any, value: float, bundle: Path, best: Path) -> None:
    """Move `bundle` to `best` when no earlier trial scored higher; otherwise delete it."""
    import optuna

    earlier = [t.value for t in trial.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not earlier or value > max(earlier):
        shutil.rmtree(best, ignore_errors=True)
        shutil.move(str(bundle), best)
        (best / "trial.json").write_text(json.dumps({"trial": trial.number, "value": value,
                                                     "params": trial.params}, indent=2))  # fmt: skip
    else:
        shutil.rmtree(bundle, ignore_errors=True)


def export_best(best: Path) -> None:
    """ONNX fp32 + int8 of the best bundle, parity checked on its test split's texts."""
    texts = pd.read_csv(best / "report" / "predictions.csv")["text"].astype(str).tolist()
    export_bundle(best, texts, split="test")


class PruneOnValidation(TrainerCallback):
    """Report the validation metric to Optuna after each evaluation; stop the trial if it is pruned."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial = trial
        self.metric = f"eval_{metric}"

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any
    ) -> None:
        import optuna

        if not metrics or self.metric not in metrics:
            return
        self.trial.report(metrics[self.metric], step=round(state.epoch or 0))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {state.epoch:.0f}: {self.metric} {metrics[self.metric]:.4f}")


def trials_frame(study: Any) -> pd.DataFrame:
    """One row per trial: number, state, value, minutes and the hyperparameters."""
    rows = []
    for t in study.trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        last = max(t.intermediate_values.items(), default=(None, None))
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                     "last_epoch": last[0], "last_reported": last[1],
                     "minutes": round(seconds / 60, 2) if seconds is not None else None, **t.params})  # fmt: skip
    return pd.DataFrame(rows)


def write_trials(study: Any, out: Path, metric: str) -> None:
    """trials.csv, trials.md (a table, the best first) and trials.png."""
    frame = trials_frame(study)
    frame.to_csv(out / "trials.csv", index=False)
    ranked = frame.sort_values("value", ascending=False, na_position="last")
    (out / "trials.md").write_text(
        f"# Tuning trials ({metric} on the validation split)\n\n{markdown_table(ranked)}"
    )
    trials_png(frame, metric, out / "trials.png")


def markdown_table(frame: pd.DataFrame) -> str:
    """A frame as a markdown table; numbers to four significant digits, missing values blank."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return ""
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "| " + " | ".join("---" for _ in frame.columns) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def trials_png(frame: pd.DataFrame, metric: str, path: Path) -> Path:
    """Each trial's value (pruned trials at their last reported value), and the best so far."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    done = frame[frame["state"] == "complete"]
    pruned = frame[frame["state"] == "pruned"]
    ax.plot(done["trial"], done["value"], "o", label="complete")
    ax.plot(pruned["trial"], pruned["last_reported"], "x", color="tab:red", label="pruned")
    if not done.empty:
        ax.step(done["trial"], done["value"].cummax(), where="post", color="tab:green", label="best so far")
    ax.set(xlabel="trial", ylabel=f"validation {metric}", title="tuning trials")
    ax.legend()
    return save_figure(fig, path)
