"""Text cleaning: the one function training and serving both call, so they can never disagree.

The options a model was trained with are stored in its bundle (`sentistream.json`) and restored
from it at serving time; nothing else in the project cleans text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Literal, NamedTuple

import regex
from pydantic import BaseModel, ConfigDict, Field

# Tags start with a letter (or /letter), so "I <3 you > all" and "a < b" survive.
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
# Trailing punctuation belongs to the sentence, not the URL ("see www.x.com, then").
_URL = re.compile(r"(?:https?://|www\.)\S*[^\s.,!?;:)\]'\"]", re.IGNORECASE)
# Not after a word character, so e-mail addresses are left alone.
_MENTION = re.compile(r"(?<![\w@])@\w+")
# Work on a bounded prefix of the raw text: a 1 MB payload must not stall the regexes or the tokenizer.
_RAW_FACTOR = 4


class CleaningOptions(BaseModel):
    """How text is normalised before tokenisation; recorded in and restored from the model bundle."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strip_html: bool = Field(True, description="unescape HTML entities and remove tags such as <br />")
    urls: str = Field("http", description="placeholder that replaces each URL (TweetEval style)")
    mentions: str = Field("@user", description="placeholder that replaces each @mention")
    emoji: Literal["keep", "words"] = Field("words", description="keep emoji, or turn them into words")
    max_chars: int = Field(1000, gt=0, description="hard cap on characters after cleaning")


class CleanedText(NamedTuple):
    """A cleaned text and whether it was cut at `max_chars`."""

    text: str
    truncated: bool


DEFAULT_OPTIONS = CleaningOptions()


def validate_text(value: object) -> str | None:
    """Why `value` cannot be scored (one line), or None when it is a usable text."""
    if value is None:
        return "text is missing (null)"
    if not isinstance(value, str):
        return f"text must be a string, got {type(value).__name__}"
    if not value:
        return "text is empty"
    if value.isspace():
        return "text is only whitespace"
    return None


# Characters that draw nothing: controls, format characters (zero-width space/joiners, U+2060, the
# BOM), every Unicode space, and the blank-looking letters spammers use to pass "non-empty" checks
# (Hangul fillers U+115F/U+1160/U+3164/U+FFA0, braille blank U+2800, combining grapheme joiner,
# Khmer inherent vowels, variation selectors).
_INVISIBLE = regex.compile(
    r"[\p{Cc}\p{Cf}\p{Z}\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u2800\u3164"
    r"\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]*+"
)


def nothing_visible(value: str) -> str | None:
    """Why a non-blank `value` shows nothing a model could read (invisible characters only, or HTML
    markup only), or None. The stream dead-letters such texts and `predict` refuses them: one rule."""
    # Where the first visible character is (printable ASCII, most texts, skips the regex).
    visible = 0 if "!" <= value[0] <= "~" else _INVISIBLE.match(value).end()
    if visible == len(value):
        return "text is only invisible characters (zero-width, format or blank-looking); send at least one visible character"
    # Cleaning keeps every visible character outside tags and entities, so only a text whose first
    # visible character opens one can be markup only (and pay for the cleaner).
    if value[visible] in "<&" and _INVISIBLE.fullmatch(clean_text(value, _MARKUP_CHECK)):
        return "text is only HTML markup, nothing is left once tags are removed; send words"
    return None


def clean_text(text: str, options: CleaningOptions = DEFAULT_OPTIONS) -> str:
    """The cleaned form of one text (see `clean_batch` for the truncation flag)."""
    return _clean(text, options).text


def clean_batch(texts: Sequence[str], options: CleaningOptions = DEFAULT_OPTIONS) -> list[CleanedText]:
    """Clean each text with the same options; texts must already have passed `validate_text`."""
    return [_clean(text, options) for text in texts]


def _clean(text: str, options: CleaningOptions) -> CleanedText:
    raw_cap = options.max_chars * _RAW_FACTOR
    truncated = len(text) > raw_cap
    text = text[:raw_cap]
    if options.strip_html:
        text = html.unescape(_TAG.sub(" ", text))
    text = _URL.sub(options.urls, text)
    text = _MENTION.sub(options.mentions, text)
    if options.emoji == "words" and not text.isascii():
        text = _emoji_to_words(text)
    text = " ".join(text.split())
    if len(text) > options.max_chars:
        return CleanedText(text[: options.max_chars].rstrip(), True)
    return CleanedText(text, truncated)


def _emoji_to_words(text: str) -> str:
    import emoji  # imported on first use: most batches are plain ASCII and never need it

    return emoji.replace_emoji(text, replace=_emoji_name)


def _emoji_name(chars: str, data: dict) -> str:
    # ":face_with_tears_of_joy:" -> " face with tears of joy ": words a tokenizer already knows.
    return " " + data["en"].strip(":").replace("_", " ") + " "


# What the model would read, with the project's one cleaner (tags and entities removed).
_MARKUP_CHECK = CleaningOptions(strip_html=True, emoji="keep")
