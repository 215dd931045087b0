"""Settings of the offline commands (`train`, `evaluate`, `export`, `eda`), one frozen class each.

Every field is also a `--flag` (see `sentistream.settings`) and a `SENTISTREAM_TRAIN_<FIELD>` variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from training.formats import FORMATS

Format = Literal[FORMATS]  # type: ignore[valid-type]
# Own prefix: SENTISTREAM_BATCH_SIZE is the worker's micro-batch; training's is SENTISTREAM_TRAIN_BATCH_SIZE.
CONFIG = SettingsConfigDict(env_prefix="SENTISTREAM_TRAIN_", frozen=True, extra="ignore")


class DataSettings(BaseSettings):
    """Where a labelled dataset is and how to read it (shared by train, evaluate and eda)."""

    model_config = CONFIG

    data: Path = Field(
        description="dataset file or folder (CSV, TSV, JSONL, IMDb, Sentiment140, TweetEval, ...)"
    )
    format: Format = Field("auto", description=f"dataset format: {', '.join(FORMATS)}")
    text_col: str | None = Field(None, description="column holding the text (guessed when unset)")
    label_col: str | None = Field(None, description="column holding the label (guessed when unset)")
    label_map: str | None = Field(None, description="rename raw labels, e.g. 0=negative,4=positive")
    drop_label: str | None = Field(
        None, description="drop rows with these labels, comma-separated, e.g. Irrelevant"
    )

    def drop_labels(self) -> list[str]:
        """`--drop-label` as a list."""
        return [item.strip() for item in (self.drop_label or "").split(",") if item.strip()]


# What each preset sets; flags and variables the user gives still win. Measured one change at a time in
# benchmarks/README.md ("Training accuracy").
PRESETS: dict[str, dict[str, Any]] = {
    # Tweets on a 2-core CPU within an hour: every row of a TweetEval-sized set, a sentence encoder.
    "tweets-cpu": {
        "pooling": "mean",
        "class_weights": "balanced",
        "layer_lr_decay": 0.9,
        "lr": 1e-4,
        "epochs": 2.0,
        "batch_size": 32,
        "max_length": 64,
        "warmup_ratio": 0.06,
    },
}


def _paths(value: Any) -> Any:
    """A path, a comma-separated string of paths (from the environment) or a list of them -> list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [value] if isinstance(value, Path) else value


class RunSettings(DataSettings):
    """What one training run and a search over runs share: the data and its splits, the text length,
    the metric, the seed, the device, the export. `train` and `tune` both extend this one class, so a
    shared flag has one owner (and `tune` hands these fields to each trial's `TrainSettings` as is)."""

    data: Annotated[list[Path], NoDecode] = Field(
        min_length=1,
        description="dataset file or folder (train/validation/test files, CSV, TSV, JSONL, Parquet, TweetEval, "
        "...); repeat --data to merge datasets",
    )
    validation_data: Path | None = Field(None, description="a given validation split (file), used as is")
    test_data: Path | None = Field(None, description="a given test split (file), used as is")
    max_length: int = Field(128, gt=1, le=4096, description="tokens per text; longer texts are truncated")
    best_metric: Literal["macro_recall", "macro_f1", "accuracy"] = Field(
        "macro_recall",
        description="validation metric that picks the best epoch and drives early stopping (tune: the one "
        "the search maximises and prunes on)",
    )
    seed: int = Field(42, description="random seed for splits, sampling and initialisation")
    max_rows: int | None = Field(
        None,
        gt=1,
        description="use at most this many rows of the data (stratified sample; given validation and test "
        "splits are kept whole)",
    )
    validation_size: float = Field(
        0.1, gt=0, lt=0.5, description="validation fraction when the data has no split"
    )
    test_size: float = Field(0.1, gt=0, lt=0.5, description="test fraction when the data has no split")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where to train")
    export: bool = Field(True, description="write model.onnx and model.int8.onnx and check parity")

    _split_data = field_validator("data", mode="before")(_paths)


class TrainSettings(RunSettings):
    """`sentistream train`: fine-tune an encoder with the Hugging Face Trainer, then export a bundle."""

    preset: Literal[tuple(PRESETS)] | None = Field(  # type: ignore[valid-type]
        None, description=f"a tested recipe ({', '.join(PRESETS)}); explicit flags override its values"
    )
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="sentence vector: first token (cls) or the mean over the attention mask"
    )
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight the loss by inverse class frequency of the train split"
    )
    layer_lr_decay: float = Field(
        1.0, gt=0, le=1, description="learning rate x this per layer below the top (1: the same everywhere)"
    )
    base_model: str = Field("distilbert-base-uncased", description="local directory or Hub id of the encoder")
    epochs: float = Field(3.0, gt=0, description="training epochs")
    batch_size: int = Field(16, gt=0, description="examples per training step")
    lr: float = Field(2e-5, gt=0, description="peak learning rate (linear warmup, linear decay)")
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="fraction of steps spent warming up the learning rate"
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    patience: int = Field(2, ge=1, description="epochs without validation improvement before stopping early")
    output: Path | None = Field(None, description="bundle directory (default models/<name>-<timestamp>)")
    name: str | None = Field(None, description="model name recorded in the bundle (default: from the data)")
    balance: bool = Field(False, description="downsample the training split to equal class sizes")
    freeze_base_epochs: float = Field(0, ge=0, description="first train only the head this many epochs")
    unfreeze_last: int | None = Field(
        None, ge=0, description="after the frozen phase, train only the top K layers"
    )
    head_lr: float = Field(1e-3, gt=0, description="learning rate of the frozen-encoder (head only) phase")
    resume: bool = Field(False, description="resume from the last checkpoint in --output")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: bf16 (or fp16) on a GPU, fp32 on CPU"
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, values: Any) -> Any:
        """Fill in the preset's values for every field the user did not set."""
        if not isinstance(values, dict) or not values.get("preset"):
            return values
        preset = PRESETS.get(values["preset"], {})
        return {**preset, **values}


class EvaluateSettings(DataSettings):
    """`sentistream evaluate`: score a labelled dataset and write the report.

    Which model, backend and device score it is `model.settings.ModelSettings` (`--model`,
    `--backend`, `--int8`, ..., `SENTISTREAM_MODEL`), as for `predict` and the worker.
    """

    output: Path | None = Field(
        None,
        description="report directory (default <model>/eval-<data name>; no model: ./eval-vader-<data name>)",
    )
    split: Literal["all", "train", "validation", "test"] = Field(
        "all", description="evaluate only this split when the data ships splits"
    )
    limit: int | None = Field(None, gt=0, description="evaluate at most this many rows (stratified sample)")
    seed: int = Field(42, description="seed of the --limit sample")


class ExportSettings(BaseSettings):
    """`sentistream export`: ONNX fp32 + int8 for a trained model, with a parity check."""

    model_config = CONFIG

    model: Path = Field(description="trained model directory (a bundle, or a save_pretrained directory)")
    data: Path | None = Field(
        None, description="labelled data whose texts check parity (default: the bundle's report)"
    )
    text_col: str | None = Field(None, description="text column of --data")
    max_parity_rows: int = Field(2000, gt=0, description="texts used for the parity check")
    max_disagreement: float = Field(
        0.001, ge=0, description="largest fp32 ONNX vs PyTorch label disagreement allowed"
    )
    calibration_data: Path | None = Field(
        None,
        description="training data whose texts calibrate int8 (default: the sample the last export kept)",
    )


class EdaSettings(DataSettings):
    """`sentistream eda`: class balance, lengths, top tokens and word clouds of a dataset."""

    output: Path | None = Field(None, description="report directory (default eda-<data name>)")
    top_tokens: int = Field(20, gt=0, description="tokens listed per class")
    base_model: str | None = Field(
        None, description="model directory whose tokenizer counts tokens per text and suggests --max-length"
    )


class TuneSettings(RunSettings):
    """`sentistream tune`: Optuna search over the training recipe; the best run is kept as a bundle.

    The data, split and budget fields are `RunSettings`'s, as for `train`; only what differs is here.
    """

    base_model: str = Field(description="local directory or Hub id of the encoder")
    output: Path = Field(description="study directory: best/ (the bundle), trials.csv, trials.md, trials.png")
    trials: int = Field(20, gt=0, description="trials to run at most")
    timeout_minutes: float | None = Field(
        None, gt=0, description="start no new trial after this many minutes (the running one finishes)"
    )
    epochs: float = Field(2.0, gt=0, description="training epochs per trial (pruning looks after each)")
