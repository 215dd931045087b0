"""Score one micro-batch: valid tweets -> `ScoredTweet`, failed items -> `DeadLetter` (no I/O).

The model is called once per batch. An engine that raises for the whole batch is retried one
text at a time, so one poisonous text cannot take its neighbours down with it. Every output is
made to fit in one Kafka message (`fit_output`): an output the broker would refuse is a record the
producer raises on, which is how one record used to take its whole batch down.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from model.engines.base import Engine, Prediction, failed
from stream.decode import Source, dead_letter
from stream.events import DeadLetter, ScoredTweet, Tweet, new_id, utcnow

log = logging.getLogger(__name__)

MAX_ID_CHARS = 512  # an id is a key: longer ones are refused, not cut (a cut id would collide)
MAX_FIELD_CHARS = 1_000  # optional string fields (user, lang, source, ...) when an output is too big
RECORD_OVERHEAD_BYTES = 512  # Kafka's per-record framing on top of key + value, with headroom


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
        # The exception's text may quote the input: log its type only.
        log.warning("engine raised %s on a batch of %d; retrying one text at a time", _name(exc), len(texts))
        return [_predict_one(engine, text) for text in texts]
    if len(predictions) != len(texts):
        return [failed(f"engine returned {len(predictions)} predictions for {len(texts)} texts")] * len(texts)
    return [checked(p) for p in predictions]


def _predict_one(engine: Engine, text: str) -> Prediction:
    try:
        (prediction,) = engine.predict([text])
        return checked(prediction)
    except Exception as exc:  # the same guard, for the single text that broke the batch
        return failed(f"the model raised {_name(exc)}: {str(exc)[:200]}")


def checked(pred: Prediction) -> Prediction:
    """`pred`, or a failure when its numbers are not probabilities (NaN, inf, out of [0, 1])."""
    if not pred.ok:
        return pred
    values = [pred.score, *pred.scores.values()]
    if not all(isinstance(v, int | float) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        return failed(f"the model returned scores that are not probabilities: {pred.score!r}")
    if pred.label not in pred.scores:
        return failed(f"the model returned label {str(pred.label)[:50]!r} without its score")
    return pred


@dataclass(frozen=True)
class ModelId:
    """Which model scored an event: `model` (name@version) and `model_version` (+ checksum)."""

    model: str
    model_version: str


def to_outputs(
    items: Sequence[Item], predictions: Sequence[Prediction], model: ModelId, max_text_chars: int
) -> list[ScoredTweet | DeadLetter]:
    """One output per item, in order: scored when its prediction is ok, a dead letter otherwise."""
    scored_at = utcnow()
    return [
        _output(item, pred, model, scored_at, max_text_chars)
        for item, pred in zip(items, predictions, strict=True)
    ]


def _output(
    item: Item, pred: Prediction, model: ModelId, scored_at: datetime, max_text_chars: int
) -> ScoredTweet | DeadLetter:
    if not pred.ok:
        reason = f"the model could not score this text: {pred.error}"
        return dead_letter(item.raw, item.source, "inference", reason)
    event_id = item.tweet.id or item.source.key_text or new_id()
    if len(event_id) > MAX_ID_CHARS:
        reason = f"id is {len(event_id)} characters; send an id of at most {MAX_ID_CHARS}"
        return dead_letter(item.raw, item.source, "validate", reason)
    try:
        return scored_tweet(item, pred, model, scored_at, max_text_chars, event_id)
    except Exception as exc:  # an output the schema refuses (or deeper than Python recurses) is this record's
        return dead_letter(item.raw, item.source, "inference", f"the scored event is invalid: {_name(exc)}")


def scored_tweet(
    item: Item, pred: Prediction, model: ModelId, scored_at: datetime, max_text_chars: int, event_id: str
) -> ScoredTweet:
    """The input's fields plus the verdict; over-long text is cut so the event fits in Kafka."""
    fields = item.tweet.model_dump()
    text = fields["text"]
    cut = len(text) > max_text_chars
    fields.update(
        id=event_id,
        text=text[:max_text_chars] if cut else text,
        label=pred.label,
        score=pred.score,
        scores=pred.scores,
        model=model.model,
        model_version=model.model_version,
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


def fit_output(
    out: ScoredTweet | DeadLetter, raw: bytes, source: Source, limit: int
) -> tuple[ScoredTweet | DeadLetter, bytes]:
    """`out` and its bytes, cut to fit `limit` bytes (key included): carried fields first, then a
    dead letter whose original is cut until it fits. Serialisation errors become dead letters."""
    budget = limit - RECORD_OVERHEAD_BYTES
    if isinstance(out, ScoredTweet):
        try:
            value = encode(out)
            if len(value) + len(out.id.encode()) <= budget:
                return out, value
            slim = _without_carried_fields(out)
            value = encode(slim)
            if len(value) + len(slim.id.encode()) <= budget:
                return slim, value
            reason = f"the scored event is {len(value)} bytes even without its extra fields, over {budget}"
        except Exception as exc:  # a carried value JSON cannot hold, or nested deeper than it recurses
            reason = f"the scored event cannot be serialised: {_name(exc)}"
        out = dead_letter(raw, source, "validate", reason)
    return fit_dead_letter(out, budget - len(dlq_key(source) or b""))


def fit_dead_letter(letter: DeadLetter, budget: int) -> tuple[DeadLetter, bytes]:
    """`letter` with its original (and key field) cut until it encodes to at most `budget` bytes."""
    letter = letter.model_copy(update={"key": _cut(letter.key, MAX_ID_CHARS), "error": letter.error[:2000]})
    value = encode(letter)
    while len(value) > budget and letter.original:
        keep = len(letter.original) * budget // len(value) // 2
        note = f" (original cut to its first {keep} characters to fit the dead-letter topic)"
        letter = letter.model_copy(update={"original": letter.original[:keep], "error": letter.error + note})
        value = encode(letter)
    return letter, value


def dlq_key(source: Source) -> bytes | None:
    """The dead letter's message key: the input's key, cut so it can never make the record too big."""
    return source.key[: MAX_ID_CHARS * 4] if source.key else source.key


def _without_carried_fields(event: ScoredTweet) -> ScoredTweet:
    fields = {name: getattr(event, name) for name in ScoredTweet.model_fields}
    for name in ("user", "lang", "source", "true_label"):
        fields[name] = _cut(fields[name], MAX_FIELD_CHARS)
    fields["truncated"] = True
    return ScoredTweet.model_construct(**fields)


def _cut(value: str | None, chars: int) -> str | None:
    return value[:chars] if isinstance(value, str) else value


def _name(exc: BaseException) -> str:
    return type(exc).__name__
