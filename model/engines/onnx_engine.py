"""ONNX Runtime engine: the int8 model on CPU when the bundle has one, CUDA with onnxruntime-gpu."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.bundle import Bundle
from model.engines.base import Prediction
from model.engines.batching import RustTokenizer, TokenBatch, TokenBatcher
from model.engines.cpu_quota import physical_cores
from sentistream.errors import UsageError

CUDA_PROVIDER = "CUDAExecutionProvider"


def cuda_provider_available() -> bool:
    """True when onnxruntime-gpu is installed (the CPU wheel has no CUDA provider)."""
    import onnxruntime as ort

    return CUDA_PROVIDER in ort.get_available_providers()


class OnnxEngine:
    """Scores texts with an ONNX Runtime session over token-budgeted batches."""

    def __init__(
        self, bundle: Bundle, onnx_file: Path, device: str, batcher_options: dict, threads: int | None = None
    ) -> None:
        self.name = bundle.ref
        self.model_version = bundle.model_version
        self.labels = bundle.labels
        self.label_shift = bundle.label_shift
        self.device = device
        self.backend = "onnx-int8" if onnx_file.name.endswith(".int8.onnx") else "onnx"
        self.session = _session(onnx_file, device, threads or physical_cores())
        self._inputs = {i.name for i in self.session.get_inputs()}
        self._batcher = TokenBatcher(
            load_tokenizer(bundle),
            bundle.labels,
            bundle.meta.max_length,
            bundle.meta.cleaning,
            temperatures=bundle.meta.temperatures,
            **batcher_options,
        )

    def predict(self, texts: Sequence[object]) -> list[Prediction]:
        """One prediction per text, in input order."""
        return self._batcher.run(texts, self._forward)

    def close(self) -> None:
        """Stop the tokenising thread and drop the session."""
        self._batcher.close()

    def _forward(self, batch: TokenBatch) -> np.ndarray:
        feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in self._inputs:  # BERT-style graphs exported elsewhere may ask for it
            feed["token_type_ids"] = np.zeros_like(batch.input_ids)
        (logits,) = self.session.run(["logits"], feed)
        return logits


def load_tokenizer(bundle: Bundle):  # -> RustTokenizer | transformers.PreTrainedTokenizerFast
    """The bundle's tokenizer.json through `tokenizers` when it can, else the transformers tokenizer.

    Only when the special tokens are plain (the pad token named in special_tokens_map.json) and the
    file exists; anything else goes through transformers, which knows every tokenizer's quirks.
    """
    if bundle.path is not None:
        tokenizer_json = bundle.path / "tokenizer.json"
        pad = _pad_token(bundle.path / "special_tokens_map.json")
        if tokenizer_json.is_file() and pad is not None:
            fast = RustTokenizer(str(tokenizer_json), pad, bundle.meta.max_length)
            if fast.pad_token_id is not None:
                return fast
    return bundle.load_tokenizer()


def _pad_token(special_tokens_map: Path) -> str | None:
    try:
        pad = json.loads(special_tokens_map.read_text(encoding="utf-8")).get("pad_token")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(pad, dict):
        pad = pad.get("content")
    return pad if isinstance(pad, str) else None


def _session(onnx_file: Path, device: str, threads: int):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: graph clean-up notices are not the user's business
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if not cuda_provider_available():
            raise UsageError(
                "ONNX on CUDA needs onnxruntime-gpu (pip install 'sentistream[gpu]'); or use --backend torch"
            )
        providers.insert(0, CUDA_PROVIDER)
    return ort.InferenceSession(str(onnx_file), sess_options=options, providers=providers)
