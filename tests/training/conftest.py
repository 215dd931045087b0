"""Fixtures shared by the training tests: the synthetic task and an untrained tiny model for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_model import build_tiny_classifier
from tests.training.synthetic import synthetic_corpus, write_synthetic_csv


@pytest.fixture(scope="session")
def task(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(synthetic CSV, untrained tiny model whose tokenizer knows the task's words).

    The texts carry mentions, links, HTML, emoji and tails longer than the recipe's max_length, so
    tests that compare training with serving see the cleaning and the truncation at work.
    """
    root = tmp_path_factory.mktemp("task")
    data = write_synthetic_csv(root / "synthetic.csv", rows=600, decorated=True)
    base = build_tiny_classifier(root / "base", corpus=synthetic_corpus(), dim=64)
    return data, base
