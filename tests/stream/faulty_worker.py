"""`sentistream worker` with faults the tests control, run as `python -m tests.stream.faulty_worker ...`.

The engine scores like VADER-lite (positive unless the text says "bad") and, driven by
SENTISTREAM_TEST_FAULTS (comma-separated `kind=value`):
- `raise=WORD`: the engine raises for any text containing WORD (and so for its whole batch);
- `nan=WORD`: the engine returns a NaN score for texts containing WORD;
- `block=WORD`, `release=PATH`: a batch holding WORD blocks until PATH exists, and the worker
  writes PATH + ".blocked" first, so a test knows the batch is in flight;
- `crash=WORD`: building the outputs of a batch holding WORD raises an unforeseen error.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from model.engines.base import Prediction

LABELS = ["negative", "positive"]


def faults() -> dict[str, str]:
    spec = os.environ.get("SENTISTREAM_TEST_FAULTS", "")
    return dict(part.split("=", 1) for part in spec.split(",") if "=" in part)


class FaultyEngine:
    name, backend, device, labels = "faulty@1", "constant", "cpu", LABELS
    label_shift = None
    model_version = "faulty@1+0123456789ab"

    def __init__(self, spec: dict[str, str]) -> None:
        self.spec = spec

    def predict(self, texts: Sequence[object]) -> list[Prediction]:
        word = self.spec.get("raise")
        if word and any(word in str(t) for t in texts):
            raise RuntimeError("the engine broke on this batch")
        self._maybe_block(texts)
        return [self._one(str(t)) for t in texts]

    def _one(self, text: str) -> Prediction:
        if self.spec.get("nan") and self.spec["nan"] in text:
            return Prediction("positive", math.nan, {"negative": math.nan, "positive": math.nan})
        p = 0.2 if "bad" in text else 0.8
        return Prediction(
            "positive" if p > 0.5 else "negative", max(p, 1 - p), {"negative": 1 - p, "positive": p}
        )

    def _maybe_block(self, texts: Sequence[object]) -> None:
        word, release = self.spec.get("block"), self.spec.get("release")
        if not (word and release and any(word in str(t) for t in texts)):
            return
        Path(release + ".blocked").touch()
        while not Path(release).exists():
            time.sleep(0.05)

    def close(self) -> None:
        pass


def main() -> int:
    import stream.worker.agent
    import stream.worker.cli
    from sentistream.cli import main as sentistream_main

    spec = faults()
    stream.worker.cli.load_engine = lambda settings: FaultyEngine(spec)
    if "crash" in spec:
        real = stream.worker.agent.to_records

        def crashing(result, sources, *args, **kwargs):
            if any(spec["crash"] in getattr(o, "text", "") for o in result.outputs):
                raise ZeroDivisionError("an unforeseen bug")
            return real(result, sources, *args, **kwargs)

        stream.worker.agent.to_records = crashing
    return sentistream_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
