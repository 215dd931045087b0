"""`load_engine`: resolve `--backend` and `--device` (auto picks the fastest available) and build it.

auto, in order: no model -> VADER; a GPU -> PyTorch in half precision (faster there than ONNX
Runtime's fp32 graph); a CPU and a bundle with `model.onnx` -> ONNX Runtime, int8 when the bundle
has it and its export recorded int8 keeping >= 99% of labels and, where it measured
macro-recall, losing <= 0.3 points of it (no record: fp32); otherwise PyTorch.
The choice and the reason are logged in one line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from model.bundle import Bundle, load_bundle
from model.engines.base import Engine
from model.engines.batching import DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS, DEFAULT_CPU_BATCH_TOKENS
from model.engines.constant_engine import ConstantEngine
from model.engines.onnx_engine import OnnxEngine
from model.engines.torch_engine import TorchEngine
from model.engines.vader_engine import VaderEngine
from sentistream.errors import UsageError

logger = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "onnx", "torch", "vader")  # what the CLI advertises
ALL_BACKENDS = (*BACKEND_CHOICES, "constant")  # "constant": the null model for stream benchmarks
DEVICE_CHOICES = ("auto", "cpu", "cuda")
INT8_MIN_AGREEMENT = 0.99  # the label agreement with PyTorch int8 must keep to be chosen by itself
INT8_MAX_RECALL_DROP = 0.003  # and the most macro-recall it may lose, where the export measured it


def load_engine(
    model: str | Path | None,
    backend: str = "auto",
    device: str = "auto",
    *,
    max_batch_tokens: int | None = None,
    max_batch_size: int = DEFAULT_BATCH_SIZE,
    dtype: str = "float16",
    int8: bool | None = None,
    threads: int | None = None,
    log: logging.Logger = logger,
) -> Engine:
    """An engine for `model` (bundle dir, HF dir or Hub id; None = lexicon baseline).

    `max_batch_tokens`: None picks the device's best (small passes on a CPU, big on a GPU).
    `int8`: None uses the int8 ONNX file on a CPU when the bundle's export recorded it keeping the labels.
    `threads`: CPU threads of one forward pass; None: the machine's physical cores.
    """
    if backend not in ALL_BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; use one of {', '.join(BACKEND_CHOICES)}")
    if backend == "constant":
        log.info("scoring with the constant null model (benchmarks only: every text gets 'neutral')")
        return ConstantEngine()
    if backend == "vader" or (model is None and backend == "auto"):
        return _vader(log, "asked for" if backend == "vader" else "no --model given")
    if model is None:
        raise UsageError(f"--backend {backend} needs --model (a bundle or Hugging Face model directory)")
    bundle = load_bundle(model)
    on = resolve_device(device)
    options = {
        "max_batch_tokens": max(max_batch_tokens or default_batch_tokens(on), bundle.meta.max_length),
        "max_batch_size": max_batch_size,
    }
    chosen, reason = _choose(bundle, backend, on)
    if chosen == "torch":
        engine: Engine = TorchEngine(bundle, on, options, dtype=dtype, threads=threads)
    else:
        engine = _onnx(bundle, on, options, int8, threads)
    log.info("scoring with %s on %s, backend %s (%s)", bundle.ref, on, engine.backend, reason)
    return engine


def default_batch_tokens(device: str) -> int:
    """Token budget of one forward pass when the user set none."""
    return DEFAULT_BATCH_TOKENS if device == "cuda" else DEFAULT_CPU_BATCH_TOKENS


def resolve_device(device: str) -> str:
    """ "cpu" or "cuda"; auto means cuda when PyTorch sees a GPU."""
    if device not in DEVICE_CHOICES:
        raise UsageError(f"unknown device {device!r}; use one of {', '.join(DEVICE_CHOICES)}")
    if device == "cpu" or (device == "auto" and not gpu_device_files()):
        return "cpu"
    import torch

    has_gpu = torch.cuda.is_available()
    if device == "cuda" and not has_gpu:
        raise UsageError("--device cuda: no CUDA GPU is visible; use --device cpu or auto")
    return "cuda" if has_gpu else "cpu"


def gpu_device_files() -> bool:
    """Whether the OS shows any GPU device PyTorch could use (Linux: NVIDIA, ROCm, WSL; elsewhere: maybe).

    Checked before `import torch`, which costs seconds of a worker's start: with no device file
    there is no GPU for it to find, so `--device auto` on a CPU box never imports it.
    """
    if not sys.platform.startswith("linux"):
        return True  # no cheap test elsewhere: let PyTorch look
    dev = Path("/dev")
    return (
        any(dev.glob("nvidia[0-9]*"))
        or (dev / "kfd").exists()
        or (dev / "dxg").exists()
        or Path("/proc/driver/nvidia/gpus").is_dir()
    )


def _choose(bundle: Bundle, backend: str, device: str) -> tuple[str, str]:
    has_onnx = bundle.onnx_path(int8=False) is not None
    if backend == "onnx":
        if not has_onnx:
            raise UsageError(
                f"{bundle.source} has no model.onnx; run `sentistream export --model DIR` or use torch"
            )
        return "onnx", "asked for"
    if backend == "torch":
        return "torch", "asked for"
    if device == "cuda":
        return "torch", "auto: half-precision PyTorch is the fastest on a GPU"
    if has_onnx:
        return "onnx", "auto: the bundle has ONNX files and ONNX Runtime is the fastest on a CPU"
    return "torch", "auto: the bundle has no model.onnx"


def _onnx(bundle: Bundle, device: str, options: dict, int8: bool | None, threads: int | None) -> Engine:
    # int8 is a CPU optimisation; GPUs run the fp32 graph. Left to itself, the engine takes int8
    # only where the bundle's export measured it to keep the labels.
    want_int8 = (device == "cpu" and int8_keeps_labels(bundle)) if int8 is None else int8
    path = bundle.onnx_path(int8=True) if want_int8 else None
    if want_int8 and path is None and int8:
        raise UsageError(f"{bundle.source} has no model.int8.onnx; run `sentistream export --model DIR`")
    onnx_file = path or bundle.onnx_path(int8=False)
    return OnnxEngine(bundle, onnx_file, device, options, threads=threads)  # type: ignore[arg-type]


def int8_keeps_labels(bundle: Bundle) -> bool:
    """True when the export's parity check found int8 agreeing with PyTorch on >= 99% of labels.

    No record (a hand-made bundle, or one exported before parity was recorded) means no evidence,
    so fp32: int8 is then served only when asked for (`--int8`).
    """
    parity = (bundle.meta.onnx_parity or {}).get("onnx_int8") or {}
    if keeps_labels(parity):
        return True
    if bundle.onnx_path(int8=True) is not None:
        agreement, drop = parity.get("label_agreement"), parity.get("macro_recall_drop")
        if agreement is None:
            measured = "no agreement was recorded"
        elif agreement < INT8_MIN_AGREEMENT:
            measured = f"agreed on only {agreement:.1%}"
        else:
            measured = f"lost {100 * drop:.2f} points of macro-recall"
        logger.info(
            "int8 ONNX %s at export (needs >= %.0f%% of labels and <= %.1f points of macro-recall lost); "
            "using fp32 ONNX (--int8 forces it)",
            measured,
            100 * INT8_MIN_AGREEMENT,
            100 * INT8_MAX_RECALL_DROP,
        )
    return False


def keeps_labels(parity: dict) -> bool:
    """Whether an export's int8 measurement (`onnx_int8` of `onnx_parity`) lets `auto` serve it: it
    agrees with PyTorch on >= INT8_MIN_AGREEMENT of labels and, where gold labels were given, loses
    at most INT8_MAX_RECALL_DROP of macro-recall."""
    agreement = parity.get("label_agreement")
    drop = parity.get("macro_recall_drop")
    return (
        agreement is not None
        and agreement >= INT8_MIN_AGREEMENT
        and (drop is None or drop <= INT8_MAX_RECALL_DROP)
    )


def _vader(log: logging.Logger, why: str) -> Engine:
    log.info("scoring with the VADER lexicon baseline, no trained model (%s)", why)
    return VaderEngine()
