"""Shift alerts: a jump in the negative share raises one alert at once; a steady stream raises none.

Windows are simulated by their `window_start` (event time), never by waiting. The detector and the
window clock are tested alone; the monitor's agent bodies with a stand-in table and producer (a send
that fails, partitions read unevenly, a stats record from 2100, a restart); then the whole
`sentistream monitor` app on the real broker, fed two workers' stats.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
import requests
from aiokafka.errors import KafkaTimeoutError

from stream.events import SentimentAlert, SentimentStats
from stream.monitor.app import ShiftMonitor
from stream.monitor.detector import ShiftDetector, WindowClock, WindowCounts
from stream.monitor.settings import MonitorSettings
from stream.settings import KafkaSettings
from tests.kafka_reader import count_records
from tests.ports import start_server, stop
from tests.stream.worker_process import create_topics, produce, read_topic, wait_until

SENTISTREAM = str(Path(sys.executable).parent / "sentistream")
WINDOW_S = 10.0
START = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


def draw(rng: random.Random, negative: float, events: int) -> dict[str, int]:
    """Counts of one window: each event negative with probability `negative`, else neutral/positive 3:5."""
    counts = {"negative": 0, "neutral": 0, "positive": 0}
    for _ in range(events):
        r = rng.random()
        counts[
            "negative" if r < negative else "neutral" if r < negative + (1 - negative) * 3 / 8 else "positive"
        ] += 1
    return counts


def windows(shares: list[float], seed: int = 0, events: int = 100) -> list[WindowCounts]:
    rng = random.Random(seed)
    out = []
    for i, share in enumerate(shares):
        start = START + timedelta(seconds=WINDOW_S * i)
        n = rng.randint(int(events * 0.9), int(events * 1.1))
        out.append(WindowCounts(start, start + timedelta(seconds=WINDOW_S), draw(rng, share, n)))
    return out


def run_detector(stream: list[WindowCounts]) -> list[tuple[int, SentimentAlert]]:
    detector = ShiftDetector(MonitorSettings(window_s=WINDOW_S))
    return [(i, alert) for i, w in enumerate(stream) for alert in detector.observe(w)]


def test_negative_share_jump_from_20_to_60_percent_raises_one_alert_at_once() -> None:
    jump_at = 15
    alerts = run_detector(windows([0.2] * jump_at + [0.6] * 25))
    assert len(alerts) == 1, [a.summary for _, a in alerts]
    index, alert = alerts[0]
    assert alert.kind == "share" and index == jump_at  # the first shifted window raises it
    assert alert.since == START + timedelta(seconds=WINDOW_S * jump_at)
    negative = next(c for c in alert.changes if c.what == "negative")
    assert negative.change == pytest.approx(0.4, abs=0.12) and negative.z > 4
    assert "negative share" in alert.summary


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_steady_stream_raises_nothing_over_10_minutes_of_windows(seed: int) -> None:
    assert run_detector(windows([0.2] * 60, seed=seed)) == []  # 60 windows of 10 s


def test_a_volume_collapse_raises_a_volume_alert() -> None:
    stream = windows([0.2] * 12) + windows([0.2] * 3, events=10)
    (index, alert), *rest = run_detector(stream)
    assert alert.kind == "volume" and index == 12 and not rest
    assert alert.changes[0].value < alert.changes[0].baseline / 2


def test_small_windows_are_not_judged_on_share() -> None:
    # 60% negative out of 5 events is noise, not news (the volume collapse is what gets reported).
    alerts = run_detector(windows([0.2] * 10) + windows([0.6] * 3, events=5))
    assert [a.kind for _, a in alerts] == ["volume"]


def test_a_window_is_complete_once_a_later_one_arrives() -> None:
    clock = WindowClock(WINDOW_S, grace_windows=1)
    assert clock.see(START) and clock.complete(max_gap=30) == []
    assert clock.see(START + timedelta(seconds=WINDOW_S)) and clock.complete(30) == [clock.index(START)]
    assert not clock.see(START)  # too late: window 0 was evaluated
    clock.see(START + timedelta(seconds=WINDOW_S * 4))  # two empty windows in between still count
    assert clock.complete(30) == [clock.index(START) + i for i in (1, 2, 3)]


def window_at(i: int, counts: dict[str, int], origin: datetime = START) -> WindowCounts:
    start = origin + timedelta(seconds=WINDOW_S * i)
    return WindowCounts(start, start + timedelta(seconds=WINDOW_S), counts)


def test_windows_without_stats_before_the_stream_began_are_no_baseline() -> None:
    # `make demo`: the monitor first completes windows in which no worker published anything.
    empty = [window_at(i, {}) for i in range(8)]
    steady = [window_at(8 + i, w.counts) for i, w in enumerate(windows([0.2] * 12, events=50))]
    assert run_detector(empty + steady) == []


def test_the_baseline_starts_again_after_a_long_silence() -> None:
    # The clock leaves a long silence out, so the next window does not follow the last one.
    before = windows([0.2] * 12, events=100)
    later = START + timedelta(hours=1)  # a restarted stream, at 40% of the old volume
    after = [window_at(i, w.counts, later) for i, w in enumerate(windows([0.2] * 8 + [0.6] * 2, events=40))]
    alerts = run_detector(before + after)
    assert [(i, a.kind) for i, a in alerts] == [(12 + 8, "share")]  # the volume is not compared with before


def test_a_window_is_complete_only_once_every_partition_moved_past_it() -> None:
    clock, now = WindowClock(WINDOW_S, grace_windows=1, idle_s=30), START.timestamp() + 3600
    for i in range(6):  # partition 0 is read ahead of partition 1 (a catch-up)
        assert clock.see(START + timedelta(seconds=WINDOW_S * i), partition=0, now=now)
    assert clock.see(START, partition=1, now=now)
    assert clock.complete(30, now) == []
    assert clock.see(START + timedelta(seconds=WINDOW_S), partition=1, now=now)
    assert clock.complete(30, now) == [clock.index(START)]


def test_an_assigned_partition_holds_windows_open_until_it_is_read_or_stays_silent() -> None:
    clock, now = WindowClock(WINDOW_S, grace_windows=1, idle_s=30), START.timestamp() + 3600
    clock.assign([0, 1], now)
    for i in range(4):
        clock.see(START + timedelta(seconds=WINDOW_S * i), partition=0, now=now + 10)
    assert clock.complete(30, now + 29) == []  # partition 1 may hold the other half of these windows
    assert clock.complete(30, now + 30) == [clock.index(START) + i for i in range(3)]


def test_the_first_windows_are_those_of_the_partition_read_furthest_behind() -> None:
    clock, now = WindowClock(WINDOW_S, grace_windows=1, idle_s=30), START.timestamp() + 3600
    clock.assign([0, 1], now)
    for i in range(5, 9):  # partition 0's first stats come first, though partition 1's are older
        clock.see(START + timedelta(seconds=WINDOW_S * i), partition=0, now=now)
    for i in range(2, 9):
        assert clock.see(START + timedelta(seconds=WINDOW_S * i), partition=1, now=now)
    assert clock.complete(30, now) == [clock.index(START) + i for i in range(2, 8)]


def test_a_window_far_in_the_future_is_refused_and_the_clock_goes_on() -> None:
    clock, now = WindowClock(WINDOW_S, grace_windows=1, future_s=300), START.timestamp() + 3600
    assert clock.see(START, now=now)
    assert not clock.see(datetime(2100, 1, 1, tzinfo=UTC), now=now)
    assert clock.complete(30, now) == []
    assert clock.see(START + timedelta(seconds=WINDOW_S), now=now)
    assert clock.complete(30, now) == [clock.index(START)]


def test_a_silence_longer_than_max_gap_is_left_out_not_replayed_as_empty_windows() -> None:
    clock = WindowClock(WINDOW_S, grace_windows=1)
    for i in (0, 1, 40):
        clock.see(START + timedelta(seconds=WINDOW_S * i))
    first = clock.index(START)
    assert clock.complete(max_gap=6) == [first, first + 1]


# ---- the monitor's agent bodies, without a broker -------------------------------------------------


class WindowedTable:
    """Stands in for the monitor's Faust windowed table: a count per (label, window of `monitor.at`)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = {}
        self.monitor: ShiftMonitor | None = None

    def key(self, label: str) -> tuple[str, int]:
        assert self.monitor is not None
        return label, int(self.monitor.at // WINDOW_S)

    def __getitem__(self, label: str) -> Cell:
        return Cell(self, label)

    def __setitem__(self, label: str, cell: Cell) -> None:
        pass  # `table[label] += n` already stored through the cell


@dataclass
class Cell:
    table: WindowedTable
    label: str

    def __iadd__(self, n: int) -> Cell:
        key = self.table.key(self.label)
        self.table.counts[key] = self.table.counts.get(key, 0) + n
        return self

    def value(self) -> int:
        return self.table.counts.get(self.table.key(self.label), 0)


class Producer:
    """Keeps the alerts it acknowledges; the first `failures` sends fail as a stopped broker's would."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[SentimentAlert] = []

    async def send_and_wait(self, topic, key, value, partition, timestamp, headers) -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaTimeoutError("no acknowledgement")
        self.sent.append(SentimentAlert.model_validate_json(value))


def monitor_app(producer: Producer | None = None) -> ShiftMonitor:
    table = WindowedTable()
    app = SimpleNamespace(producer=producer or Producer())
    monitor = ShiftMonitor(app, table, kafka=None, settings=MonitorSettings(window_s=WINDOW_S))
    table.monitor = monitor
    return monitor


def feed(monitor: ShiftMonitor, records: list[tuple[int, bytes]]) -> None:
    """Run the stats agent's body over (partition, value) records, as Faust would hand them over."""

    async def events():
        for offset, (partition, value) in enumerate(records):
            yield SimpleNamespace(value=value, message=SimpleNamespace(topic="stats", partition=partition, offset=offset))  # fmt: skip

    asyncio.run(monitor.consume_stats(SimpleNamespace(events=events)))


def one_worker(stream: list[WindowCounts], worker: str = "A") -> list[tuple[int, bytes]]:
    return [(0, stats_event(worker, w.start, w.counts)) for w in stream]


def sent_kinds(monitor: ShiftMonitor) -> list[str]:
    return [a.kind for a in monitor.app.producer.sent]


def test_an_alert_whose_send_fails_is_sent_again_and_counted_only_once_sent() -> None:
    monitor = monitor_app(Producer(failures=2))
    jump_at = 12
    feed(monitor, one_worker(windows([0.2] * jump_at, events=200)))
    feed(monitor, one_worker(windows([0.2] * jump_at + [0.6] * 2, events=200)[jump_at:]))
    assert sent_kinds(monitor) == [] and monitor.published == 0  # raised, refused twice
    assert len(monitor.unsent) == 1
    feed(monitor, one_worker(windows([0.2] * jump_at + [0.6] * 3, events=200)[-1:]))
    assert sent_kinds(monitor) == ["share"] and monitor.published == 1 and not monitor.unsent
    assert monitor.app.producer.sent[0].since == START + timedelta(seconds=WINDOW_S * jump_at)
    assert 'sentistream_monitor_alerts_total{kind="share"} 1.0' in monitor.metrics.render().decode()


def test_the_windows_due_after_a_failed_send_are_still_evaluated() -> None:
    monitor = monitor_app(Producer(failures=1))
    stream = windows([0.2] * 12 + [0.6] * 3, events=200)
    del stream[13]  # no stats for window 13: window 14's stats complete it together with window 12
    feed(monitor, one_worker(stream))
    # Window 12 raises the share alert (its send fails); window 13, empty, the volume one.
    assert sent_kinds(monitor) == ["share", "volume"] and monitor.published == 2
    assert [w.start for w in monitor.detector.history][-2:] == [stream[12].start, stream[12].end]


def test_a_stats_record_dated_2100_is_ignored_and_does_not_blind_the_monitor(caplog) -> None:
    monitor = monitor_app()
    stream = windows([0.2] * 12 + [0.6] * 4, events=200)
    records = one_worker(stream)
    records.insert(8, (0, stats_event("B", datetime(2100, 1, 1, tzinfo=UTC), {"positive": 5})))
    with caplog.at_level(logging.WARNING, logger="stream.monitor.app"):
        feed(monitor, records)
    assert sent_kinds(monitor) == ["share"]
    assert monitor.app.producer.sent[0].since == stream[12].start
    assert "2100-01-01T00:00:00+00:00, which starts" in caplog.text and "ignored" in caplog.text


def halves(w: WindowCounts) -> tuple[dict[str, int], dict[str, int]]:
    """Worker A's and worker B's parts of a window: A scored every negative, B every positive."""
    a = {"negative": w.counts["negative"], "neutral": w.counts["neutral"] // 2}
    return a, {"neutral": w.counts["neutral"] - a["neutral"], "positive": w.counts["positive"]}


def test_windows_wait_for_a_partition_read_behind_the_other(caplog) -> None:
    # A catch-up: the consumer hands over worker A's partition 0 ahead of worker B's partition 1.
    monitor = monitor_app()
    stream = windows([0.2] * 21, events=200)
    together = [(p, stats_event(name, w.start, halves(w)[p])) for w in stream[:10] for p, name in ((0, "A"), (1, "B"))]  # fmt: skip
    a_ahead = [(0, stats_event("A", w.start, halves(w)[0])) for w in stream[10:]]
    b_behind = [(1, stats_event("B", w.start, halves(w)[1])) for w in stream[10:]]
    with caplog.at_level(logging.WARNING, logger="stream.monitor.app"):
        feed(monitor, together + a_ahead + b_behind)
    assert sent_kinds(monitor) == []  # each partition alone looks like a shift; merged, nothing moved
    assert [w.total for w in monitor.detector.history] == [w.total for w in stream[:20]]
    assert "came after it was evaluated" not in caplog.text


def test_the_timer_evaluates_the_windows_a_silent_partition_held_open(monkeypatch) -> None:
    monitor, wall = monitor_app(), [time.time()]
    monkeypatch.setattr("stream.monitor.app.time.time", lambda: wall[0])
    stream = windows([0.2] * 12, events=200)
    feed(monitor, [(p, stats_event(name, w.start, halves(w)[p])) for w in stream[:6] for p, name in ((0, "A"), (1, "B"))])  # fmt: skip
    wall[0] += 20  # then worker B stops; A goes on
    feed(monitor, [(0, stats_event("A", w.start, halves(w)[0])) for w in stream[6:]])
    asyncio.run(monitor.tick())
    assert len(monitor.detector.history) == 5  # windows 5..10 wait for B's half
    wall[0] += MonitorSettings().partition_idle_s - 20
    asyncio.run(monitor.tick())
    assert [w.start for w in monitor.detector.history] == [w.start for w in stream[:11]]


@pytest.mark.parametrize("silence", [timedelta(minutes=3), timedelta(hours=1)])
def test_a_restarted_monitor_does_not_compare_the_new_run_with_the_silence_before_it(
    silence: timedelta,
) -> None:
    # `make demo` again: the monitor resumes with the last (partial) window the previous run published.
    monitor = monitor_app()
    last_old = window_at(0, {"negative": 4, "neutral": 6, "positive": 10})
    new_run = START + WINDOW_S * timedelta(seconds=1) + silence
    first = {"negative": 8, "neutral": 13, "positive": 21}  # a partial first window: 42 events
    stream = [window_at(0, first, new_run)] + [
        window_at(1 + i, w.counts, new_run) for i, w in enumerate(windows([0.2] * 12, events=50))
    ]
    feed(monitor, one_worker([last_old, *stream]))
    assert sent_kinds(monitor) == []
    assert len(monitor.detector.history) == len(stream) - 1  # every window of the new run was judged


# ---- the app on the real broker ---------------------------------------------------------------


def stats_event(worker: str, start: datetime, counts: dict[str, int]) -> bytes:
    n = sum(counts.values())
    return SentimentStats(
        window_start=start, window_end=start + timedelta(seconds=WINDOW_S), worker=worker, count=n, counts=counts,
        mean_score=0.8, events_per_s=n / WINDOW_S, latency_p50_ms=5, latency_p95_ms=9, latency_p99_ms=12,
    ).model_dump_json().encode()  # fmt: skip


def last_window_end(port: int) -> float:
    """The end (epoch s) of the last window the monitor evaluated, from its /metrics."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    ends = [
        line.split()[-1]
        for line in text.splitlines()
        if line.startswith("sentistream_monitor_last_window_end_seconds ")
    ]
    return float(ends[0]) if ends else 0.0


def healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def monitor_command(broker_url: str, topic_name: str, stats: str, alerts: str, *extra: str):
    """`sentistream monitor` on the test's own topics and app id, for `start_server(command(port))`."""

    def command(port: int) -> list[str]:
        return [
            SENTISTREAM, "monitor", "--broker", broker_url, "--stats-topic", stats, "--alerts-topic", alerts,
            "--app-id", f"{topic_name}-monitor", "--web-port", str(port), "--window-s", str(WINDOW_S), *extra,
        ]  # fmt: skip

    return command


@pytest.mark.slow
def test_monitor_merges_two_workers_and_alerts_once_on_the_real_broker(
    broker_url, topic_name, tmp_path
) -> None:
    stats, scored, alerts = f"{topic_name}-stats", f"{topic_name}-scored", f"{topic_name}-alerts"
    # Workers A and B share the stats topic's one partition (keys A and B would both land on partition 0
    # of two, and a partition that never carries stats holds windows open for --partition-idle-s).
    create_topics(broker_url, [stats], partitions=1)
    create_topics(broker_url, [scored], partitions=2)
    log = tmp_path / "monitor.log"

    command = monitor_command(broker_url, topic_name, stats, alerts, "--scored-topic", scored)

    process, port = start_server(command, log, healthy, timeout=120)
    try:
        examples = [{"id": f"x{i}", "text": f"awful thing {i}", "label": "negative", "score": 0.9,
                     "scores": {"negative": 0.9}, "model": "m@1", "scored_at": START.isoformat(),
                     "latency_ms": 1.0} for i in range(3)]  # fmt: skip
        produce(broker_url, scored, [(None, orjson.dumps(e)) for e in examples])
        # Windows near now, so none is stale for the table's expiry; each split over two workers.
        base = datetime.fromtimestamp((time.time() // WINDOW_S) * WINDOW_S - 150, UTC)
        jump_at, total = 12, 20
        # Windows `total` onwards only mark the end: they complete window `total`, so once the monitor
        # has evaluated that one, every alert of the windows before it is sent (it evaluates in order).
        markers = MonitorSettings.model_fields["grace_windows"].default + 1
        messages = []
        for i, w in enumerate(windows([0.2] * jump_at + [0.6] * (total + markers - jump_at), events=200)):
            start = base + timedelta(seconds=WINDOW_S * i)
            half = {label: n // 2 for label, n in w.counts.items()}
            rest = {label: n - half[label] for label, n in w.counts.items()}
            messages += [(b"A", stats_event("A", start, half)), (b"B", stats_event("B", start, rest))]
        produce(broker_url, stats, messages)
        evaluated = (base + timedelta(seconds=WINDOW_S * (total + 1))).timestamp()
        wait_until(lambda: last_window_end(port) >= evaluated, 60, f"the monitor to evaluate window {total}")
        records = read_topic(broker_url, alerts, expected=1, timeout=60, idle_s=0)
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        stop(process, timeout=30)
    found = [SentimentAlert.model_validate_json(r.value) for r in records]
    assert len(found) == 1, (found, log.read_text()[-3000:])
    alert = found[0]
    assert alert.kind == "share" and alert.since == base + timedelta(seconds=WINDOW_S * jump_at)
    assert 180 <= alert.events <= 220  # both workers' halves were merged
    assert {e.id for e in alert.examples} == {"x0", "x1", "x2"}
    assert 'sentistream_monitor_label_share_zscore{label="negative"}' in metrics
    assert 'sentistream_monitor_alerts_total{kind="share"} 1.0' in metrics


def produce_to(broker_url: str, topic: str, partition: int, values: list[bytes]) -> None:
    """Send `values` to one partition of `topic`, in order, and wait for every acknowledgement."""
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker_url.removeprefix("kafka://"))
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(send())


def metric(port: int, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(values[0]) if values else 0.0


@pytest.mark.slow
def test_monitor_waits_for_a_worker_whose_partition_is_read_behind_on_the_real_broker(
    broker_url, topic_name, tmp_path
) -> None:
    # Worker A's partition is read ahead of worker B's (a catch-up, or a worker whose stats lag):
    # the windows wait for B's half instead of being judged on A's alone and dropping B's as late.
    stats, scored, alerts = f"{topic_name}-stats", f"{topic_name}-scored", f"{topic_name}-alerts"
    create_topics(broker_url, [stats, scored], partitions=2)
    log = tmp_path / "monitor.log"

    command = monitor_command(broker_url, topic_name, stats, alerts, "--scored-topic", scored)

    # B may be silent for longer than the default while the test waits: it must still hold windows open.
    env = {**os.environ, "SENTISTREAM_MONITOR_PARTITION_IDLE_S": "120"}
    process, port = start_server(command, log, healthy, timeout=120, env=env)
    try:
        base = datetime.fromtimestamp((time.time() // WINDOW_S) * WINDOW_S - 60, UTC)  # near now: see above
        stream = [window_at(i, w.counts, base) for i, w in enumerate(windows([0.2] * 12, events=200))]
        produce_to(broker_url, stats, 0, [stats_event("A", w.start, halves(w)[0]) for w in stream])
        wait_until(lambda: metric(port, "sentistream_monitor_last_stats_seconds") > 0, 60, "A's stats read")
        time.sleep(2)  # A's windows are all read before B's come
        produce_to(broker_url, stats, 1, [stats_event("B", w.start, halves(w)[1]) for w in stream])
        evaluated = stream[-2].end.timestamp()  # the last window completes none: it marks the end
        wait_until(lambda: last_window_end(port) >= evaluated, 60, "the monitor to evaluate window 10")
        events = metric(port, "sentistream_monitor_window_events")
    finally:
        stop(process, timeout=30)
    text = log.read_text()
    assert events == stream[-2].total, text[-3000:]  # both halves of the last window evaluated
    assert "came after it was evaluated" not in text and "ALERT" not in text, text[-3000:]
    assert count_records(broker_url, alerts) == 0


def topic_config(broker_url: str, topic: str, create: bool, **configs: str) -> None:
    """Create `topic` (one partition) with `configs`, or change its configs."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async def apply() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker_url.removeprefix("kafka://"))
        await admin.start()
        try:
            if create:
                await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=configs)])
            else:
                await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
        finally:
            await admin.close()

    asyncio.run(apply())


@pytest.mark.slow
def test_an_alert_the_broker_refused_is_sent_once_it_accepts_on_the_real_broker(
    broker_url, topic_name, tmp_path
) -> None:
    # The alerts topic refuses records over 200 bytes, as a broker refuses a send (MESSAGE_TOO_LARGE).
    stats, alerts = f"{topic_name}-stats", f"{topic_name}-alerts"
    create_topics(broker_url, [stats], partitions=1)
    topic_config(broker_url, alerts, create=True, **{"max.message.bytes": "200"})
    log = tmp_path / "monitor.log"

    command = monitor_command(broker_url, topic_name, stats, alerts, "--examples", "0")

    process, port = start_server(command, log, healthy, timeout=120)
    try:
        base = datetime.fromtimestamp((time.time() // WINDOW_S) * WINDOW_S - 150, UTC)  # near now: see above
        stream = [
            window_at(i, w.counts, base) for i, w in enumerate(windows([0.2] * 12 + [0.6] * 4, events=200))
        ]
        produce(broker_url, stats, [(b"A", stats_event("A", w.start, w.counts)) for w in stream])
        evaluated = stream[-2].end.timestamp()  # window 12 raised the alert; 13 and 14 came after it
        wait_until(lambda: last_window_end(port) >= evaluated, 60, "the monitor to evaluate window 14")
        refused = count_records(broker_url, alerts)
        topic_config(broker_url, alerts, create=False, **{"max.message.bytes": "1000000"})
        records = read_topic(broker_url, alerts, expected=1, timeout=30, idle_s=6)  # a tick is every 5 s
        alerts_total = metric(port, 'sentistream_monitor_alerts_total{kind="share"}')
    finally:
        stop(process, timeout=30)
    text = log.read_text()
    found = [SentimentAlert.model_validate_json(r.value) for r in records]
    assert [(a.kind, a.since) for a in found] == [("share", stream[12].start)], text[-3000:]
    assert refused == 0 and "MessageSizeTooLargeError" in text and alerts_total == 1.0, text[-3000:]


def test_the_monitors_own_topics_get_the_configured_replication_factor(tmp_path) -> None:
    # Clusters that require 3 replicas refuse a changelog created with 1 (the monitor's table).
    from stream.monitor.app import create_monitor

    app, _monitor = create_monitor(KafkaSettings(), MonitorSettings(replication_factor=3), 4, tmp_path)
    assert app.conf.topic_replication_factor == 3
    (table,) = app.tables.values()
    assert table.changelog_topic.replicas in (None, 3), "unset: Faust creates it with the app's factor"
