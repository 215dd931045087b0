"""The lexicon baseline: VADER, mapped to negative/neutral/positive. No training, no model files.

VADER's rule labels a text positive when its compound score c >= 0.05, negative when c <= -0.05,
and neutral in between. Its three-way probabilities here are a softmax over the margin by which c
clears each threshold: logits (negative, neutral, positive) = (k(-c - 0.05), 0, k(c - 0.05)).
The arg-max is therefore exactly VADER's rule, ties fall on the thresholds, and confidence grows
smoothly with |c| (k = 5: c = 0.5 gives p(positive) of about 0.9, c = 1 about 0.99).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from model.cleaning import CleaningOptions
from model.engines.base import Prediction, failed, from_probabilities
from model.engines.batching import screen

LABELS = ["negative", "neutral", "positive"]
THRESHOLD = 0.05
SHARPNESS = 5.0
# VADER scores emoji itself (it has its own emoji lexicon), so keep them for it.
VADER_CLEANING = CleaningOptions(emoji="keep")


def compound_to_probabilities(compound: float) -> list[float]:
    """(negative, neutral, positive) probabilities from VADER's compound score, as documented above."""
    logits = [SHARPNESS * (-compound - THRESHOLD), 0.0, SHARPNESS * (compound - THRESHOLD)]
    top = max(logits)
    exps = [math.exp(z - top) for z in logits]
    total = sum(exps)
    return [e / total for e in exps]


class VaderEngine:
    """Scores texts with the VADER lexicon; the fallback when no model is available."""

    backend = "vader"
    device = "cpu"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.name = "vader@3.3.2"
        self.model_version = "vader@3.3.2"  # the lexicon ships inside the package version
        self.labels = list(LABELS)
        self.label_shift = None  # no validation fit: the estimate stays CBPE
        self._analyzer = SentimentIntensityAnalyzer()

    def predict(self, texts: Sequence[object]) -> list[Prediction]:
        """One prediction per text, in input order."""
        screened, errors = screen(texts, VADER_CLEANING)
        results: list[Prediction] = [failed(errors[i]) if i in errors else None for i in range(len(texts))]  # type: ignore[misc]
        for s in screened:
            compound = self._analyzer.polarity_scores(s.text)["compound"]
            results[s.index] = from_probabilities(
                self.labels, compound_to_probabilities(compound), s.truncated
            )
        return results

    def close(self) -> None:
        """Nothing to release."""
