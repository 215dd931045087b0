"""Fixtures for tests/model: a tiny bundle whose random weights give varied, confident labels.

The shared `tiny_model_dir` has near-uniform outputs (default init), so label parity between
backends would be decided by rounding noise. Re-initialising the same architecture with a wider
weight scale gives every label a clear winner on most texts, which makes parity meaningful.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.tiny_model import CORPUS

TEXTS = [
    *CORPUS,
    "great",
    "awful awful awful",
    "@someone loved it http://example.com/x",
    "Movie night<br /><br />was fun &amp; loud",
    "😂😂 what a day",
    "the report the meeting the train",
    "never again, terrible support and a long wait on the phone for nothing at all",
    "ok",
]


@pytest.fixture(scope="session")
def bundle_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full bundle (weights, tokenizer, model.onnx, model.int8.onnx, sentistream.json)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from model.bundle import BundleMeta, save_bundle
    from model.cleaning import CleaningOptions
    from model.onnx_export import export_onnx, quantize_int8

    out = tmp_path_factory.mktemp("bundle")
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.5
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    meta = BundleMeta(
        name="tiny",
        version="3",
        labels=["negative", "neutral", "positive"],
        max_length=64,
        cleaning=CleaningOptions(max_chars=300),
        base_model="tiny-distilbert",
    )
    save_bundle(model, tokenizer, out, meta)
    export_onnx(model, tokenizer, out / "model.onnx")
    quantize_int8(out / "model.onnx", out / "model.int8.onnx")
    return out


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the bundle that a test may damage."""
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))
