"""`sentistream train`: data -> fine-tuned encoder -> test report -> model bundle (+ ONNX).

Reads top to bottom as `train()`: load and split the data, load the base model, fit with the
Hugging Face `Trainer` (optionally in two phases), score the test split, write the report, save the
bundle, export ONNX. Texts are cleaned by `model.cleaning` exactly as the stream worker cleans them.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.bundle import BundleMeta, Calibration, ShiftFit, save_bundle
from model.calibration import (
    calibrated,
    expected_calibration_error,
    fit_class_temperatures,
    fit_label_shift,
    nll,
    row_temperatures,
    softmax,
)
from model.cleaning import CleaningOptions, clean_batch
from model.engines.select import resolve_device
from model.hub import hub_reachable
from sentistream.errors import UsageError
from training.datasets import LoadedDataset, load_sources, parse_label_map
from training.evaluate import vader_baseline
from training.export import calibration_sample, export_bundle
from training.freezing import unfreeze_top_layers
from training.metrics import trainer_metrics
from training.report import ReportContext, Scored, write_report
from training.settings import TrainSettings
from training.splits import balance_classes, find_leakage, split_dataset

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
TRAIN_SAMPLE_ROWS = 2000  # training rows scored after each evaluation (the curves' training accuracy)
REPORT_DIR = "report"
MODELS_DIR = Path("models")


@dataclass(frozen=True)
class Phase:
    """One Trainer run: which weights train, for how long, how fast."""

    name: str
    epochs: float
    lr: float
    unfreeze: int | None  # top encoder layers to train; None = all; 0 = head only


class EncodedTexts:
    """A map-style dataset of tokenised texts (lists; the collator pads each batch to its longest)."""

    def __init__(self, encodings: dict[str, list[list[int]]], label_ids: list[int]) -> None:
        self.encodings = encodings
        self.label_ids = label_ids

    def __len__(self) -> int:
        return len(self.label_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = self.label_ids[index]
        return item

    def sample(self, rows: int, seed: int) -> EncodedTexts:
        """At most `rows` texts picked at random with `seed` (the same rows every epoch)."""
        picked = sorted(random.Random(seed).sample(range(len(self)), min(rows, len(self))))  # noqa: S311
        encodings = {key: [values[i] for i in picked] for key, values in self.encodings.items()}
        return EncodedTexts(encodings, [self.label_ids[i] for i in picked])


def train(settings: TrainSettings, callbacks: Sequence[Any] = ()) -> Path:
    """Fine-tune on `settings.data`; returns the finished bundle directory.

    `callbacks` are extra Trainer callbacks (`sentistream tune` prunes trials with one).
    """
    data = load_training_data(settings)
    splits = prepare_splits(data, settings)
    labels = data.labels
    out_dir = output_dir(settings, data)
    tokenizer, model = load_base_model(settings.base_model, labels, settings.pooling)
    cleaning = CleaningOptions()
    encoded = {
        name: encode(frame, tokenizer, cleaning, settings.max_length, labels)
        for name, frame in splits.items()
    }
    started = time.perf_counter()
    trainer, history = fit(model, tokenizer, encoded, settings, out_dir, labels, callbacks)
    resources = resource_usage(trainer.model, time.perf_counter() - started)
    calibration = calibrate(trainer, encoded["validation"], labels)
    metrics = write_test_report(
        trainer, encoded["test"], splits["test"], labels, settings, data, history, out_dir, resources,
        calibration,
    )  # fmt: skip
    meta = BundleMeta(
        name=model_name(settings, data), version=datetime.now(UTC).strftime("%Y%m%d-%H%M%S"), labels=labels,
        max_length=settings.max_length, cleaning=cleaning, base_model=settings.base_model,
        data_fingerprint=data.fingerprint, metrics=metrics, calibration=calibration,
    )  # fmt: skip
    save_bundle(trainer.model, tokenizer, out_dir, meta)
    texts = {name: frame["text"].tolist() for name, frame in splits.items()}
    if settings.export:
        gold = splits["validation"]["label"].tolist()
        export_bundle(out_dir, texts["validation"], split="validation", calibration=texts["train"], gold=gold)
    else:  # keep the calibration sample, so a later `sentistream export` needs no --calibration-data
        calibration_sample(out_dir, texts["train"], "training data")
    shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    if settings.output is None:
        link_latest(out_dir)
    log.info("bundle ready: %s (report: %s)", out_dir, out_dir / REPORT_DIR / "report.md")
    return out_dir


def load_training_data(settings: TrainSettings) -> LoadedDataset:
    """The labelled dataset(s) named by the settings, merged and cleaned, with the report logged."""
    data = load_sources(
        settings.data, settings.format, settings.text_col, settings.label_col,
        drop_labels=settings.drop_labels(), label_map=parse_label_map(settings.label_map),
        validation=settings.validation_data, test=settings.test_data,
    )  # fmt: skip
    log.info("%s (%s format): %s", _data_names(settings), data.format, data.report.summary())
    if len(data.labels) < 2:
        raise UsageError(
            f"{_data_names(settings)} has only the label {data.labels}; a classifier needs two or more"
        )
    return data


def _data_names(settings: TrainSettings) -> str:
    return ", ".join(str(path) for path in settings.data)


def prepare_splits(data: LoadedDataset, settings: TrainSettings) -> dict[str, pd.DataFrame]:
    """Train/validation/test frames; `--max-rows` samples first, `--balance` evens the train split.

    Shared texts between train and validation/test are counted in the data report (leakage).
    """
    frame = sample_rows(data.frame, settings.max_rows, settings.seed)
    splits = split_dataset(frame, settings.seed, settings.validation_size, settings.test_size)
    if settings.balance:
        splits["train"] = balance_classes(splits["train"], settings.seed)
    log.info("splits: %s", ", ".join(f"{name} {len(part)}" for name, part in splits.items()))
    data.report.leakage = find_leakage(splits)
    if any(found["exact"] or found["near"] for found in data.report.leakage.values()):
        log.warning("leakage: %s", data.report.leakage_summary())
    return splits


def sample_rows(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """A stratified sample of `max_rows`; given validation and test splits are kept whole."""
    from sklearn.model_selection import train_test_split

    held_out = frame["split"].isin(["validation", "test"]) if "split" in frame else None
    pool = frame if held_out is None else frame[~held_out]
    if max_rows is None or len(pool) <= max_rows:
        return frame
    sample, _ = train_test_split(pool, train_size=max_rows, random_state=seed, stratify=pool["label"])
    return sample if held_out is None else pd.concat([sample, frame[held_out]])


def output_dir(settings: TrainSettings, data: LoadedDataset) -> Path:
    """`--output`, or models/<name>-<timestamp>; refuses to overwrite an unfinished run by accident."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = settings.output or MODELS_DIR / f"{model_name(settings, data)}-{stamp}"
    has_checkpoints = any((out_dir / CHECKPOINT_DIR).glob("*/checkpoint-*"))
    if settings.resume and not has_checkpoints:
        raise UsageError(f"--resume: no checkpoint under {out_dir / CHECKPOINT_DIR}; start without --resume")
    if has_checkpoints and not settings.resume:
        raise UsageError(
            f"{out_dir} holds checkpoints of an unfinished run; add --resume or pick another --output"
        )
    return out_dir


def model_name(settings: TrainSettings, data: LoadedDataset) -> str:
    """`--name`, else `<data>-<base model>` in file-name-safe characters."""
    if settings.name:
        return settings.name
    base = Path(settings.base_model.rstrip("/")).name
    if base == "model":  # packaged models often live in a folder called "model"; its parent names it
        base = Path(settings.base_model.rstrip("/")).parent.name
    stem = "+".join(path.stem if path.is_file() else path.name for path in settings.data)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stem}-{base}").strip("-").lower()


def load_base_model(base_model: str, labels: list[str], pooling: str = "cls") -> tuple[Any, Any]:
    """Tokenizer and a sequence classifier with a fresh `len(labels)`-way head (`pooling`: cls or mean)."""
    options = {
        "pooling": pooling,
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
        "ignore_mismatched_sizes": True,  # a classifier trained on other labels gets a new head
    }
    try:
        return _from_pretrained(base_model, options, local_files_only=True)
    except (OSError, ValueError) as exc:
        if Path(base_model).is_dir() or not hub_reachable():
            raise UsageError(
                f"cannot load --base-model {base_model!r} ({type(exc).__name__}) and the Hugging Face Hub is "
                "not reachable; pass a local model directory"
            ) from None
    try:
        return _from_pretrained(base_model, options, local_files_only=False)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot load --base-model {base_model!r} from the Hub ({exc}); pass a local model directory"
        ) from None


def _from_pretrained(base_model: str, options: dict, local_files_only: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # lazy: torch, transformers
    from model.pooling import MeanPoolingClassifier

    options = dict(options)
    pooling = options.pop("pooling", "cls")
    tokenizer = AutoTokenizer.from_pretrained(base_model, use_fast=True, local_files_only=local_files_only)
    if pooling == "mean":
        labels = [options["id2label"][i] for i in range(options["num_labels"])]
        model = MeanPoolingClassifier.from_encoder(base_model, labels, local_files_only=local_files_only)
        return tokenizer, model
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model, local_files_only=local_files_only, **options
    )
    return tokenizer, model


def encode(
    frame: pd.DataFrame, tokenizer: Any, cleaning: Any, max_length: int, labels: list[str]
) -> EncodedTexts:
    """Clean with `model.cleaning` (as serving does), tokenise without padding, attach label ids."""
    texts = [cleaned.text for cleaned in clean_batch(frame["text"].tolist(), cleaning)]
    encodings = tokenizer(texts, truncation=True, max_length=max_length)
    index = {label: i for i, label in enumerate(labels)}
    return EncodedTexts(
        {k: encodings[k] for k in ("input_ids", "attention_mask")}, [index[v] for v in frame["label"]]
    )


def plan_phases(settings: TrainSettings) -> list[Phase]:
    """One full fine-tuning phase, or head-only then top-K layers (`--freeze-base-epochs`)."""
    if settings.freeze_base_epochs <= 0:
        return [Phase("finetune", settings.epochs, settings.lr, settings.unfreeze_last)]
    return [
        Phase("head", settings.freeze_base_epochs, settings.head_lr, 0),
        Phase("finetune", settings.epochs, settings.lr, settings.unfreeze_last),
    ]


def fit(
    model: Any,
    tokenizer: Any,
    encoded: dict[str, EncodedTexts],
    settings: TrainSettings,
    out_dir: Path,
    labels: list[str],
    callbacks: Sequence[Any] = (),
) -> tuple[Any, list[dict]]:
    """Run each phase with the Trainer; returns the last trainer (best model loaded) and the history."""
    phases = plan_phases(settings)
    history: list[dict] = []
    offset = 0.0
    for phase in phases:
        trainable = unfreeze_top_layers(model, phase.unfreeze)
        log.info(
            "phase %s: %.2f epochs at lr %g, %d trainable weights",
            phase.name,
            phase.epochs,
            phase.lr,
            trainable,
        )
        trainer = build_trainer(
            model, tokenizer, encoded, settings, out_dir / CHECKPOINT_DIR / phase.name, phase, labels
        )
        for callback in callbacks:
            trainer.add_callback(callback)
        run_phase(trainer, resume=settings.resume and _has_checkpoint(trainer.args.output_dir))
        history += [
            {**h, "epoch": h.get("epoch", 0) + offset, "phase": phase.name} for h in trainer.state.log_history
        ]
        offset += phase.epochs
    return trainer, history


def _has_checkpoint(folder: str) -> bool:
    return any(Path(folder).glob("checkpoint-*"))


def build_trainer(
    model: Any,
    tokenizer: Any,
    encoded: dict[str, EncodedTexts],
    settings: TrainSettings,
    checkpoints: Path,
    phase: Phase,
    labels: list[str],
) -> Any:
    """A Trainer with the recipe's arguments, early stopping, loss in the progress bar and safe Ctrl-C."""
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, ProgressCallback

    # lazy: torch, transformers
    from training.callbacks import LossProgressCallback, SaveOnInterrupt
    from training.recipe import RecipeTrainer, TrainSampleMetrics, balanced_class_weights

    weights = None
    if settings.class_weights == "balanced":
        weights = balanced_class_weights(encoded["train"].label_ids, len(labels))
        log.info("class weights: %s", dict(zip(labels, weights.tolist(), strict=True)))
    sample = TrainSampleMetrics(
        encoded["train"].sample(TRAIN_SAMPLE_ROWS, settings.seed), ("accuracy", settings.best_metric)
    )
    trainer = RecipeTrainer(
        class_weights=weights,
        layer_lr_decay=settings.layer_lr_decay,
        model=model,
        args=training_arguments(settings, checkpoints, phase, len(encoded["train"])),
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=trainer_metrics(labels),
        callbacks=[
            EarlyStoppingCallback(early_stopping_patience=settings.patience),
            SaveOnInterrupt(),
            sample,
        ],
    )
    sample.trainer = trainer
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LossProgressCallback)
    return trainer


def training_arguments(settings: TrainSettings, checkpoints: Path, phase: Phase, train_rows: int) -> Any:
    """The recipe: AdamW, linear warmup/decay, clipping at 1.0, evaluate and keep the best each epoch."""
    from transformers import TrainingArguments

    device = resolve_device(settings.device)
    steps_per_epoch = max(1, -(-train_rows // settings.batch_size))
    return TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=phase.epochs,
        learning_rate=phase.lr,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size * 2,
        warmup_ratio=settings.warmup_ratio,
        weight_decay=settings.weight_decay,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        # Batches of similar lengths pad less (padding is dynamic, to the batch's longest text).
        group_by_length=True,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=settings.best_metric,
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=max(1, steps_per_epoch // 20),
        seed=settings.seed,
        data_seed=settings.seed,
        use_cpu=device == "cpu",
        **_precision(settings.precision, device),
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def _precision(precision: str, device: str) -> dict[str, bool]:
    """Mixed precision only on a GPU: bf16 where the GPU has it, else fp16."""
    if device != "cuda" or precision == "fp32":
        return {}
    if precision == "auto":
        import torch

        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {precision: True}


def run_phase(trainer: Any, resume: bool) -> None:
    """`trainer.train()`; after a Ctrl-C the checkpoint is saved and the user is told how to resume."""
    # lazy: transformers
    from training.callbacks import SaveOnInterrupt

    trainer.train(resume_from_checkpoint=True if resume else None)
    stopper = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, SaveOnInterrupt))
    if stopper.interrupted:
        log.warning(
            "checkpoint saved under %s; run the same command with --resume to continue",
            trainer.args.output_dir,
        )
        raise KeyboardInterrupt


def calibrate(trainer: Any, validation: EncodedTexts, labels: list[str]) -> Calibration:
    """Temperature scaling by predicted label, fitted on the validation split's logits (see
    `model.calibration`)."""
    trainer.args.group_by_length = False  # predictions in row order
    logits = trainer.predict(validation).predictions
    calibration = fit_calibration(logits, validation.label_ids, "validation", labels)
    log.info(
        "calibration: T %s (all rows %.3f) on %d validation rows; ECE %.4f -> %.4f, NLL %.4f -> %.4f",
        {k: round(v, 3) for k, v in calibration.temperatures.items()}, calibration.temperature, calibration.n,
        calibration.ece_before, calibration.ece_after, calibration.nll_before, calibration.nll_after,
    )  # fmt: skip
    return calibration


def fit_calibration(logits: Any, label_ids: Sequence[int], split: str, labels: Sequence[str]) -> Calibration:
    """The fitted temperatures with the ECE and NLL they changed, as the bundle records them."""
    overall, per_label = fit_class_temperatures(logits, label_ids)
    shift_t, bias = fit_label_shift(logits, label_ids)
    shares = np.bincount(np.asarray(label_ids, dtype=int), minlength=len(labels)) / max(len(label_ids), 1)
    return Calibration(
        method="class_temperature", temperature=overall, temperatures=dict(zip(labels, per_label, strict=True)),
        split=split, n=len(label_ids),
        ece_before=expected_calibration_error(softmax(logits), label_ids),
        ece_after=expected_calibration_error(calibrated(logits, per_label), label_ids),
        nll_before=nll(logits, label_ids),
        nll_after=nll(logits, label_ids, row_temperatures(logits, per_label)),
        shift=ShiftFit(
            temperature=shift_t, bias=dict(zip(labels, map(float, bias), strict=True)),
            shares=dict(zip(labels, map(float, shares), strict=True)),
        ),
    )  # fmt: skip


def write_test_report(
    trainer: Any,
    test: EncodedTexts,
    frame: pd.DataFrame,
    labels: list[str],
    settings: TrainSettings,
    data: LoadedDataset,
    history: list[dict],
    out_dir: Path,
    resources: dict | None = None,
    calibration: Calibration | None = None,
) -> dict:
    """Score the test split with the best model and write the report; returns the bundle's metrics.

    The probabilities are calibrated with `calibration` as every engine will serve them.
    """
    # Length grouping also reorders evaluation batches; the report needs predictions in row order.
    trainer.args.group_by_length = False
    logits = trainer.predict(test).predictions
    temperatures = calibration.by_label(labels) if calibration else None
    served = calibrated(logits, list(temperatures.values())) if temperatures else softmax(logits)
    probabilities = pd.DataFrame(served, columns=labels)
    scored = Scored(frame["text"].tolist(), frame["label"].tolist(), probabilities)
    baseline = vader_baseline(scored.texts, scored.true, labels)
    context = ReportContext(
        title="Training report", model=settings.base_model, data=_data_names(settings), split="test",
        baseline=baseline, history=history, best_metric=settings.best_metric, temperatures=temperatures,
        calibration=calibration.model_dump() if calibration else None,
        shift=calibration.label_shift(labels) if calibration else None,
        extra={
            **_resource_lines(resources or {}), "data report": data.report.summary(),
            "leakage": data.report.leakage_summary(), "settings": settings.model_dump(mode="json"),
        },
    )  # fmt: skip
    test_metrics = write_report(out_dir / REPORT_DIR, scored, context)
    best = max(
        (h for h in history if f"eval_{settings.best_metric}" in h),
        key=lambda h: h[f"eval_{settings.best_metric}"],
        default={},
    )
    return {
        "test": _headline(test_metrics) | _calibration_headline(test_metrics),
        "validation": {k.removeprefix("eval_"): v for k, v in best.items() if k.startswith("eval_")},
        "vader_test": _headline(baseline) if baseline else None,
        "data": data.report.as_dict(),
        "resources": resources or {},
    }


def resource_usage(model: Any, train_seconds: float) -> dict:
    """Training time, the process's peak memory and the model's size, for the report and the bundle."""
    import resource

    import torch

    parameters = sum(p.numel() for p in model.parameters())
    usage = {
        "train_seconds": round(train_seconds, 1),
        # ru_maxrss is in KiB on Linux: the largest resident set of this process so far.
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "parameters": parameters,
        "weights_mib": round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20, 1),
    }
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        usage["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return usage


def _resource_lines(usage: dict) -> dict[str, str]:
    if not usage:
        return {}
    lines = {
        "training time": f"{usage['train_seconds'] / 60:.1f} min ({usage['train_seconds']:.0f} s)",
        "peak memory": f"{usage['peak_rss_mib']:.0f} MiB (peak resident set of the training process)",
        "model size": f"{usage['parameters'] / 1e6:.1f} M parameters, {usage['weights_mib']:.1f} MiB of weights",
    }
    if "peak_gpu_mib" in usage:
        lines["peak GPU memory"] = f"{usage['peak_gpu_mib']:.0f} MiB"
    return lines


def _calibration_headline(metrics: dict) -> dict:
    keys = ("ece", "ece_uncalibrated", "estimated_accuracy", "estimated_macro_recall")
    return {key: metrics[key] for key in keys if key in metrics}


def _headline(metrics: dict) -> dict:
    keys = ("n", "accuracy", "macro_recall", "macro_f1", "weighted_f1")
    return {key: metrics[key] for key in keys}


def link_latest(out_dir: Path) -> None:
    """Point models/latest at the new bundle (what `make demo` serves)."""
    latest = out_dir.parent / "latest"
    if latest.is_symlink() or latest.exists():
        if latest.is_dir() and not latest.is_symlink():
            log.warning("%s is a real directory; leaving it alone", latest)
            return
        latest.unlink()
    latest.symlink_to(out_dir.name, target_is_directory=True)
