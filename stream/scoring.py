"""Score one micro-batch: valid tweets -> `ScoredTweet`, failed items -> `DeadLetter` (no I/O).

The model is called once per batch. An engine that raises for the whole batch is retried one
text at a time, so one poisonous text cannot take its neighbours down with it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from model.engines.base import Engine, Prediction, failed
from stream.decode import Source, dead_letter
from stream.events import DeadLetter, ScoredTweet, Tweet, new_id, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """A decoded input on its way through the worker."""

    tweet: Tweet
    source: Source
    raw: bytes


def predict_guarded(engine: Engine, texts: Sequence[str]) -> list[Prediction]:
    """`engine.predict(texts)`; when it raises, each text again on its own, failures as errors."""
    try:
        predictions = engine.predict(texts)
    except Exception as exc:  # an engine bug must cost one batch's retry, not the worker
        log.warning("engine failed on a batch of %d (%r); retrying one text at a time", len(texts), exc)
        return [_predict_one(engine, text) for text in texts]
    if len(predictions) != len(texts):
        return [failed(f"engine returned {len(predictions)} predictions for {len(texts)} texts")] * len(texts)
    return predictions


def _predict_one(engine: Engine, text: str) -> Prediction:
    try:
        return engine.predict([text])[0]
    except Exception as exc:  # the same guard, for the single text that broke the batch
        return failed(f"the model raised {type(exc).__name__}: {exc}")


def to_outputs(
    items: Sequence[Item], predictions: Sequence[Prediction], model: str, max_text_chars: int
) -> list[ScoredTweet | DeadLetter]:
    """One output per item, in order: scored when its prediction is ok, a dead letter otherwise."""
    scored_at = utcnow()
    return [
        scored_tweet(item, pred, model, scored_at, max_text_chars)
        if pred.ok
        else dead_letter(
            item.raw, item.source, "inference", f"the model could not score this text: {pred.error}"
        )
        for item, pred in zip(items, predictions, strict=True)
    ]


def scored_tweet(
    item: Item, pred: Prediction, model: str, scored_at: datetime, max_text_chars: int
) -> ScoredTweet:
    """The input's fields plus the verdict; over-long text is cut so the event fits in Kafka."""
    fields = item.tweet.model_dump()
    text = fields["text"]
    cut = len(text) > max_text_chars
    fields.update(
        id=item.tweet.id or item.source.key_text or new_id(),
        text=text[:max_text_chars] if cut else text,
        label=pred.label,
        score=pred.score,
        scores=pred.scores,
        model=model,
        scored_at=scored_at,
        latency_ms=_latency_ms(item.source, scored_at.timestamp()),
        truncated=pred.truncated or cut,
    )
    return ScoredTweet.model_validate(fields)


def _latency_ms(source: Source, now: float) -> float:
    return max(0.0, (now - source.timestamp) * 1000.0) if source.timestamp else 0.0


def encode(event: ScoredTweet | DeadLetter) -> bytes:
    """The event as UTF-8 JSON bytes, the wire format of every topic."""
    return event.model_dump_json().encode("utf-8")
