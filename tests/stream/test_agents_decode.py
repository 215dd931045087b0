"""decode_tweet: every kind of bad input becomes a DeadLetter with an actionable reason."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from stream.decode import MAX_ORIGINAL_CHARS, Source, decode_tweet
from stream.events import DeadLetter, ScoredTweet, Tweet

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


INVISIBLE = {
    "zero-width space, non-joiner, joiner": "\u200b\u200c\u200d",
    "word joiner and BOM": "\u2060\ufeff",
    "braille blank": "\u2800\u2800",
    "hangul filler": "\u3164",
    "hangul choseong/jungseong fillers": "\u115f\u1160",
    "halfwidth hangul filler": "\uffa0",
    "soft hyphen, LTR mark, ideographic space": "\u00ad\u200e\u3000",
    "invisible mixed with spaces": " \u200b \ufeff\n\u2800 ",
}


@pytest.mark.parametrize("text", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_text_of_invisible_characters_only_is_dead_lettered_at_validate(text: str) -> None:
    out = decode_tweet(json.dumps({"text": text}).encode(), SOURCE)
    assert isinstance(out, DeadLetter) and out.stage == "validate"
    assert "invisible" in out.error and "\n" not in out.error


@pytest.mark.parametrize("text", ["<br/><p></p>", "<b> </b>&nbsp;", "<div>\u200b</div>", "<img src=x>"])
def test_markup_only_text_is_dead_lettered_at_validate(text: str) -> None:
    out = decode_tweet(json.dumps({"text": text}).encode(), SOURCE)
    assert isinstance(out, DeadLetter) and out.stage == "validate"
    assert "markup" in out.error and "\n" not in out.error


@pytest.mark.parametrize(
    "text", ["hi \u200b", "\u200bok", "<3", "a < b & c", "<br>see http://x.co", "<p>👍</p>", "&amp;"]
)
def test_text_with_something_visible_is_accepted(text: str) -> None:
    assert isinstance(decode_tweet(json.dumps({"text": text}).encode(), SOURCE), Tweet)


def test_a_scored_event_may_carry_a_cut_text_that_is_blank() -> None:
    # The worker cuts long texts to fit Kafka; a prefix of spaces must not make the output invalid.
    event = scored_event(text=" \u200b" * 10)
    assert event.text == " \u200b" * 10


def scored_event(**fields) -> ScoredTweet:
    base = {"id": "1", "text": "ok", "label": "positive", "score": 0.9, "scores": {"positive": 0.9}}
    return ScoredTweet(
        **{**base, "model": "m@1", "scored_at": "2024-01-01T00:00:00Z", "latency_ms": 1, **fields}
    )


V1_1 = {
    "created_at": "Wed Oct 10 20:19:24 +0000 2018",
    "id": 1050118621198921728,
    "id_str": "1050118621198921728",
    "text": "To make room for more expression, we will now count all emojis as equal",
    "truncated": False,
    "user": {"id": 6253282, "id_str": "6253282", "name": "Twitter API", "screen_name": "TwitterAPI"},
    "lang": "en",
    "source": '<a href="http://twitter.com" rel="nofollow">Twitter Web Client</a>',
    "entities": {"hashtags": [], "urls": []},
}


def test_twitter_v1_1_json_is_accepted_with_its_screen_name_and_utc_time() -> None:
    out = decode_tweet(json.dumps(V1_1).encode(), SOURCE)
    assert isinstance(out, Tweet), out
    assert out.id == "1050118621198921728" and out.user == "TwitterAPI"
    assert out.created_at == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)
    assert out.model_extra["user_profile"]["name"] == "Twitter API"  # the rest of the user is carried
    assert out.model_extra["entities"] == {"hashtags": [], "urls": []}
    assert Tweet.model_validate(out.model_dump()) == out  # the worker's output re-reads the same


def test_twitter_v1_1_id_str_wins_over_a_rounded_numeric_id() -> None:
    # JavaScript producers round 64-bit ids; id_str is the exact one Twitter sends beside it.
    out = decode_tweet(json.dumps({**V1_1, "id": 1050118621198921700}).encode(), SOURCE)
    assert out.id == "1050118621198921728"
    assert decode_tweet(json.dumps({"text": "x", "id_str": "77"}).encode(), SOURCE).id == "77"


def test_twitter_v1_1_extended_tweets_are_scored_on_their_full_text() -> None:
    extended = {**V1_1, "truncated": True, "extended_tweet": {"full_text": "the whole thing"}}
    assert decode_tweet(json.dumps(extended).encode(), SOURCE).text == "the whole thing"
    full = {k: v for k, v in V1_1.items() if k != "text"} | {"full_text": "tweet_mode=extended"}
    assert decode_tweet(json.dumps(full).encode(), SOURCE).text == "tweet_mode=extended"


def test_twitter_v2_json_is_accepted_with_the_author_name() -> None:
    v2 = {
        "data": {
            "id": "1212092628029698048",
            "text": "We believe the best future version of our API will come from building it with YOU.",
            "author_id": "2244994945",
            "created_at": "2019-12-31T19:26:16.000Z",
        },
        "includes": {"users": [{"id": "2244994945", "username": "TwitterDev", "name": "Twitter Dev"}]},
    }
    out = decode_tweet(json.dumps(v2).encode(), SOURCE)
    assert isinstance(out, Tweet), out
    assert (out.id, out.user, out.model_extra["author_id"]) == (
        "1212092628029698048",
        "TwitterDev",
        "2244994945",
    )
    assert out.created_at == datetime(2019, 12, 31, 19, 26, 16, tzinfo=UTC)
    bare = decode_tweet(json.dumps({"text": "hi", "author_id": "42"}).encode(), SOURCE)
    assert bare.user == "42"


@pytest.mark.parametrize(
    ("created_at", "utc"),
    [
        ("2020-01-01T05:30:00+05:30", datetime(2020, 1, 1, 0, 0, tzinfo=UTC)),
        ("2020-01-01T00:00:00", datetime(2020, 1, 1, 0, 0, tzinfo=UTC)),  # no offset: taken as UTC
        ("Tue Dec 31 23:00:00 -0200 2019", datetime(2020, 1, 1, 1, 0, tzinfo=UTC)),
    ],
)
def test_times_are_normalised_to_utc(created_at: str, utc: datetime) -> None:
    out = decode_tweet(json.dumps({"text": "x", "created_at": created_at}).encode(), SOURCE)
    assert out.created_at == utc and out.created_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "created_at", ["0001-01-01T00:00:00+01:00", "Wed Oct 10 20:19:24 PDT 2018", "Wed Oct 99 1 2 3"]
)
def test_times_that_cannot_be_read_in_utc_are_dead_lettered_not_raised(created_at: str) -> None:
    out = decode_tweet(json.dumps({"text": "x", "created_at": created_at}).encode(), SOURCE)
    assert isinstance(out, DeadLetter) and out.stage == "validate" and "'created_at'" in out.error


@pytest.mark.parametrize(
    "payload",
    [
        {"text": "x", "user": {"screen_name": 5}},
        {"text": "x", "user": {}},
        {"data": {"text": 5}},
        {"data": "text"},
        {"text": "x", "author_id": {"a": 1}, "includes": {"users": "nope"}},
        {"full_text": None},
        {"text": "x", "truncated": True, "extended_tweet": {"full_text": ""}},
        {"text": "x", "id_str": 12},
    ],
)
def test_odd_twitter_shapes_become_a_tweet_or_a_dead_letter_never_an_exception(payload: dict) -> None:
    assert isinstance(decode_tweet(json.dumps(payload).encode(), SOURCE), Tweet | DeadLetter)
