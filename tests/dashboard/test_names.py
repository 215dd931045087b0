"""Names from the topics reach markdown only as inline code: no link, markup or HTML (issue #24)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from dashboard.alerts import banner_text
from dashboard.names import plain_name, shown_name
from stream.events import Change, SentimentAlert

HOSTILE = [
    "https://evil.example/login",
    "www.evil.example",
    "support@evil.example",
    "[click](https://evil.example)",
    "<a href=x>x</a>",
    "`code` **bold**",
    "label\nwith a line\r\nbreak",
]
CODE_SPAN = re.compile(r"`[^`\n]*`")


def outside_code(markdown: str) -> str:
    return CODE_SPAN.sub("", markdown)


@pytest.mark.parametrize("name", HOSTILE)
def test_a_shown_name_is_one_code_span_nothing_can_close(name: str) -> None:
    shown = shown_name(name)
    assert CODE_SPAN.fullmatch(shown), shown
    assert shown.count("`") == 2


@pytest.mark.parametrize("name", HOSTILE)
def test_the_alert_banner_leaves_nothing_outside_code_that_could_link(name: str) -> None:
    now = datetime.now(UTC)
    alert = SentimentAlert(
        kind="share", since=now, window_start=now, window_end=now, events=10, summary="x",
        changes=[Change(what=name, baseline=0.2, value=0.6, change=0.4, z=9.0)],
    )  # fmt: skip
    rest = outside_code(banner_text(alert, shown_name))
    for risky in ("://", "www.", "@", "[", "<", "`", "*"):
        assert risky not in rest, (risky, rest)
    assert plain_name(name) in banner_text(alert)  # plain text (tooltips) keeps the name readable


def test_real_names_read_whole() -> None:
    assert shown_name("tiny@1") == "`tiny@1`" and shown_name("host-a:11") == "`host-a:11`"
    assert shown_name("org/model_name@3") == "`org/model_name@3`"


@pytest.mark.parametrize("word", HOSTILE)
def test_the_words_driving_a_shift_are_shown_and_cannot_link(word: str) -> None:
    from stream.events import Driver

    now = datetime.now(UTC)
    alert = SentimentAlert(
        kind="share", since=now, window_start=now, window_end=now, events=10, summary="x",
        changes=[Change(what="negative", baseline=0.2, value=0.6, change=0.4, z=9.0)],
        drivers=[Driver(word="delayed", weight=0.7, texts=2), Driver(word=word[:100], weight=0.3, texts=1)],
    )  # fmt: skip
    shown = banner_text(alert, shown_name)
    assert "Words driving it: “`delayed`”" in shown
    rest = outside_code(shown)
    for risky in ("://", "www.", "@", "[", "<", "`", "*"):
        assert risky not in rest, (risky, rest)
