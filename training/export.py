"""ONNX export of a trained bundle (fp32 + int8) and the parity check that guards it.

The exporter itself is `model.onnx_export` (one for the whole project); this file runs it on a
bundle, compares ONNX Runtime against PyTorch through the same engines the stream worker uses,
records the result in `sentistream.json`, and refuses a bundle whose fp32 graph disagrees.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle import ONNX_FILE, ONNX_INT8_FILE, load_bundle, write_bundle_meta
from model.engines import load_engine
from model.engines.select import keeps_labels
from model.onnx_export import calibration_feeds, export_onnx, optimize_graph, quantize_int8
from model.progress import predict_in_chunks, steps
from sentistream.errors import SentistreamError, UsageError
from training.datasets import load_dataset
from training.metrics import classification_metrics

log = logging.getLogger(__name__)

MAX_DISAGREEMENT = 0.001  # fp32 ONNX may change at most 0.1% of labels
CALIBRATION_FILE = "calibration.json"  # the texts int8 was calibrated on, for the next export
CALIBRATION_TEXTS = 512
# int8 files made from the optimised graph at export, (calibrated?, quantize_int8 options) each, the
# ones with the most int8 work (the fastest) first. The first that keeps >= INT8_MIN_AGREEMENT of the
# labels on the parity texts is kept; when none does, the one that keeps the most (the first on a tie),
# which `auto` then leaves unserved. Which wins depends on the model and on the CPU: without VNNI,
# 8-bit weights can saturate the int16 sums of ONNX Runtime's AVX2 kernel, and 7-bit weights
# (reduce_range) avoid it. benchmarks/README.md has the measurements.
FP32_HEAD = (r"classifier", r"pooler")  # the classification head stays fp32: a few weights, all decisive
FIRST_LAYERS = (r"layer\.[01]/", r"^Attention_[01]$")  # the most sensitive: their error runs through the rest
INT8_RECIPES: dict[str, tuple[bool, dict[str, Any]]] = {
    "dynamic": (False, {"exclude": FP32_HEAD}),
    "dynamic, 7-bit weights": (False, {"exclude": FP32_HEAD, "reduce_range": True}),
    "static QDQ, calibrated": (True, {"exclude": FP32_HEAD, "calibrate": "minmax"}),
    "dynamic, 7-bit weights, first two layers fp32": (
        False,
        {"exclude": FP32_HEAD + FIRST_LAYERS, "reduce_range": True},
    ),
}
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
    calibration: Sequence[str] | None = None,
    calibration_source: str = "training data",
    gold: Sequence[str | None] | None = None,
) -> dict:
    """Write model.onnx and model.int8.onnx into `bundle_dir`, check parity on `texts`, record it.

    `calibration`: texts like the training data (a sample is kept); None reuses the sample the
    bundle's last export kept, and with neither the export stops with a usage error.
    `gold`: the texts' true labels (None where unknown): each graph's macro-recall is then recorded
    too, and an int8 file that loses more than INT8_MAX_RECALL_DROP of it does not keep the labels.
    """
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    sample = calibration_sample(bundle_dir, calibration, calibration_source)
    with steps("export", 3) as step, tempfile.TemporaryDirectory(prefix="sentistream-export-") as tmp:
        step("fp32 ONNX graph")
        plain = export_onnx(bundle.load_torch_model(), bundle.load_tokenizer(), Path(tmp) / ONNX_FILE)
        step(f"{len(INT8_RECIPES)} int8 candidates")
        candidates = write_graphs(bundle, plain, sample["texts"], bundle_dir, Path(tmp))
        step("parity with PyTorch")
        parity = check_parity(bundle_dir, list(texts) or SAMPLE_TEXTS, candidates, gold if texts else None)
    parity["split"] = split if texts else "built-in sample"
    parity["int8_recipe"]["calibration"] = {k: v for k, v in sample.items() if k != "texts"}
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


def write_graphs(bundle: Any, plain: Path, calibration: Sequence[str], bundle_dir: Path, tmp: Path) -> dict:
    """model.onnx (graph-optimised fp32) and one int8 file per INT8_RECIPES entry: {name: path}."""
    optimized = optimize_graph(plain, bundle_dir / ONNX_FILE)
    feeds = calibration_feeds(
        bundle.load_tokenizer(), calibration, bundle.meta.max_length, bundle.meta.cleaning
    )
    return {
        name: quantize_int8(optimized, tmp / f"{name}.int8.onnx", feeds if static else None, **options)
        for name, (static, options) in INT8_RECIPES.items()
    }


def calibration_sample(bundle_dir: Path, texts: Sequence[str] | None, source: str) -> dict:
    """Up to CALIBRATION_TEXTS texts (a seeded sample), kept in the bundle for the next export."""
    kept = bundle_dir / CALIBRATION_FILE
    if texts is None:
        if not kept.is_file():
            raise UsageError(
                f"{bundle_dir}: no calibration texts for int8; pass --calibration-data CSV "
                "(the training data, or texts like it)"
            )
        return json.loads(kept.read_text(encoding="utf-8"))
    usable = sorted({t for t in texts if isinstance(t, str) and t.strip()})
    if not usable:
        raise UsageError(f"calibration data ({source}) has no usable texts; pass a CSV with a text column")
    picked = random.Random(0).sample(usable, min(CALIBRATION_TEXTS, len(usable)))  # noqa: S311 (reproducible, not secret)
    sample = {"source": source, "n": len(picked), "texts": picked}
    kept.write_text(json.dumps(sample, ensure_ascii=False) + "\n", encoding="utf-8")
    return sample


def read_calibration_data(path: Path | None, bundle_dir: str | Path) -> tuple[list[str] | None, str]:
    """`--calibration-data`: the file's texts (its train split when it has one) and where they came from."""
    if path is None:
        return None, ""
    data = load_dataset(path, require_labels=False)
    frame = data.frame
    if "split" in frame and (frame["split"] == "train").any():
        frame = frame[frame["split"] == "train"]
    trained_on = load_bundle(bundle_dir).meta.data_fingerprint
    same = trained_on is not None and data.fingerprint == trained_on
    if trained_on is not None and not same:
        log.warning(
            "--calibration-data %s is not the data the bundle was trained on (fingerprints differ)", path
        )
    return frame["text"].tolist(), f"{path.name} (the training data)" if same else path.name


def check_parity(
    bundle_dir: Path,
    texts: Sequence[str],
    int8_candidates: dict[str, Path] | None = None,
    gold: Sequence[str | None] | None = None,
) -> dict:
    """Label agreement and the largest probability difference of fp32 and int8 ONNX vs PyTorch, and
    with `gold` labels each one's macro-recall and int8's drop from PyTorch's.

    With `int8_candidates`, each is measured and the one `choose_int8` picks becomes the bundle's
    model.int8.onnx.
    """
    torch_probs = _probabilities(bundle_dir, "torch", None, texts)
    scorer = _RecallScorer(load_bundle(bundle_dir).labels, gold, torch_probs)
    result: dict = {
        "n": len(texts),
        "onnx": _compare(_probabilities(bundle_dir, "onnx", False, texts), torch_probs, scorer),
    }
    if scorer.n:
        result["torch_macro_recall"] = scorer.reference
        result["n_gold"] = scorer.n
    measured = {}
    for name, path in (int8_candidates or {"as exported": None}).items():
        if path is not None:
            shutil.copyfile(path, bundle_dir / ONNX_INT8_FILE)
        measured[name] = _compare(_probabilities(bundle_dir, "onnx", True, texts), torch_probs, scorer)
    best = choose_int8(measured)
    if int8_candidates:
        shutil.copyfile(int8_candidates[best], bundle_dir / ONNX_INT8_FILE)
    result["onnx_int8"] = measured[best]
    recipe = INT8_RECIPES.get(best, (None, {}))[1]
    result["int8_recipe"] = {
        "chosen": best,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()},
        "label_agreement": {name: m["label_agreement"] for name, m in measured.items()},
    }
    if scorer.n:
        result["int8_recipe"]["macro_recall_drop"] = {
            name: m["macro_recall_drop"] for name, m in measured.items()
        }
    return result


def choose_int8(measured: dict[str, dict]) -> str:
    """The first candidate (fastest first) that keeps the labels (`keeps_labels`), else the one that
    agrees with PyTorch most (the first on a tie)."""
    keeping = [name for name, m in measured.items() if keeps_labels(m)]
    return keeping[0] if keeping else max(measured, key=lambda name: measured[name]["label_agreement"])


def _compare(probs: np.ndarray, torch_probs: np.ndarray, scorer: _RecallScorer) -> dict:
    disagree = float(np.mean(probs.argmax(axis=1) != torch_probs.argmax(axis=1)))
    compared = {
        "label_agreement": 1.0 - disagree,
        "label_disagreement": disagree,
        "max_prob_diff": float(np.abs(probs - torch_probs).max()),
    }
    if scorer.n:
        compared["macro_recall"] = scorer(probs)
        compared["macro_recall_drop"] = scorer.reference - compared["macro_recall"]
    return compared


class _RecallScorer:
    """Macro-recall of probability rows against the gold labels the bundle knows (rows without one
    skipped); `reference` is PyTorch's, measured once."""

    def __init__(
        self, labels: Sequence[str], gold: Sequence[str | None] | None, torch_probs: np.ndarray
    ) -> None:
        self.labels = list(labels)
        self.rows = [i for i, g in enumerate(gold or []) if g in self.labels]
        self.gold = [gold[i] for i in self.rows] if gold else []
        self.n = len(self.rows)
        self.reference = self(torch_probs) if self.n else float("nan")

    def __call__(self, probs: np.ndarray) -> float:
        predicted = [self.labels[k] for k in probs[self.rows].argmax(axis=1)]
        return classification_metrics(self.gold, predicted, self.labels)["macro_recall"]


def _probabilities(bundle_dir: Path, backend: str, int8: bool | None, texts: Sequence[str]) -> np.ndarray:
    engine = load_engine(bundle_dir, backend=backend, device="cpu", int8=int8)
    try:
        predictions = predict_in_chunks(engine, list(texts), f"parity: {engine.backend}")
    finally:
        engine.close()
    failed = [p.error for p in predictions if p.error]
    if failed:
        raise SentistreamError(f"parity check: {len(failed)} texts could not be scored, e.g. {failed[0]}")
    return np.array([[p.scores[label] for label in engine.labels] for p in predictions])
