"""Model settings: which model, backend and device score text, shared by `predict` and the worker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.engines.base import Engine
from model.engines.batching import DEFAULT_BATCH_SIZE
from model.engines.select import load_engine

# The flags every command that scores text offers (predict, worker); dtype stays env-only.
MODEL_FLAGS = ["model", "backend", "device", "int8", "batch_tokens", "texts_per_pass", "threads"]
# First parts of huggingface.co paths that are site pages, never an organisation: `models/latest`
# can only be a local directory.
HUB_RESERVED = frozenset({"models", "datasets", "spaces", "docs", "api", "settings", "new", "collections"})

# What `sentistream train` links to its newest bundle when --output is unset (training/train.py).
LATEST_LINK = "models/latest"
# Backends that score without any model files, whatever --model says.
LEXICON_BACKENDS = frozenset({"vader", "constant"})


class ModelSettings(BaseSettings):
    """How to load the scoring engine (env: SENTISTREAM_MODEL, _BACKEND, _DEVICE, _BATCH_TOKENS, ...)."""

    model_config = SettingsConfigDict(
        env_prefix="SENTISTREAM_", frozen=True, protected_namespaces=(), extra="ignore"
    )

    # Before `model`: the path check below reads it (pydantic validates fields in this order).
    backend: Literal["auto", "onnx", "torch", "vader", "constant"] = Field(
        "auto", description="inference backend: auto, onnx, torch or vader"
    )
    model: str | None = Field(
        None,
        description="model bundle, Hugging Face model directory or Hub id; unset = VADER lexicon baseline",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where the model runs: auto, cpu or cuda"
    )
    batch_tokens: int | None = Field(
        None,
        gt=0,
        description="token budget of one forward pass (texts x longest text); unset: 1024 on CPU, 16384 on GPU",
    )
    texts_per_pass: int = Field(DEFAULT_BATCH_SIZE, gt=0, description="most texts in one forward pass")
    dtype: Literal["float16", "bfloat16"] = Field("float16", description="PyTorch precision on CUDA")
    int8: bool | None = Field(
        None,
        description="ONNX int8 on/off; unset: on a CPU when the export measured it keeps >= 99%% of labels",
    )

    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads of one forward pass; unset: the machine's physical cores, capped by the "
        "container's CPU quota (cgroup) "
        "(worker --processes N: shared among the N)",
    )

    @field_validator("model")
    @classmethod
    def _local_path_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Checked here, not at load time, so a typo fails in a second instead of asking the Hub.
        # VADER (and the null model) never read --model: a path left in the environment (compose's
        # /models/bundle with no bundle mounted) must not stop them.
        if info.data.get("backend") in LEXICON_BACKENDS:
            return value
        if value and looks_like_local_path(value) and not Path(value).expanduser().exists():
            raise PydanticCustomError(
                "model_not_found",
                "{path}: no such directory (a local path, so the Hugging Face Hub is not asked); {advice}, "
                "or pass an existing model directory",
                {"path": value, "advice": _train_advice(value)},
            )
        return value

    def load_engine(self, **kwargs: Any) -> Engine:
        """The engine these settings describe (imports the heavy libraries only now)."""
        return load_engine(
            self.model,
            self.backend,
            self.device,
            max_batch_tokens=self.batch_tokens,
            max_batch_size=self.texts_per_pass,
            dtype=self.dtype,
            threads=self.threads,
            **{"int8": self.int8, **kwargs},
        )


def _train_advice(path: str) -> str:
    """How to get a model at `path`: `models/latest` is the link `train` makes only without --output."""
    if path.rstrip("/") in (LATEST_LINK, f"./{LATEST_LINK}"):
        return f"run `sentistream train --data DATA` without --output (it writes models/NAME-TIME and links {path} to it)"
    return f"train one there with `sentistream train --output {path}`"


def looks_like_local_path(ref: str) -> bool:
    """True when `ref` can only mean a directory: `./x`, `/abs`, `~/x`, `models/latest`, `a/b/c`.

    A bare name (`distilbert-base-uncased`) or a plausible `org/name` stays a Hub id, unless its
    first part is a local directory or a huggingface.co page (`models/...`).
    """
    if ref.startswith((".", "/", "~")) or (os.altsep and os.altsep in ref) or "\\" in ref:
        return True
    if "/" not in ref:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(ref)
    except HFValidationError:
        return True
    first = ref.split("/", 1)[0]
    return first.lower() in HUB_RESERVED or Path(first).is_dir()
