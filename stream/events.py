"""The event schemas: the single place each topic's message shape is defined.

The producer, the worker, the dashboard and the tests all build and parse messages through these
models, so a field renamed here is renamed everywhere (see shared ARCHITECTURE.md, "Topics").
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the events use."""
    return datetime.now(UTC)


def new_id() -> str:
    """An id for an input that arrived without one."""
    return uuid.uuid4().hex


class Tweet(BaseModel):
    """A raw input on the `tweets` topic. Unknown fields are kept and carried through."""

    model_config = ConfigDict(extra="allow")

    text: StrictStr = Field(description="the text to score (required, non-empty)")
    id: str | None = Field(default=None, description="producer's id; also the message key")
    created_at: datetime | None = Field(default=None, description="ISO-8601 creation time")
    user: str | None = None
    lang: str | None = None
    source: str | None = None
    true_label: str | None = Field(default=None, description="known label (replayed datasets)")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty or whitespace only; send at least one visible character")
        return value

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        # Numeric ids (as many tweet exports have) are accepted and carried as strings.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ScoredTweet(Tweet):
    """One event on `tweets-scored` per accepted input: the input plus the model's verdict."""

    id: str  # type: ignore[assignment]  # always set on output: generated when the input had none
    label: str = Field(description="the most probable of the bundle's labels")
    score: float = Field(ge=0.0, le=1.0, description="probability of `label`")
    scores: dict[str, float] = Field(description="label -> probability")
    model: str = Field(description="name@version of the model that scored it")
    scored_at: datetime
    latency_ms: float = Field(description="broker timestamp of the input -> scoring, in ms")
    truncated: bool = Field(default=False, description="text was cut to the cleaning cap")


Stage = Literal["decode", "validate", "inference"]


class DeadLetter(BaseModel):
    """One event on `tweets-dlq` per rejected input, with what to do about it."""

    original: str = Field(description="the input bytes: UTF-8 text, or base64 when not UTF-8")
    encoding: Literal["utf-8", "base64"] = "utf-8"
    error: str = Field(description="a human-readable reason a person can act on")
    stage: Stage
    topic: str
    partition: int
    offset: int
    key: str | None = None
    failed_at: datetime = Field(default_factory=utcnow)


class SentimentStats(BaseModel):
    """One event on `sentiment-stats` per closed tumbling window per worker."""

    window_start: datetime
    window_end: datetime
    worker: str = Field(description="which worker (host:pid) counted this window")
    count: int
    counts: dict[str, int] = Field(description="label -> number of events")
    mean_score: float
    events_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    dead_lettered: int = 0
