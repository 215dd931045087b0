"""Every engine on a tiny model built in the test, the auto choice, and parity between backends."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from model.engines import Engine, Prediction, load_engine
from model.engines.vader_engine import compound_to_probabilities
from sentistream.errors import UsageError
from tests.model.conftest import HAS_GPU, TEXTS

BAD = [None, 7, "", "   ", "<br /><br />"]


@pytest.fixture(scope="module")
def engines(bundle_dir: Path):
    built = {
        "torch": load_engine(bundle_dir, "torch", "cpu"),
        "onnx": load_engine(bundle_dir, "onnx", "cpu", int8=False),
        "onnx-int8": load_engine(bundle_dir, "onnx", "cpu", int8=True),
        "vader": load_engine(None, "vader"),
        "constant": load_engine(None, "constant"),
    }
    yield built
    for engine in built.values():
        engine.close()


@pytest.mark.parametrize("backend", ["torch", "onnx", "onnx-int8", "vader", "constant"])
def test_each_engine_scores_good_items_and_reports_bad_ones(engines: dict, backend: str) -> None:
    engine: Engine = engines[backend]
    assert isinstance(engine, Engine)
    assert engine.backend == backend
    assert engine.device == "cpu"
    texts = [TEXTS[0], *BAD, TEXTS[1]]
    results = engine.predict(texts)
    assert len(results) == len(texts)
    for p in (results[0], results[-1]):
        assert p.error is None and p.label in engine.labels
        assert p.score == p.scores[p.label] == max(p.scores.values())
        assert sum(p.scores.values()) == pytest.approx(1.0, abs=1e-6)
    # The null model does not clean, so only markup is not an error for it.
    expect_error = [True, True, True, True, backend != "constant"]
    assert [p.error is not None for p in results[1:-1]] == expect_error
    assert all(p.label is None and p.score is None for p in results[1:-1] if p.error)


def test_model_engines_are_named_after_the_bundle(engines: dict) -> None:
    assert {engines[b].name for b in ("torch", "onnx", "onnx-int8")} == {"tiny@3"}


def test_an_empty_call_returns_nothing(engines: dict) -> None:
    assert all(engine.predict([]) == [] for engine in engines.values())


def test_over_cap_text_is_scored_and_marked_truncated(engines: dict) -> None:
    long_text = "so happy " * 200  # over the bundle's max_chars (300) and VADER's (1000)
    for backend in ("torch", "onnx", "vader"):
        (p,) = engines[backend].predict([long_text])
        assert p.error is None and p.truncated, backend


def test_order_is_kept_when_length_sorting_splits_batches(bundle_dir: Path, engines: dict) -> None:
    texts = TEXTS * 4
    small = load_engine(bundle_dir, "torch", "cpu", max_batch_tokens=64, max_batch_size=3)
    try:
        batched = small.predict(texts)
    finally:
        small.close()
    one_by_one = [engines["torch"].predict([t])[0] for t in texts]
    assert [p.label for p in batched] == [p.label for p in one_by_one]
    np.testing.assert_allclose(_probs(batched), _probs(one_by_one), atol=1e-5)
    assert len({p.label for p in batched}) > 1, "the test model should not give every text one label"


def test_onnx_fp32_matches_torch(engines: dict) -> None:
    torch_out, onnx_out = engines["torch"].predict(TEXTS), engines["onnx"].predict(TEXTS)
    assert [p.label for p in onnx_out] == [p.label for p in torch_out]
    np.testing.assert_allclose(_probs(onnx_out), _probs(torch_out), atol=1e-4)


def test_onnx_int8_keeps_the_labels_of_a_model_with_bert_like_weights(int8_bundle_dir: Path) -> None:
    # The shipped recipe (optimised graph, calibrated static int8, head in fp32); measured on this
    # model: 18/18 labels kept, mean probability change 0.032, largest 0.13. The bounds leave room
    # for other CPUs' int8 kernels; a broken quantisation (wrong scales or outputs) lands far above.
    torch, int8 = (
        load_engine(int8_bundle_dir, "torch", "cpu"),
        load_engine(int8_bundle_dir, "onnx", "cpu", int8=True),
    )
    try:
        torch_out, int8_out = torch.predict(TEXTS), int8.predict(TEXTS)
    finally:
        torch.close()
        int8.close()
    assert len({p.label for p in torch_out}) > 1, "the test model should not give every text one label"
    flipped = sum(a.label != b.label for a, b in zip(torch_out, int8_out, strict=True))
    assert flipped <= 1
    assert np.abs(_probs(int8_out) - _probs(torch_out)).mean() < 0.06


def test_vader_gets_obvious_texts_right(engines: dict) -> None:
    texts = ["I love this, it is wonderful!", "This is awful, I hate it.", "The bus leaves at noon."]
    assert [p.label for p in engines["vader"].predict(texts)] == ["positive", "negative", "neutral"]


@pytest.mark.parametrize(("compound", "label"), [(0.049, 1), (0.051, 2), (-0.051, 0), (0.0, 1), (1.0, 2)])
def test_vader_probabilities_follow_its_thresholds(compound: float, label: int) -> None:
    probs = compound_to_probabilities(compound)
    assert int(np.argmax(probs)) == label
    assert sum(probs) == pytest.approx(1.0)


def test_vader_confidence_grows_with_the_compound() -> None:
    assert (
        compound_to_probabilities(0.2)[2]
        < compound_to_probabilities(0.6)[2]
        < compound_to_probabilities(1)[2]
    )


def test_constant_engine_answers_its_label(engines: dict) -> None:
    (p,) = engines["constant"].predict(["anything"])
    assert p == Prediction(
        label="neutral", score=1.0, scores={"negative": 0.0, "neutral": 1.0, "positive": 0.0}
    )


def test_auto_without_a_model_falls_back_to_vader_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="model.engines"):
        engine = load_engine(None)
    assert engine.backend == "vader"
    assert "no --model given" in caplog.text


def test_auto_on_cpu_without_a_parity_record_uses_fp32_onnx(
    bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The fixture's bundle has int8 but no recorded agreement: no evidence, so no int8 (test_export.py).
    with caplog.at_level(logging.INFO, logger="model.engines"):
        engine = load_engine(bundle_dir, device="cpu")
    engine.close()
    assert engine.backend == "onnx"
    assert "auto: the bundle has ONNX files" in caplog.text
    assert "no agreement was recorded" in caplog.text


def test_auto_without_onnx_files_uses_torch(tiny_model_dir: Path) -> None:
    engine = load_engine(tiny_model_dir, device="cpu")
    engine.close()
    assert (engine.backend, engine.name) == ("torch", f"{tiny_model_dir.name}@0")


def test_onnx_fp32_is_used_when_there_is_no_int8_file(bundle_copy: Path) -> None:
    (bundle_copy / "model.int8.onnx").unlink()
    engine = load_engine(bundle_copy, "onnx", "cpu")
    engine.close()
    assert engine.backend == "onnx"


@pytest.mark.parametrize(
    ("model", "backend", "device", "message"),
    [
        ("tiny", "onnx", "cpu", "has no model.onnx"),
        ("tiny", "tensorflow", "cpu", "unknown backend"),
        ("tiny", "torch", "tpu", "unknown device"),
        (None, "torch", "cpu", "needs --model"),
    ],
)
def test_bad_choices_are_usage_errors(tiny_model_dir: Path, model, backend, device, message) -> None:
    with pytest.raises(UsageError, match=message):
        load_engine(tiny_model_dir if model else None, backend, device)


@pytest.mark.skipif(HAS_GPU, reason="a CPU-only machine's check: this one has a GPU (see the test below)")
def test_cuda_request_without_a_gpu_is_a_usage_error(tiny_model_dir: Path) -> None:
    with pytest.raises(UsageError, match="no CUDA GPU"):
        load_engine(tiny_model_dir, "torch", "cuda")


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
def test_cuda_request_with_a_gpu_scores_on_it(tiny_model_dir: Path) -> None:
    engine = load_engine(tiny_model_dir, "torch", "cuda")
    try:
        assert engine.device == "cuda" and next(engine.model.parameters()).is_cuda
        assert all(p.ok for p in engine.predict(["good day", "awful"]))
    finally:
        engine.close()


def test_engine_reads_the_cleaning_options_from_the_bundle(bundle_copy: Path, tmp_path: Path) -> None:
    from model.bundle import load_bundle, write_bundle_meta
    from model.cleaning import CleaningOptions

    plain = shutil.copytree(bundle_copy, tmp_path / "plain")
    meta = load_bundle(bundle_copy).meta
    write_bundle_meta(plain, meta.model_copy(update={"cleaning": CleaningOptions(urls="somewhere far")}))
    text = "look http://a.io now"
    default, custom = load_engine(bundle_copy, "onnx", "cpu"), load_engine(plain, "onnx", "cpu")
    try:
        assert default.predict([text]) == default.predict(["look http now"])
        assert custom.predict([text]) == custom.predict(["look somewhere far now"])
    finally:
        default.close()
        custom.close()


def _probs(predictions: list[Prediction]) -> np.ndarray:
    return np.array([list(p.scores.values()) for p in predictions])


def test_the_gpu_gate_follows_pytorch_and_the_device_files(monkeypatch) -> None:
    """HAS_GPU (which the GPU tests skip on) is PyTorch's answer, and False without a GPU device file."""
    import torch

    from model.engines import select
    from tests.model.conftest import _has_cuda_gpu

    monkeypatch.setattr(select, "gpu_device_files", lambda: False)
    assert _has_cuda_gpu() is False
    monkeypatch.setattr(select, "gpu_device_files", lambda: True)
    assert _has_cuda_gpu() == torch.cuda.is_available()
