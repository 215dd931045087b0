"""The Streamlit page through Streamlit's own AppTest, against the real broker."""

from __future__ import annotations

import asyncio
import uuid

import orjson
from streamlit.testing.v1 import AppTest

from dashboard.app import plain
from stream.events import DeadLetter, Tweet
from tests.dashboard.conftest import APP, TcpProxy, metrics, produce, run_until, scored

PAYLOADS = [
    "<script>window.__xss = 1</script> hello",
    '<img src=x onerror="window.__xss = 1"> look',
    "[click me](javascript:alert(1)) **bold** _it_",
]


def test_no_broker_shows_the_address_and_how_to_start_one(monkeypatch, dead_port):
    port = dead_port
    monkeypatch.setenv("SENTISTREAM_BROKER", f"kafka://127.0.0.1:{port}")
    at = run_until(AppTest.from_file(APP, default_timeout=30), lambda at: at.error)
    message = at.error[0].value
    assert f"127.0.0.1:{port}" in message and "sentistream kafka start" in message
    assert metrics(at)["Total scored"] == "0"


def test_broker_without_events_hints_at_replay(app_env):
    at = run_until(
        AppTest.from_file(APP, default_timeout=30),
        lambda at: any("no scored events" in i.value for i in at.info),
    )
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


def test_try_it_is_scored_by_the_worker_when_one_answers(app_env, worker_stub, monkeypatch):
    monkeypatch.setenv("SENTISTREAM_DASHBOARD_WORKER_URL", worker_stub.url)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_area(key="try_text").input("a good day").run()
    at.button(key="try_score").click().run()
    assert not at.exception and not at.error
    assert next(m for m in at.metric if m.label == "Label").value == "positive"
    assert any(f"worker at {worker_stub.url}" in c.value for c in at.caption)
    assert orjson.loads(worker_stub.bodies[-1]) == {"texts": ["a good day"]}


def test_a_worker_413_is_shown_as_a_message_not_a_traceback(app_env, worker_stub, monkeypatch):
    monkeypatch.setenv("SENTISTREAM_DASHBOARD_WORKER_URL", worker_stub.url)
    worker_stub.refuse = (413, b'{"error": "body is over 1048576 bytes; send at most 1048576"}')
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_area(key="try_text").input("hello").run()
    at.button(key="try_score").click().run()
    assert not at.exception
    assert "Could not score" in at.error[0].value
    assert any("(413)" in t.value and "send at most 1048576" in t.value for t in at.text)


def test_csv_upload_is_scored_by_the_worker_within_its_limits_and_keeps_its_label_column(
    app_env, worker_stub, monkeypatch
):
    monkeypatch.setenv("SENTISTREAM_DASHBOARD_WORKER_URL", worker_stub.url)
    rows = [(f"good {i} " + "ö" * 4_000, "negative") for i in range(300)]  # ~2.4 MB of JSON
    csv = "text,label\n" + "".join(f"{t},{label}\n" for t, label in rows)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.get("file_uploader")[0].upload("mine.csv", csv.encode(), "text/csv").run()
    at.button(key="try_csv_score").click().run()
    assert not at.exception and not at.error
    result = at.dataframe[-1].value
    assert list(result["label"][:3]) == ["negative"] * 3  # the file's own column, untouched
    assert list(result["predicted_label"][:3]) == ["positive"] * 3
    assert max(map(len, worker_stub.bodies)) <= 1_048_576 and len(worker_stub.bodies) >= 3


def test_the_local_engine_is_cached_per_model_settings(monkeypatch, dead_port):
    monkeypatch.setenv("SENTISTREAM_BROKER", f"kafka://127.0.0.1:{dead_port}")
    monkeypatch.setenv("SENTISTREAM_DASHBOARD_WORKER_URL", f"http://127.0.0.1:{dead_port}")
    captions = []
    for backend in ("vader", "constant"):
        monkeypatch.setenv("SENTISTREAM_BACKEND", backend)
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.text_area(key="try_text").input("fine").run()
        at.button(key="try_score").click().run()
        assert not at.exception
        captions.append(next(c.value for c in at.caption if c.value.startswith("Scored by")))
    assert "vader" in captions[0] and "constant" in captions[1]


def test_a_missing_local_model_is_one_line_not_a_traceback(monkeypatch, tmp_path, dead_port):
    monkeypatch.setenv("SENTISTREAM_BROKER", f"kafka://127.0.0.1:{dead_port}")
    monkeypatch.setenv("SENTISTREAM_DASHBOARD_WORKER_URL", f"http://127.0.0.1:{dead_port}")
    monkeypatch.setenv("SENTISTREAM_MODEL", str(tmp_path / "models" / "latest"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_area(key="try_text").input("fine").run()
    at.button(key="try_score").click().run()
    assert not at.exception
    assert any("no such directory" in t.value and "\n" not in t.value for t in at.text)


def test_a_lost_broker_shows_the_banner_and_keeps_the_last_data(monkeypatch, broker_url, topics):
    host, port = broker_url.removeprefix("kafka://").rsplit(":", 1)
    proxy = TcpProxy((host, int(port)))
    try:
        monkeypatch.setenv("SENTISTREAM_BROKER", f"kafka://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("SENTISTREAM_DASHBOARD_RETRY_S", "0.3")
        for name, value in topics.items():
            monkeypatch.setenv(name, value)
        produce(broker_url, topics["SENTISTREAM_SCORED_TOPIC"], [scored("still here", "positive")])
        at = run_until(
            AppTest.from_file(APP, default_timeout=30), lambda at: metrics(at)["Total scored"] == "1"
        )
        assert not at.warning
        proxy.close()
        at = run_until(at, lambda at: any("Lost the connection" in w.value for w in at.warning))
        banner = next(w.value for w in at.warning if "Lost the connection" in w.value)
        assert f"127.0.0.1:{proxy.port}" in banner and "Showing the last data" in banner
        assert metrics(at)["Total scored"] == "1" and at.dataframe[0].value["text"].iloc[0] == "still here"
    finally:
        proxy.close()


def test_lag_kpi_counts_what_the_worker_group_has_not_committed(app_env, broker_url, monkeypatch):
    group = f"workers-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SENTISTREAM_GROUP_ID", group)
    monkeypatch.setenv("SENTISTREAM_DASHBOARD_RETRY_S", "0.3")
    source = app_env["SENTISTREAM_TOPIC"]
    produce(broker_url, source, [Tweet(text=f"t{i}", id=str(i)) for i in range(10)])
    asyncio.run(_commit(broker_url, group, source, 4))
    at = run_until(
        AppTest.from_file(APP, default_timeout=30), lambda at: metrics(at)["Consumer lag"] != "n/a"
    )
    assert metrics(at)["Consumer lag"] == "6"
    asyncio.run(_commit(broker_url, group, source, 9))
    assert metrics(run_until(at, lambda at: metrics(at)["Consumer lag"] == "1"))["Consumer lag"] == "1"


async def _commit(broker_url: str, group: str, topic: str, offset: int) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker_url.removeprefix("kafka://"), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


HOSTILE_LABEL = "**b**<i>x</i>[l](javascript:a(1))\x1b[31m\u202e`"
HOSTILE_MODEL = "[m](https://evil.example)<script>x</script>\x00" + "M" * 5_000


def test_hostile_labels_and_model_names_reach_the_page_only_as_plain_names(app_env, broker_url):
    events = [scored("fine", "positive")]  # first: the newest event's model is the one named
    events += [scored(f"good words number {i}", HOSTILE_LABEL, model=HOSTILE_MODEL) for i in range(3)]
    produce(broker_url, app_env["SENTISTREAM_SCORED_TOPIC"], events)
    at = run_until(AppTest.from_file(APP, default_timeout=30), lambda at: metrics(at)["Total scored"] == "4")
    assert not at.exception
    shown = [m.label.removeprefix("Share ") for m in at.metric if m.label.startswith("Share ")]
    live = at.tabs[0]  # the word clouds' captions are label names; the Models tab's are sentences
    shown += [c.value for c in live.caption if c.value not in ("positive",) and "**" not in c.value]
    caption = next(c.value for c in at.caption if c.value.startswith("Events scored by"))
    shown.append(caption.split("**")[1])
    assert plain(HOSTILE_LABEL) in shown and plain(HOSTILE_MODEL)[:40] in caption
    for name in shown:
        assert len(name) <= 80
        assert not set(name) & set("<>[]()*`:\x1b\u202e\x00"), name


def test_word_clouds_are_drawn_once_per_refresh_for_all_viewers(app_env, broker_url, monkeypatch):
    from streamlit import cache_data

    from dashboard import charts, summary

    events = [scored(f"sunny beach day {i}", "positive") for i in range(5)]
    events += [scored(f"rainy grey delay {i}", "negative") for i in range(5)]
    produce(broker_url, app_env["SENTISTREAM_SCORED_TOPIC"], events)
    run_until(AppTest.from_file(APP, default_timeout=30), lambda at: metrics(at)["Total scored"] == "10")
    cache_data.clear()
    monkeypatch.setattr(summary, "refresh_slot", lambda period_s: 1)  # every viewer in one refresh
    real, calls = charts.word_frequencies_by_label, []
    monkeypatch.setattr(charts, "word_frequencies_by_label", lambda *a, **k: calls.append(a) or real(*a, **k))
    viewers = [AppTest.from_file(APP, default_timeout=30).run() for _ in range(3)]
    assert len(calls) == 1
    for at in viewers:
        assert {"positive", "negative"} <= {c.value for c in at.caption}
