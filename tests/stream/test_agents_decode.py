"""decode_tweet: every kind of bad input becomes a DeadLetter with an actionable reason."""

from __future__ import annotations

import base64
import json

import pytest

from stream.decode import MAX_ORIGINAL_CHARS, Source, decode_tweet
from stream.events import DeadLetter, Tweet

SOURCE = Source("tweets", 3, 42, b"key-1", 1_700_000_000.0)


@pytest.mark.parametrize(
    ("value", "stage", "reason"),
    [
        (b"\xff\xfe{}", "decode", "not valid UTF-8"),
        (b"hello there", "decode", "not JSON"),
        (b"[1, 2]", "validate", "list, not an object"),
        (b'"just a string"', "validate", "str, not an object"),
        (b'{"id": "a"}', "validate", "'text' is missing"),
        (b'{"text": 5}', "validate", "valid string (got int)"),
        (b'{"text": null}', "validate", "'text'"),
        (b'{"text": ""}', "validate", "empty"),
        (b'{"text": "  \\n "}', "validate", "whitespace"),
        (b'{"text": "ok", "created_at": "yesterday"}', "validate", "'created_at'"),
        (b'{"text": "ok", "user": 12}', "validate", "'user'"),
    ],
)
def test_bad_input_is_dead_lettered_with_its_stage_and_reason(value: bytes, stage: str, reason: str) -> None:
    out = decode_tweet(value, SOURCE)
    assert isinstance(out, DeadLetter)
    assert out.stage == stage
    assert reason in out.error
    assert (out.topic, out.partition, out.offset, out.key) == ("tweets", 3, 42, "key-1")


def test_undecodable_bytes_are_kept_as_base64() -> None:
    value = b"\x80\x81 not utf-8"
    out = decode_tweet(value, SOURCE)
    assert out.encoding == "base64"
    assert base64.b64decode(out.original) == value


def test_utf8_originals_are_kept_as_text() -> None:
    out = decode_tweet(b"nope", SOURCE)
    assert (out.encoding, out.original) == ("utf-8", "nope")


def test_huge_rejected_original_is_cut_so_the_dead_letter_fits_in_kafka() -> None:
    value = json.dumps({"text": 1, "pad": "x" * 1_000_000}).encode()
    out = decode_tweet(value, SOURCE)
    assert len(out.original) == MAX_ORIGINAL_CHARS
    assert "cut" in out.error


def test_tombstone_is_dead_lettered() -> None:
    out = decode_tweet(None, SOURCE)
    assert isinstance(out, DeadLetter) and "no value" in out.error


def test_valid_tweet_keeps_unknown_fields_and_numeric_ids() -> None:
    out = decode_tweet(b'{"text": "great", "id": 17, "retweets": 3, "geo": {"lat": 1}}', SOURCE)
    assert isinstance(out, Tweet)
    assert out.id == "17"
    assert out.model_extra == {"retweets": 3, "geo": {"lat": 1}}


def test_one_megabyte_text_is_accepted_for_scoring() -> None:
    out = decode_tweet(json.dumps({"text": "a" * 1_000_000}).encode(), SOURCE)
    assert isinstance(out, Tweet) and len(out.text) == 1_000_000
