"""The model bundle: a `save_pretrained` directory plus ONNX files and `sentistream.json`.

`load_bundle` also accepts any local Hugging Face sequence-classification directory (labels from
`id2label`, default cleaning) or a Hub id. Everything that can be checked without running the
model is checked at load time, so a broken bundle fails with a message naming the file instead of
failing on the first request.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model.calibration import LabelShift
from model.cleaning import CleaningOptions
from sentistream.errors import SentistreamError, UsageError

META_FILE = "sentistream.json"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
DEFAULT_MAX_LENGTH = 128
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ShiftFit(BaseModel):
    """What the accuracy estimate under a change of class shares starts from (`model.calibration`,
    `LabelShift`): a re-calibration for the estimate only, fitted with the temperatures on the
    validation split, and that split's class shares. The served probabilities do not use it."""

    temperature: float = Field(gt=0)
    bias: dict[str, float] = Field(description="label -> bias added to its logit / temperature")
    shares: dict[str, float] = Field(description="label -> its share of the validation split")


class Calibration(BaseModel):
    """How the engines turn logits into probabilities: softmax(logits / T), T the temperature of the
    row's predicted label (`temperatures`), `temperature` for a label without one.

    Fitted by training on the validation split (`model.calibration`); the ECE and NLL before and
    after are what that split measured.
    """

    method: Literal["temperature", "class_temperature"] = "temperature"
    temperature: float = Field(gt=0)
    temperatures: dict[str, float] = Field(default_factory=dict, description="predicted label -> T")
    split: str = "validation"
    n: int = 0
    ece_before: float | None = None
    ece_after: float | None = None
    nll_before: float | None = None
    nll_after: float | None = None
    shift: ShiftFit | None = None  # None (bundles before it): the estimate is plain CBPE

    def by_label(self, labels: list[str]) -> dict[str, float]:
        """label -> the T its predictions are divided by."""
        return {label: self.temperatures.get(label, self.temperature) for label in labels}

    def label_shift(self, labels: list[str]) -> LabelShift | None:
        """The estimate's view of this calibration for a model with `labels` (None without a fit, or
        one that does not cover every label)."""
        fit = self.shift
        if fit is None or any(label not in fit.bias or label not in fit.shares for label in labels):
            return None
        temperatures = self.by_label(labels)
        return LabelShift(
            labels=list(labels), temperatures=[temperatures[label] for label in labels],
            temperature=fit.temperature, bias=[fit.bias[label] for label in labels],
            shares=[fit.shares[label] for label in labels],
        )  # fmt: skip


class BundleMeta(BaseModel):
    """What `sentistream.json` records about a model: enough to serve it exactly as it was trained."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str = "0"
    labels: list[str] = Field(min_length=2)
    max_length: int = Field(DEFAULT_MAX_LENGTH, gt=2)
    cleaning: CleaningOptions = CleaningOptions()
    base_model: str = ""
    data_fingerprint: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    onnx_parity: dict[str, Any] | None = None
    calibration: Calibration | None = None  # None (bundles before it, plain HF models): T = 1
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def temperatures(self) -> list[float]:
        """T per predicted label, in output order: the engines divide a row's logits by the T of its
        arg-max before the softmax (all 1.0 without a calibration)."""
        if self.calibration is None:
            return [1.0] * len(self.labels)
        c = self.calibration
        return [c.temperatures.get(label, c.temperature) for label in self.labels]


@dataclass(frozen=True)
class Bundle:
    """A loadable model: a local directory (`path`) or a Hub id (`source`, with `path` None)."""

    source: str
    path: Path | None
    meta: BundleMeta

    @property
    def labels(self) -> list[str]:
        """Class labels in the order of the model's outputs."""
        return self.meta.labels

    @property
    def label_shift(self) -> LabelShift | None:
        """The fit of the accuracy estimate under shift (None: no calibration, or one without it)."""
        calibration = self.meta.calibration
        return calibration.label_shift(self.labels) if calibration else None

    @property
    def ref(self) -> str:
        """`name@version`, the model field of every scored event."""
        return f"{self.meta.name}@{self.meta.version}"

    @property
    def model_version(self) -> str:
        """`name@version+` the first 12 hex digits of the files' sha256: two different bundles that
        share a name and version (retrained in place) still tell apart in every scored event."""
        digest = checksum(self.path) if self.path is not None else "hub"
        return f"{self.ref}+{digest[:12]}"

    def load_torch_model(self, **kwargs: Any) -> Any:
        """The PyTorch classifier (`from_pretrained` kwargs such as dtype or attn_implementation pass through)."""
        from transformers import AutoModelForSequenceClassification

        # lazy: torch, transformers
        import model.pooling  # noqa: F401  (registers the mean-pooling head with the Auto classes)

        return AutoModelForSequenceClassification.from_pretrained(self.source, **kwargs).eval()

    def load_tokenizer(self) -> Any:
        """The fast tokenizer saved with the model."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.source, use_fast=True)

    def onnx_path(self, int8: bool) -> Path | None:
        """The fp32 (or int8) ONNX file, or None when the bundle has none."""
        if self.path is None:
            return None
        path = self.path / (ONNX_INT8_FILE if int8 else ONNX_FILE)
        return path if path.is_file() else None


def checksum(path: str | Path) -> str:
    """sha256 (hex) of a bundle directory: every file's relative path and bytes, in path order."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def write_bundle_meta(out_dir: str | Path, meta: BundleMeta) -> Path:
    """Write `sentistream.json` into `out_dir`; returns its path."""
    path = Path(out_dir) / META_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(meta.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def save_bundle(model: Any, tokenizer: Any, out_dir: str | Path, meta: BundleMeta) -> Path:
    """Save model (safetensors) and tokenizer with `save_pretrained`, plus `sentistream.json`."""
    out_dir = Path(out_dir)
    n_out = _config_num_labels(model.config.to_dict())
    if n_out != len(meta.labels):
        raise SentistreamError(f"{len(meta.labels)} labels {meta.labels} for a model with {n_out} outputs")
    model.config.id2label = dict(enumerate(meta.labels))
    model.config.label2id = {label: i for i, label in enumerate(meta.labels)}
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    write_bundle_meta(out_dir, meta)
    return out_dir


def load_bundle(path_or_id: str | Path) -> Bundle:
    """Load a bundle directory, a local HF sequence-classification directory, or a Hub id."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return _load_local(path)
    if path.exists():
        raise UsageError(f"{path} is a file; pass the model directory that contains {CONFIG_FILE}")
    return _load_hub(str(path_or_id))


def _load_local(path: Path) -> Bundle:
    config = _read_json(path / CONFIG_FILE, "config")
    _require_one(path, WEIGHT_FILES, "model weights")
    _require_one(path, TOKENIZER_FILES, "tokenizer")
    meta = (
        _read_meta(path / META_FILE) if (path / META_FILE).is_file() else _meta_from_config(path.name, config)
    )
    _check_label_count(path / META_FILE, meta.labels, _config_num_labels(config), path / CONFIG_FILE)
    _check_weights(path, len(meta.labels))
    for int8 in (False, True):
        onnx_file = path / (ONNX_INT8_FILE if int8 else ONNX_FILE)
        if onnx_file.is_file():
            _check_onnx(onnx_file, len(meta.labels))
    return Bundle(source=str(path), path=path, meta=meta)


def _load_hub(model_id: str) -> Bundle:
    if not _HUB_ID.match(model_id):
        raise UsageError(
            f"{model_id}: no such directory; pass a model bundle or Hugging Face model directory"
        )
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot load '{model_id}': it is not a local directory and the Hugging Face Hub is unreachable "
            f"or has no such model ({type(exc).__name__}); pass a local model directory instead"
        ) from None
    meta = _meta_from_config(model_id, config.to_dict())
    return Bundle(source=model_id, path=None, meta=meta)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"{path}: missing {what} file; is this a model directory?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: corrupt {what} file ({exc}); re-export or re-train the model") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: corrupt {what} file (expected a JSON object)")
    return data


def _read_meta(path: Path) -> BundleMeta:
    data = _read_json(path, "bundle metadata")
    try:
        return BundleMeta.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"{path}: invalid bundle metadata at '{where}': {first['msg']}") from None


def _meta_from_config(name: str, config: dict[str, Any]) -> BundleMeta:
    """Metadata for a plain HF model: labels from id2label, default cleaning, version "0"."""
    id2label = config.get("id2label") or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    positions = config.get("max_position_embeddings") or DEFAULT_MAX_LENGTH
    return BundleMeta(
        name=Path(name).name or name,
        labels=labels or ["LABEL_0", "LABEL_1"],
        max_length=min(int(positions), 512),
        base_model=config.get("_name_or_path") or name,
    )


def _config_num_labels(config: dict[str, Any]) -> int:
    return len(config.get("id2label") or {}) or int(config.get("num_labels", 2))


def _check_label_count(meta_file: Path, labels: list[str], n_outputs: int, config_file: Path) -> None:
    if len(labels) != n_outputs:
        raise UsageError(
            f"{meta_file}: {len(labels)} labels {labels} but {config_file.name} describes a classifier with "
            f"{n_outputs} outputs; fix the labels or re-export the bundle"
        )


def _require_one(path: Path, names: tuple[str, ...], what: str) -> None:
    if not any((path / name).is_file() for name in names):
        raise UsageError(f"{path}: missing {what} (expected one of {', '.join(names)})")


def _check_weights(path: Path, n_labels: int) -> None:
    """Read the safetensors header (not the tensors): corrupt files and wrong head sizes fail here."""
    weights = path / "model.safetensors"
    if not weights.is_file():
        return  # sharded or legacy .bin weights: from_pretrained checks them when loading
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="np") as f:
            shapes = {key: f.get_slice(key).get_shape() for key in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as exc:
        raise UsageError(f"{weights}: corrupt weights file ({exc}); re-save the model") from None
    head = _classifier_rows(shapes)
    if head is not None and head != n_labels:
        raise UsageError(f"{weights}: classifier has {head} outputs but the bundle has {n_labels} labels")


def _classifier_rows(shapes: dict[str, list[int]]) -> int | None:
    """Output size of the classification head, found by the names HF heads use for their last layer."""
    for suffix in ("classifier.out_proj.weight", "classifier.weight", "score.weight"):
        for key, shape in shapes.items():
            if key.endswith(suffix) and len(shape) == 2:
                return int(shape[0])
    return None


def _check_onnx(path: Path, n_labels: int) -> None:
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf raises DecodeError and others; all mean "unreadable"
        raise UsageError(
            f"{path}: corrupt ONNX file ({type(exc).__name__}); re-run `sentistream export`"
        ) from None
    dims = graph.output[0].type.tensor_type.shape.dim if graph.output else []
    width = dims[-1].dim_value if dims else 0
    if width and width != n_labels:
        raise UsageError(f"{path}: ONNX model has {width} outputs but the bundle has {n_labels} labels")
