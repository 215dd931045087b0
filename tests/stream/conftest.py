"""Fixtures shared by the deployment tests (test_deploy, test_signing, test_deploy_signed)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bundle(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle with an fp32 ONNX file: deploy and workers serve it without importing torch."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from model.bundle import BundleMeta, save_bundle
    from model.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("deployable")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    meta = BundleMeta(name="tiny", version="1", labels=["negative", "neutral", "positive"], max_length=64)
    save_bundle(model, tokenizer, out, meta)
    export_onnx(model, tokenizer, out / "model.onnx")
    return out
