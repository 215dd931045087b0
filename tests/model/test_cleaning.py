"""Cleaning: the one normalisation training and serving share, and the input checks before it."""

from __future__ import annotations

import pytest

from model.cleaning import CleanedText, CleaningOptions, clean_batch, clean_text, validate_text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "text is missing (null)"),
        (42, "text must be a string, got int"),
        (b"bytes", "text must be a string, got bytes"),
        (["a list"], "text must be a string, got list"),
        ("", "text is empty"),
        (" \t\n ", "text is only whitespace"),
    ],
)
def test_validate_text_says_what_is_wrong(value: object, message: str) -> None:
    assert validate_text(value) == message


def test_validate_text_accepts_a_real_text() -> None:
    assert validate_text("fine") is None


def test_html_is_unescaped_and_tags_removed() -> None:
    assert clean_text("Great film.<br /><br />Loved it &amp; <i>more</i>") == "Great film. Loved it & more"


def test_angle_brackets_that_are_not_tags_survive() -> None:
    assert clean_text("I &lt;3 you, and 2 < 3 > 1") == "I <3 you, and 2 < 3 > 1"


def test_urls_and_mentions_become_placeholders_but_emails_do_not() -> None:
    text = "@bob see https://t.co/xyz and www.example.com, mail me@example.com"
    assert clean_text(text) == "@user see http and http, mail me@example.com"


def test_placeholders_come_from_the_options() -> None:
    options = CleaningOptions(urls="<url>", mentions="<user>")
    assert clean_text("@bob look http://x.io", options) == "<user> look <url>"


def test_emoji_become_words_or_stay() -> None:
    assert clean_text("so funny 😂") == "so funny face with tears of joy"
    assert clean_text("so funny 😂", CleaningOptions(emoji="keep")) == "so funny 😂"


def test_whitespace_is_collapsed() -> None:
    assert clean_text("  a \n\n b\t\tc  ") == "a b c"


def test_html_stripping_can_be_turned_off() -> None:
    assert clean_text("a<br />b", CleaningOptions(strip_html=False)) == "a<br />b"


def test_text_over_the_cap_is_cut_and_marked() -> None:
    options = CleaningOptions(max_chars=10)
    assert clean_batch(["word " * 10, "short"], options) == [
        CleanedText("word word", True),
        CleanedText("short", False),
    ]


def test_a_megabyte_payload_is_cut_before_any_other_work(monkeypatch) -> None:
    """The cap bounds the work: the expensive steps see a few thousand characters, not a megabyte."""
    import model.cleaning as cleaning

    seen: list[int] = []
    emoji_to_words = cleaning._emoji_to_words
    monkeypatch.setattr(
        cleaning, "_emoji_to_words", lambda text: seen.append(len(text)) or emoji_to_words(text)
    )
    (cleaned,) = clean_batch(["<b>x</b> 😂 " * 100_000])
    assert cleaned.truncated and len(cleaned.text) <= 1000
    assert seen and max(seen) <= 1000 * cleaning._RAW_FACTOR


def test_options_round_trip_through_json() -> None:
    options = CleaningOptions(emoji="keep", max_chars=280, urls="URL")
    assert CleaningOptions.model_validate_json(options.model_dump_json()) == options


def test_options_reject_unknown_fields_and_bad_caps() -> None:
    with pytest.raises(ValueError):
        CleaningOptions(lowercase=True)
    with pytest.raises(ValueError):
        CleaningOptions(max_chars=0)
