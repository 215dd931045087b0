"""Progress on stderr for the commands that work through a whole file (predict, evaluate, export, eda).

stdout stays the command's result (a CSV, JSON lines, a path); the bars go to stderr, as tqdm's do.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from model.engines.base import Prediction

CHUNK_ROWS = 1024  # texts per engine call: the bar moves and memory stays flat


def predict_in_chunks(
    engine: Any,
    texts: Sequence[object],
    desc: str,
    predict: Callable[[Sequence[object]], list[Prediction]] | None = None,
) -> list[Prediction]:
    """`predict(texts)` (default `engine.predict`) a chunk at a time, with a bar of texts scored."""
    from tqdm import tqdm

    predict = predict or engine.predict
    predictions: list[Prediction] = []
    with tqdm(total=len(texts), unit="text", desc=desc, file=sys.stderr) as bar:
        for start in range(0, len(texts), CHUNK_ROWS):
            chunk = texts[start : start + CHUNK_ROWS]
            predictions.extend(predict(chunk))
            bar.update(len(chunk))
    return predictions


@contextmanager
def steps(desc: str, total: int) -> Iterator[Callable[[str], None]]:
    """A bar of `total` named steps; call the yielded function with each step's name as it starts."""
    from tqdm import tqdm

    with tqdm(total=total, unit="step", desc=desc, file=sys.stderr) as bar:
        started = False

        def step(name: str) -> None:
            nonlocal started
            if started:
                bar.update(1)
            started = True
            bar.set_postfix_str(name)

        yield step
        if started:
            bar.update(1)
