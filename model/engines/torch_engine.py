"""PyTorch engine: fp32 on CPU; fp16/bf16 with scaled-dot-product attention on CUDA."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from model.bundle import Bundle
from model.engines.base import Prediction
from model.engines.batching import TokenBatch, TokenBatcher
from model.engines.cpu_quota import quota_threads

log = logging.getLogger(__name__)


class TorchEngine:
    """Scores texts with a Hugging Face model under `torch.inference_mode`."""

    backend = "torch"

    def __init__(
        self,
        bundle: Bundle,
        device: str,
        batcher_options: dict,
        dtype: str = "float16",
        threads: int | None = None,
    ) -> None:
        import torch

        # Process-wide in PyTorch: one engine per worker process, so this is its budget. Unset, PyTorch
        # takes every core of the node, so a CPU quota (a pod's limits.cpu) caps it.
        threads = threads or quota_threads()
        if threads:
            torch.set_num_threads(threads)
        self.name = bundle.ref
        self.model_version = bundle.model_version
        self.labels = bundle.labels
        self.label_shift = bundle.label_shift
        self.device = device
        # Half precision only where it is fast: CPUs run fp16 matmuls slower than fp32.
        self.dtype = getattr(torch, dtype) if device == "cuda" else torch.float32
        self.model = _load_model(bundle, self.dtype).to(device)
        collate = _pinned if device == "cuda" else None
        self._batcher = TokenBatcher(
            bundle.load_tokenizer(),
            bundle.labels,
            bundle.meta.max_length,
            bundle.meta.cleaning,
            collate=collate,
            temperatures=bundle.meta.temperatures,
            **batcher_options,
        )

    def predict(self, texts: Sequence[object]) -> list[Prediction]:
        """One prediction per text, in input order."""
        return self._batcher.run(texts, self._forward)

    def close(self) -> None:
        """Stop the tokenising thread and free device memory."""
        import torch

        self._batcher.close()
        self.model = None
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def _forward(self, batch: TokenBatch) -> np.ndarray:
        import torch

        ids, mask = batch.payload or (
            torch.from_numpy(batch.input_ids),
            torch.from_numpy(batch.attention_mask),
        )
        with torch.inference_mode():
            ids = ids.to(self.device, non_blocking=True)
            mask = mask.to(self.device, non_blocking=True)
            logits = self.model(input_ids=ids, attention_mask=mask).logits
            # Logits to fp32 before the batcher's softmax: half precision would round small classes to 0.
            return logits.float().cpu().numpy()


def _load_model(bundle: Bundle, dtype: Any) -> Any:
    try:
        return bundle.load_torch_model(dtype=dtype, attn_implementation="sdpa")
    except ValueError as exc:  # architectures without an SDPA implementation say so with ValueError
        log.warning("%s: no scaled-dot-product attention (%s); using eager attention", bundle.ref, exc)
        return bundle.load_torch_model(dtype=dtype, attn_implementation="eager")


def _pinned(ids: np.ndarray, mask: np.ndarray) -> tuple[Any, Any]:
    """Page-locked host tensors, made on the tokenising thread, so the copy to the GPU is asynchronous."""
    import torch

    return torch.from_numpy(ids).pin_memory(), torch.from_numpy(mask).pin_memory()
