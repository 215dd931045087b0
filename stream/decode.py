"""Raw Kafka bytes -> a valid `Tweet`, or a `DeadLetter` that says why not (pure functions).

Every input ends up as exactly one of the two, so the agent never has to guess what to do with a
message and never crashes on one.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from stream.events import DeadLetter, Stage, Tweet

# A dead letter carries the input so a person can fix and resend it, but never a message so big
# that the DLQ producer would be refused by the broker (1 MB default message.max.bytes).
MAX_ORIGINAL_CHARS = 64_000
SCHEMA_HINT = 'send one UTF-8 JSON object per message with a non-empty string "text"'


@dataclass(frozen=True)
class Source:
    """Where a message came from: what a dead letter and a log line name."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    timestamp: float | None = None  # broker timestamp, seconds since the epoch

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def key_text(self) -> str | None:
        """The key as text, or None when absent or not UTF-8."""
        try:
            return self.key.decode("utf-8") if self.key else None
        except UnicodeDecodeError:
            return None


def decode_tweet(value: bytes | None, source: Source) -> Tweet | DeadLetter:
    """Parse one message value into a Tweet; anything unusable becomes a DeadLetter."""
    if value is None:
        return dead_letter(b"", source, "decode", "message has no value (tombstone); " + SCHEMA_HINT)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return dead_letter(
            value,
            source,
            "decode",
            f"value is not valid UTF-8 ({exc.reason} at byte {exc.start}); {SCHEMA_HINT}",
        )
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return dead_letter(value, source, "decode", f"value is not JSON ({exc}); {SCHEMA_HINT}")
    if not isinstance(data, dict):
        return dead_letter(
            value, source, "validate", f"JSON value is a {type(data).__name__}, not an object; {SCHEMA_HINT}"
        )
    try:
        return Tweet.model_validate(data)
    except ValidationError as exc:
        return dead_letter(value, source, "validate", describe_validation_error(exc))


def describe_validation_error(exc: ValidationError, hint: str = SCHEMA_HINT) -> str:
    """One line naming every bad field and what is wrong with it."""
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(p) for p in error["loc"]) or "value"
        if error["type"] == "missing":
            problems.append(f"field {field!r} is missing")
            continue
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"field {field!r}: {message} (got {_type_name(error.get('input'))})")
    return "; ".join(problems) + f"; {hint}"


def dead_letter(value: bytes, source: Source, stage: Stage, error: str) -> DeadLetter:
    """A DeadLetter for `value` from `source`: UTF-8 text when it decodes, base64 when not."""
    try:
        original, encoding = value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        original, encoding = base64.b64encode(value).decode("ascii"), "base64"
    if len(original) > MAX_ORIGINAL_CHARS:
        original = original[:MAX_ORIGINAL_CHARS]
        error += f" (original cut to its first {MAX_ORIGINAL_CHARS} characters of {len(value)} bytes)"
    return DeadLetter(
        original=original,
        encoding=encoding,
        error=error,
        stage=stage,
        topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        key=source.key_text,
    )


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
