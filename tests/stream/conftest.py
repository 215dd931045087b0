"""Fixtures shared by the deployment tests (test_deploy, test_signing, test_deploy_signed)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bundle(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle with an fp32 ONNX file: deploy and workers serve it without importing torch."""
    return tiny_bundle(tiny_model_dir, tmp_path_factory.mktemp("deployable"))


@pytest.fixture(scope="module")
def negative_bundle(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle that labels every text `negative`, sure of it (a bad candidate)."""
    return tiny_bundle(tiny_model_dir, tmp_path_factory.mktemp("negative"), always=0)


def tiny_bundle(tiny_model_dir: Path, out: Path, always: int | None = None) -> Path:
    """The tiny model as a bundle with ONNX; `always`: the label index its logits are pinned to."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from model.bundle import BundleMeta, save_bundle
    from model.onnx_export import export_onnx

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    if always is not None:
        with torch.no_grad():  # a bias far beyond what the random weights add
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor([-20.0] * model.config.num_labels))
            model.classifier.bias[always] = 20.0
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    meta = BundleMeta(name="tiny", version="1", labels=["negative", "neutral", "positive"], max_length=64)
    save_bundle(model, tokenizer, out, meta)
    export_onnx(model, tokenizer, out / "model.onnx")
    return out
