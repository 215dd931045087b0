"""`sentistream train | evaluate | export | eda`: the offline commands.

Imports no torch or transformers at module level: the training code loads them inside its functions,
and `sentistream tune` imports `training.tune` (transformers) when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from model.settings import MODEL_FLAGS, ModelSettings
from sentistream.settings import add_settings_arguments, env_name, settings_from_args
from training.datasets import load_dataset
from training.eda import explore
from training.evaluate import evaluate
from training.export import export_bundle, read_calibration_data
from training.settings import EdaSettings, EvaluateSettings, ExportSettings, TrainSettings, TuneSettings
from training.train import train


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `sentistream train` (every TrainSettings field; `--data` may repeat)."""
    add_data_argument(parser, TrainSettings)
    add_settings_arguments(parser, TrainSettings, [f for f in TrainSettings.model_fields if f != "data"])
    add_signing_argument(parser)


def add_signing_argument(parser: argparse.ArgumentParser) -> None:
    """`--signing-key`: sign the bundle once written, so workers with the matching --trusted-key serve it."""
    parser.add_argument(
        "--signing-key",
        type=Path,
        default=None,
        metavar="KEY.pem",
        help="EC P-256 private key: sign the finished bundle (model.sig) for workers' --trusted-key",
    )


def sign_if_asked(args: argparse.Namespace, bundle: Path) -> None:
    """Sign `bundle` with --signing-key, when given (model/signing.py; last, so it covers every file)."""
    if getattr(args, "signing_key", None) is not None:
        from model.signing import sign_bundle

        print(f"signed: {sign_bundle(bundle, args.signing_key.expanduser())}", file=sys.stderr)


def add_data_argument(parser: argparse.ArgumentParser, cls: type) -> None:
    """`--data`, repeatable: two or more datasets are merged (see `training.datasets.load_sources`)."""
    info = cls.model_fields["data"]
    parser.add_argument(
        "--data", dest="data", action="append", default=None, metavar="DATA",
        help=f"{info.description} (required; repeat to merge; the variable takes comma-separated paths) [env: {env_name(cls, 'data')}]",
    )  # fmt: skip


def run_train(args: argparse.Namespace) -> int:
    """Fine-tune and write the bundle; prints its directory."""
    out_dir = train(settings_from_args(TrainSettings, args))
    sign_if_asked(args, Path(out_dir))
    print(out_dir)
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `sentistream evaluate`: the dataset's, and the model flags `predict` takes."""
    add_settings_arguments(parser, EvaluateSettings)
    add_settings_arguments(parser, ModelSettings, MODEL_FLAGS)


def run_evaluate(args: argparse.Namespace) -> int:
    """Score a labelled dataset and write the report; prints the headline numbers."""
    out_dir, metrics = evaluate(
        settings_from_args(EvaluateSettings, args), settings_from_args(ModelSettings, args)
    )
    print(
        f"accuracy {metrics['accuracy']:.4f}  macro recall {metrics['macro_recall']:.4f}  report {out_dir / 'report.md'}"
    )
    return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `sentistream export`."""
    add_settings_arguments(parser, ExportSettings)
    add_signing_argument(parser)


def run_export(args: argparse.Namespace) -> int:
    """Export ONNX fp32 + int8 and check parity; prints the parity record."""
    settings = settings_from_args(ExportSettings, args)
    texts, gold, split = parity_texts(settings)
    calibration, source = read_calibration_data(settings.calibration_data, settings.model)
    parity = export_bundle(settings.model, texts, split=split, max_disagreement=settings.max_disagreement,
                           calibration=calibration, calibration_source=source, gold=gold)  # fmt: skip
    print(f"{settings.model}: model.onnx label agreement {parity['onnx']['label_agreement']:.4f}, "
          f"int8 {parity['onnx_int8']['label_agreement']:.4f} on {parity['n']} texts")  # fmt: skip
    sign_if_asked(args, Path(settings.model))
    return 0


def parity_texts(settings: ExportSettings) -> tuple[list[str], list[str | None] | None, str]:
    """Texts for the parity check and their true labels when known (None: no label column):
    `--data` (its validation split if any), else the bundle's test report."""
    if settings.data is not None:
        frame = load_dataset(settings.data, text_col=settings.text_col, require_labels=False).frame
        if "split" in frame and (frame["split"] == "validation").any():
            frame = frame[frame["split"] == "validation"]
        split = "validation"
    elif (predictions := Path(settings.model) / "report" / "predictions.csv").is_file():
        frame, split = pd.read_csv(predictions).astype({"text": str}), "test"
    else:
        return [], None, "sample"
    frame = frame.head(settings.max_parity_rows)
    gold = [v if isinstance(v, str) else None for v in frame["label"]] if "label" in frame else None
    return frame["text"].tolist(), gold, split


def add_eda_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `sentistream eda`."""
    add_settings_arguments(parser, EdaSettings)


def run_eda(args: argparse.Namespace) -> int:
    """Write the data exploration report; prints its path."""
    print(explore(settings_from_args(EdaSettings, args)) / "report.md")
    return 0


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `sentistream tune` (`--data` may repeat)."""
    add_data_argument(parser, TuneSettings)
    add_settings_arguments(parser, TuneSettings, [f for f in TuneSettings.model_fields if f != "data"])


def run_tune(args: argparse.Namespace) -> int:
    """Search hyperparameters; prints the best bundle's directory."""
    # lazy: transformers
    from training.tune import tune

    print(tune(settings_from_args(TuneSettings, args)))
    return 0


COMMANDS = {
    "train": (add_train_arguments, run_train),
    "evaluate": (add_evaluate_arguments, run_evaluate),
    "export": (add_export_arguments, run_export),
    "eda": (add_eda_arguments, run_eda),
    "tune": (add_tune_arguments, run_tune),
}
