"""What every engine promises: `predict(texts)` returns one `Prediction` per text, in input order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from model.calibration import LabelShift


@dataclass(frozen=True)
class Prediction:
    """One text's result: the top label, its probability, and every label's probability.

    A text that could not be scored has `error` set (label and score None); the others in the same
    call are still scored.
    """

    label: str | None
    score: float | None
    scores: dict[str, float] = field(default_factory=dict)
    truncated: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the text was scored."""
        return self.error is None


@runtime_checkable
class Engine(Protocol):
    """A loaded model that scores batches of texts."""

    name: str  # the model as `name@version`
    model_version: str  # the exact model: `name@version+checksum` (see Bundle.model_version)
    backend: str  # what ran: "onnx", "onnx-int8", "torch", "vader" or "constant"
    device: str  # "cpu" or "cuda"
    labels: list[str]
    # the bundle's fit for the accuracy estimate under shift (None: VADER, a plain HF model, older bundles)
    label_shift: LabelShift | None

    def predict(self, texts: Sequence[object]) -> list[Prediction]:
        """One prediction per text, in input order; bad items get `error`, never an exception."""
        ...

    def close(self) -> None:
        """Release threads, sessions and device memory."""
        ...


def failed(error: str) -> Prediction:
    """The prediction of a text that could not be scored."""
    return Prediction(label=None, score=None, error=error)


def from_probabilities(labels: Sequence[str], probs: Sequence[float], truncated: bool = False) -> Prediction:
    """The prediction whose label is the most probable of `labels` (probs in the same order)."""
    scores = {label: float(p) for label, p in zip(labels, probs, strict=True)}
    best = max(range(len(labels)), key=probs.__getitem__)
    return Prediction(label=labels[best], score=scores[labels[best]], scores=scores, truncated=truncated)
