"""ONNX export of a trained bundle (fp32 + int8) and the parity check that guards it.

The exporter itself is `model.onnx_export` (one for the whole project); this file runs it on a
bundle, compares ONNX Runtime against PyTorch through the same engines the stream worker uses,
records the result in `sentistream.json`, and refuses a bundle whose fp32 graph disagrees.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sentistream.errors import SentistreamError

log = logging.getLogger(__name__)

MAX_DISAGREEMENT = 0.001  # fp32 ONNX may change at most 0.1% of labels
SAMPLE_TEXTS = [
    "I love this, best day ever!",
    "This is awful and I hate it.",
    "The meeting is at 3pm in room 4.",
    "not bad, not great either",
    "@user check http the results are out #news",
]


def export_bundle(
    bundle_dir: str | Path,
    texts: Sequence[str],
    split: str = "validation",
    max_disagreement: float = MAX_DISAGREEMENT,
) -> dict:
    """Write model.onnx and model.int8.onnx into `bundle_dir`, check parity on `texts`, record it."""
    from model.bundle import ONNX_FILE, ONNX_INT8_FILE, load_bundle, write_bundle_meta
    from model.onnx_export import export_onnx, quantize_int8

    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    export_onnx(bundle.load_torch_model(), bundle.load_tokenizer(), bundle_dir / ONNX_FILE)
    quantize_int8(bundle_dir / ONNX_FILE, bundle_dir / ONNX_INT8_FILE)
    parity = check_parity(bundle_dir, list(texts) or SAMPLE_TEXTS)
    parity["split"] = split if texts else "built-in sample"
    write_bundle_meta(bundle_dir, bundle.meta.model_copy(update={"onnx_parity": parity}))
    fp32 = parity["onnx"]
    if fp32["label_disagreement"] > max_disagreement:
        for name in (ONNX_FILE, ONNX_INT8_FILE):
            (bundle_dir / name).unlink(missing_ok=True)
        raise SentistreamError(
            f"ONNX export of {bundle_dir} changed {fp32['label_disagreement']:.2%} of labels on {parity['n']} "
            f"texts (limit {max_disagreement:.2%}); ONNX files removed, the PyTorch weights are intact"
        )
    log.info("ONNX parity on %d %s texts: %s", parity["n"], parity["split"], parity)
    return parity


def check_parity(bundle_dir: Path, texts: Sequence[str]) -> dict:
    """Label agreement and the largest probability difference of fp32 and int8 ONNX vs PyTorch."""
    torch_probs = _probabilities(bundle_dir, "torch", None, texts)
    result: dict = {"n": len(texts)}
    for key, int8 in (("onnx", False), ("onnx_int8", True)):
        probs = _probabilities(bundle_dir, "onnx", int8, texts)
        disagree = float(np.mean(probs.argmax(axis=1) != torch_probs.argmax(axis=1)))
        result[key] = {
            "label_agreement": 1.0 - disagree,
            "label_disagreement": disagree,
            "max_prob_diff": float(np.abs(probs - torch_probs).max()),
        }
    return result


def _probabilities(bundle_dir: Path, backend: str, int8: bool | None, texts: Sequence[str]) -> np.ndarray:
    from model.engines import load_engine

    engine = load_engine(bundle_dir, backend=backend, device="cpu", int8=int8)
    try:
        predictions = engine.predict(list(texts))
    finally:
        engine.close()
    failed = [p.error for p in predictions if p.error]
    if failed:
        raise SentistreamError(f"parity check: {len(failed)} texts could not be scored, e.g. {failed[0]}")
    return np.array([[p.scores[label] for label in engine.labels] for p in predictions])
