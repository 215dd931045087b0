"""Token-budget batching: grouping, padding, and results back in input order."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from model.bundle import load_bundle
from model.cleaning import CleaningOptions
from model.engines.batching import TokenBatch, TokenBatcher, pad_rows, plan_batches, screen
from tests.model.conftest import HAS_GPU


def test_plan_respects_the_token_budget_and_covers_every_text() -> None:
    lengths = [random.Random(i).randint(3, 60) for i in range(500)]
    plan = plan_batches(lengths, max_batch_tokens=256, max_batch_size=1000)
    assert sorted(i for batch in plan for i in batch) == list(range(500))
    for batch in plan:
        assert len(batch) * max(lengths[i] for i in batch) <= 256


def test_plan_groups_similar_lengths() -> None:
    lengths = [50, 3, 50, 3, 50, 3]
    assert [sorted(b) for b in plan_batches(lengths, max_batch_tokens=150, max_batch_size=10)] == [
        [1, 3, 5],
        [0, 2, 4],
    ]


def test_plan_caps_the_text_count_and_isolates_an_overlong_text() -> None:
    assert plan_batches([1] * 5, max_batch_tokens=1000, max_batch_size=2) == [[0, 1], [2, 3], [4]]
    assert plan_batches([5, 900], max_batch_tokens=100, max_batch_size=8) == [[0], [1]]


def test_pad_rows_pads_to_the_longest_row_only() -> None:
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == np.int64


def test_screen_reports_bad_items_by_position_and_cleans_the_rest() -> None:
    usable, errors = screen(["ok <br />", None, "  ", "<p></p>"], CleaningOptions())
    assert [(s.index, s.text) for s in usable] == [(0, "ok")]
    assert set(errors) == {1, 2, 3}
    assert "after cleaning" in errors[3]


@pytest.fixture
def batcher(bundle_dir: Path):
    bundle = load_bundle(bundle_dir)
    # A budget of 64 tokens and chunks of 7 texts force many batches and many prefetched chunks.
    b = TokenBatcher(
        bundle.load_tokenizer(), bundle.labels, 64, bundle.meta.cleaning, max_batch_tokens=64, chunk_texts=7
    )
    yield b
    b.close()


def test_results_come_back_in_input_order_across_many_batches(batcher: TokenBatcher) -> None:
    rng = random.Random(7)
    texts: list[object] = [" ".join(["word"] * rng.randint(1, 40)) + f" {i}" for i in range(60)]
    texts[13] = None
    seen: list[TokenBatch] = []

    def forward(batch: TokenBatch) -> np.ndarray:
        seen.append(batch)
        # Each row's logits encode its own token count n (softmax: n / (n + 2)), so a misplaced result shows.
        lengths = batch.attention_mask.sum(axis=1).astype(float)
        return np.log(np.stack([lengths, np.ones_like(lengths), np.ones_like(lengths)], axis=1))

    results = batcher.run(texts, forward)
    tokenizer = batcher.tokenizer
    assert len(seen) > 10
    assert all(b.input_ids.shape[0] * b.input_ids.shape[1] <= 64 for b in seen)
    assert all(b.attention_mask[:, -1].any() for b in seen), "a batch was padded beyond its longest text"
    for i, text in enumerate(texts):
        if text is None:
            assert results[i].error == "text is missing (null)"
        else:
            n_tokens = len(tokenizer(text)["input_ids"])
            n = min(n_tokens, 64)
            assert results[i].scores["negative"] == pytest.approx(n / (n + 2))
            assert results[i].truncated == (n_tokens > 64)


def test_token_truncation_is_marked(batcher: TokenBatcher) -> None:
    rows, cut = batcher.tokenize(["short", "word " * 200])
    assert cut == [False, True]
    assert len(rows[1]) == 64
    assert rows[1][-1] == batcher.tokenizer.sep_token_id


def test_the_rust_tokenizer_gives_the_transformers_ids_and_cuts(bundle_dir: Path) -> None:
    from model.engines.onnx_engine import load_tokenizer
    from tests.model.conftest import TEXTS

    bundle = load_bundle(bundle_dir)
    rust, hf = load_tokenizer(bundle), bundle.load_tokenizer()
    texts = [*TEXTS, "so happy " * 80, "[CLS] ünïcödé 😂 [PAD] text"]
    batcher = TokenBatcher(hf, bundle.labels, bundle.meta.max_length, bundle.meta.cleaning)
    try:
        assert rust.encode_rows(texts) == batcher.tokenize(texts)
    finally:
        batcher.close()
    assert rust.pad_token_id == hf.pad_token_id
    assert any(rust.encode_rows(texts)[1]), "the long text should be cut"


def onnx_cold_start_imports(bundle_dir: Path, device: str) -> list[str]:
    """Which of torch, transformers a fresh interpreter imports to load and run the ONNX engine."""
    import subprocess
    import sys

    code = (
        "import sys; from model.engines import load_engine; "
        f"e = load_engine({str(bundle_dir)!r}, 'onnx', {device!r}); e.predict(['good day']); e.close(); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return out.stdout.strip().splitlines()[-1]


def test_an_onnx_engine_on_the_cpu_starts_without_importing_torch_or_transformers(bundle_dir: Path) -> None:
    # Cold start of an ONNX worker: torch and transformers take seconds to import and are not needed.
    # `--device cpu` never asks PyTorch, GPU or not, so this runs on every machine.
    assert onnx_cold_start_imports(bundle_dir, "cpu") == "[]"


def test_auto_on_a_machine_without_a_gpu_device_does_not_import_torch(bundle_dir: Path) -> None:
    from model.engines.select import gpu_device_files

    if gpu_device_files():
        pytest.skip("a CPU-only machine's check: this one shows a GPU device, so auto rightly asks PyTorch")
    assert onnx_cold_start_imports(bundle_dir, "auto") == "[]"


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
def test_auto_on_a_gpu_machine_serves_with_pytorch_on_cuda(bundle_dir: Path) -> None:
    """The GPU side of `auto` (model/engines/select.py): a GPU means PyTorch in half precision."""
    from model.engines import load_engine

    engine = load_engine(bundle_dir)
    try:
        assert (engine.device, engine.backend) == ("cuda", "torch")
        assert all(p.ok for p in engine.predict(["good day", "awful"]))
    finally:
        engine.close()
