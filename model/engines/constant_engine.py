"""A null model that answers instantly: for measuring the stream layer without model cost."""

from __future__ import annotations

from collections.abc import Sequence

from model.cleaning import validate_text
from model.engines.base import Prediction, failed

DEFAULT_LABELS = ("negative", "neutral", "positive")


class ConstantEngine:
    """Returns the same label (probability 1) for every valid text; bad items still get errors."""

    backend = "constant"
    device = "cpu"

    def __init__(self, label: str = "neutral", labels: Sequence[str] = DEFAULT_LABELS) -> None:
        if label not in labels:
            raise ValueError(f"label {label!r} is not one of {list(labels)}")
        self.name = "constant@0"
        self.model_version = "constant@0"
        self.labels = list(labels)
        self.label_shift = None  # no validation fit: the estimate stays CBPE
        scores = {name: float(name == label) for name in self.labels}
        self._answer = Prediction(label=label, score=1.0, scores=scores)

    def predict(self, texts: Sequence[object]) -> list[Prediction]:
        """The fixed prediction for each valid text, an error for each invalid one."""
        return [self._answer if (error := validate_text(t)) is None else failed(error) for t in texts]

    def close(self) -> None:
        """Nothing to release."""
