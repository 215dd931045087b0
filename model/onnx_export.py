"""Export a sequence classifier to ONNX (fp32) and quantise it to int8 for CPU serving.

One exporter for the whole project: `training/export.py` and the tests and benchmarks all call
these two functions, so every `model.onnx` has the same inputs, outputs and dynamic axes.
"""

from __future__ import annotations

import logging
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from model.engines.batching import TokenBatcher, screen
from sentistream.errors import SentistreamError

log = logging.getLogger(__name__)

INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["logits"]
DYNAMIC_AXES = {
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "sequence"},
    "logits": {0: "batch"},
}
QUANTIZED_OPS = ("MatMul", "Attention")  # weights x activations; embeddings (Gather) stay fp32


def _logits_module(model: Any) -> Any:
    """Wrap a HF model so the exported graph takes (ids, mask) and returns bare logits."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    # eval() on the wrapper too: the exporter restores the wrapper's mode afterwards, and a fresh Module is
    # in training mode, which would silently switch dropout on in the caller's model.
    return LogitsOnly(model).eval()


def export_onnx(model: Any, tokenizer: Any, out_path: str | Path, opset: int = 17) -> Path:
    """Write `model` as ONNX with dynamic batch and sequence axes; returns the file's path.

    The model is moved to CPU, fp32 and eval mode in place (export needs all three).
    """
    import torch

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _logits_module(model.float().cpu().eval())
    sample = tokenizer(
        ["an example text", "a second, somewhat longer example text"], padding=True, return_tensors="pt"
    )
    args = (sample["input_ids"], sample["attention_mask"])
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The legacy tracer warns about Python-level shape checks in HF code; they are shape-agnostic here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            str(out_path),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=DYNAMIC_AXES,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    _check_onnx(out_path)
    log.info("exported ONNX model to %s", out_path)
    return out_path


def optimize_graph(onnx_path: str | Path, out_path: str | Path) -> Path:
    """ONNX Runtime's transformer fusions (attention, bias + GELU, residual + LayerNorm, embeddings).

    Fewer, bigger kernels: faster in fp32, and the quantiser then sees whole attention blocks, so
    the attention scores (activation x activation products) stay in fp32 inside the fused op.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    with _quiet():
        optimized = optimize_model(str(onnx_path), model_type="bert", num_heads=0, hidden_size=0)
    stats = optimized.get_fused_operator_statistics()
    optimized.save_model_to_file(str(out_path))
    _check_onnx(out_path)
    fused = ", ".join(f"{op} x{n}" for op, n in sorted(stats.items()) if n) or "nothing"
    log.info("optimised ONNX graph written to %s (fused: %s)", out_path, fused)
    return out_path


def quantize_int8(
    onnx_path: str | Path,
    out_path: str | Path,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    *,
    op_types: Sequence[str] = QUANTIZED_OPS,
    exclude: Sequence[str] = (),
    per_channel: bool = True,
    reduce_range: bool = False,
    calibrate: str = "minmax",
) -> Path:
    """int8 for CPU serving: static QDQ when `calibration` feeds are given, else dynamic.

    `calibration`: model inputs (as the engine feeds them) whose activation ranges fix the
    activation scales; `exclude`: regular expressions over node names kept in fp32.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise SentistreamError(f"cannot quantise {onnx_path}: no such ONNX file; export it first")
    nodes_to_exclude = matching_nodes(onnx_path, exclude)
    common = {
        "op_types_to_quantize": list(op_types),
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "weight_type": QuantType.QInt8,
        "nodes_to_exclude": nodes_to_exclude,
        # Shape inference cannot type the outputs of ORT's fused ops (Attention, SkipLayerNorm): all fp32.
        "extra_options": {"MatMulConstBOnly": True, "DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
    }
    with _quiet(), tempfile.TemporaryDirectory(prefix="sentistream-quantise-") as tmp:
        typed = _with_tensor_types(onnx_path, Path(tmp) / "typed.onnx")
        if calibration is None:
            quantize_dynamic(str(typed), str(out_path), **common)
        else:
            _quantize_static(typed, out_path, calibration, common, calibrate)
    _check_onnx(out_path)
    log.info(
        "wrote int8 ONNX model to %s (%s, %d nodes kept in fp32)",
        out_path,
        "static, calibrated" if calibration is not None else "dynamic",
        len(nodes_to_exclude),
    )
    return out_path


def _with_tensor_types(onnx_path: Path, out_path: Path) -> Path:
    """The graph with every tensor's type and shape inferred, contrib ops included.

    The quantiser skips, with a warning, any tensor it cannot type; ONNX's own shape inference
    cannot see through ONNX Runtime's fused ops, so without this an optimised graph would get its
    weights quantised but not its activations.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(onnx_path), str(out_path), skip_optimization=True, auto_merge=True)
    return out_path


def _quantize_static(
    onnx_path: Path, out_path: Path, feeds: Sequence[Mapping[str, np.ndarray]], common: dict, calibrate: str
) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._rows = iter(feeds)

        def get_next(self) -> dict | None:
            return dict(next(self._rows, None) or {}) or None

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    quantize_static(
        str(onnx_path),
        str(out_path),
        Feeds(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        calibrate_method=methods[calibrate],
        **(
            common
            | {"extra_options": common["extra_options"] | {"CalibMovingAverage": calibrate == "minmax"}}
        ),
    )


def calibration_feeds(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    cleaning: Any,
    max_batch_tokens: int = 1_024,
) -> list[dict[str, np.ndarray]]:
    """Model inputs for calibration, cleaned, tokenised and batched exactly as the CPU engine serves."""
    batcher = TokenBatcher(
        tokenizer, ["x"], max_length, cleaning, max_batch_tokens=max(max_batch_tokens, max_length)
    )
    try:
        screened, _ = screen(list(texts), cleaning)
        batches = batcher.prepare(screened) if screened else []
    finally:
        batcher.close()
    return [{"input_ids": b.input_ids, "attention_mask": b.attention_mask} for b in batches]


def matching_nodes(onnx_path: Path, patterns: Sequence[str]) -> list[str]:
    """Names of the graph's nodes that match any of the regular expressions."""
    import onnx

    if not patterns:
        return []
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    compiled = [re.compile(p) for p in patterns]
    return [n.name for n in graph.node if any(c.search(n.name) for c in compiled)]


@contextmanager
def _quiet() -> Iterator[None]:
    """The quantiser and optimiser log advice on the root logger, dozens of lines; keep errors only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _check_onnx(path: Path) -> None:
    """Fail now, naming the file, rather than at the first request in production."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx raises several unrelated types; all mean "unusable file"
        raise SentistreamError(f"{path}: exported ONNX model is invalid: {exc}") from exc
