"""Model settings: which model, backend and device score text, shared by `predict` and the worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.engines.batching import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from model.engines.base import Engine


# The flags every command that scores text offers (predict, worker); dtype stays env-only.
MODEL_FLAGS = ["model", "backend", "device", "int8", "batch_tokens", "texts_per_pass"]


class ModelSettings(BaseSettings):
    """How to load the scoring engine (env: SENTISTREAM_MODEL, _BACKEND, _DEVICE, _BATCH_TOKENS, ...)."""

    model_config = SettingsConfigDict(
        env_prefix="SENTISTREAM_", frozen=True, protected_namespaces=(), extra="ignore"
    )

    model: str | None = Field(
        None,
        description="model bundle, Hugging Face model directory or Hub id; unset = VADER lexicon baseline",
    )
    backend: Literal["auto", "onnx", "torch", "vader", "constant"] = Field(
        "auto", description="inference backend: auto, onnx, torch or vader"
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

    def load_engine(self, **kwargs: Any) -> Engine:
        """The engine these settings describe (imports the heavy libraries only now)."""
        from model.engines import load_engine

        return load_engine(
            self.model,
            self.backend,
            self.device,
            max_batch_tokens=self.batch_tokens,
            max_batch_size=self.texts_per_pass,
            dtype=self.dtype,
            **{"int8": self.int8, **kwargs},
        )
