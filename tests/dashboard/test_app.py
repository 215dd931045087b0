"""The Streamlit page through Streamlit's own AppTest, against the real broker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from infra.broker import free_port
from stream.events import DeadLetter
from tests.dashboard.conftest import produce, scored

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
PAYLOADS = [
    "<script>window.__xss = 1</script> hello",
    '<img src=x onerror="window.__xss = 1"> look',
    "[click me](javascript:alert(1)) **bold** _it_",
]


@pytest.fixture
def app_env(monkeypatch, broker_url, topics):
    """Point the app at the session broker, this test's topics, and no worker."""
    monkeypatch.setenv("SENTISTREAM_BROKER", broker_url)
    monkeypatch.setenv("SENTISTREAM_DASHBOARD_WORKER_URL", f"http://127.0.0.1:{free_port()}")
    for name, value in topics.items():
        monkeypatch.setenv(name, value)
    return topics


def run_until(at: AppTest, predicate, timeout: float = 30.0) -> AppTest:
    """Rerun the page until `predicate(at)` holds (the feed fills in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if predicate(at) or time.monotonic() > deadline:
            return at
        time.sleep(0.3)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_no_broker_shows_the_address_and_how_to_start_one(monkeypatch):
    port = free_port()
    monkeypatch.setenv("SENTISTREAM_BROKER", f"kafka://127.0.0.1:{port}")
    at = run_until(AppTest.from_file(APP, default_timeout=30), lambda at: at.error)
    message = at.error[0].value
    assert f"127.0.0.1:{port}" in message and "sentistream kafka start" in message
    assert metrics(at)["Total scored"] == "0"


def test_broker_without_events_hints_at_replay(app_env):
    at = run_until(AppTest.from_file(APP, default_timeout=30), lambda at: "no scored events" in str(at.info))
    hint = next(i.value for i in at.info if "no scored events" in i.value)
    assert app_env["SENTISTREAM_SCORED_TOPIC"] in hint and "sentistream replay" in hint
    assert not at.error


def test_kpis_table_and_filters_follow_the_events(app_env, broker_url):
    recent = [
        scored("loving the new #travel app", "positive", 0.9, latency_ms=10, true_label="positive"),
        scored("great service today", "positive", 0.8, latency_ms=20, true_label="negative"),
        scored("so happy with #travelling", "positive", 0.7, latency_ms=30),
        scored("delayed again #travel", "negative", 0.6, latency_ms=40, true_label="negative"),
        scored("worst support ever", "negative", 0.95, latency_ms=50),
        scored("the meeting is on thursday", "neutral", 0.5, latency_ms=60),
    ]
    old = [scored(f"old #travel news {i}", "neutral", 0.55, age_s=7_200) for i in range(2)]
    produce(broker_url, app_env["SENTISTREAM_SCORED_TOPIC"], old + recent)
    letter = DeadLetter(original="{oops", error="not JSON", stage="decode", topic="t", partition=0, offset=3)
    produce(broker_url, app_env["SENTISTREAM_DLQ_TOPIC"], [letter])

    at = run_until(AppTest.from_file(APP, default_timeout=30), lambda at: metrics(at)["Dead-lettered"] == "1")
    m = metrics(at)
    # Default window (last 15 minutes) keeps the 6 recent events; totals count all 8.
    assert (m["Total scored"], m["In view"], m["Dead-lettered"]) == ("8", "6", "1")
    assert (m["Share positive"], m["Share negative"], m["Share neutral"]) == ("50%", "33%", "17%")
    assert (m["Latency p50"], m["Latency p99"]) == ("35 ms", "60 ms")
    assert m["Live accuracy"] == "67%"  # 2 of the 3 events with a true label
    table = at.dataframe[0].value
    assert list(table["text"]) == [e.text for e in reversed(recent)]  # newest first
    assert list(table["label"]) == [e.label for e in reversed(recent)]

    at.text_input(key="keyword").input("#travel").run()
    m, table = metrics(at), at.dataframe[0].value
    assert m["In view"] == "2" and m["Total scored"] == "8"  # "#travelling" is another tag
    assert set(table["text"]) == {"loving the new #travel app", "delayed again #travel"}
    assert (m["Share positive"], m["Share negative"]) == ("50%", "50%")

    at.selectbox(key="window").select("everything kept").run()
    assert metrics(at)["In view"] == "4"  # the two old #travel events are back
    at.text_input(key="keyword").input("").run()
    assert metrics(at)["In view"] == "8"


def test_html_and_markdown_in_tweets_show_as_literal_text(app_env, broker_url):
    events = [scored(text, "neutral") for text in PAYLOADS]
    produce(broker_url, app_env["SENTISTREAM_SCORED_TOPIC"], events)
    at = run_until(AppTest.from_file(APP, default_timeout=30), lambda at: metrics(at)["Total scored"] == "3")
    assert set(at.dataframe[0].value["text"]) == set(PAYLOADS)  # unchanged characters, as data
    assert at.text[0].value == f"Newest: {PAYLOADS[-1]}"  # st.text never interprets markup
    markdown_capable = [*at.markdown, *at.caption, *at.info, *at.error, *at.warning, *at.subheader]
    markdown_capable += [*at.metric]
    for element in markdown_capable:
        text = str(getattr(element, "value", "")) + str(getattr(element, "label", ""))
        assert "javascript" not in text and "<img" not in text and "<script" not in text
