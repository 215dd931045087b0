"""process_batch / to_records / TumblingStats: one output per input, in order, without a broker."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from model.engines import load_engine
from model.engines.base import Prediction, failed
from stream.decode import Source
from stream.events import DeadLetter, ScoredTweet
from stream.settings import KafkaSettings
from stream.worker.micro_batch import process_batch, to_records
from stream.worker.stats import TumblingStats


def src(offset: int, key: bytes | None = None, partition: int = 0) -> Source:
    return Source("tweets", partition, offset, key, 1_700_000_000.0)


class FlakyEngine:
    """Raises on any batch holding 'boom'; fails 'bad' per item; scores everything else positive."""

    name, backend, device, labels = "flaky@1", "constant", "cpu", ["negative", "positive"]
    label_shift = None
    model_version = "flaky@1+0123456789ab"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, texts: Sequence[object]) -> list[Prediction]:
        self.calls.append(len(texts))
        if "boom" in texts:
            raise RuntimeError("device on fire")
        return [
            failed("cannot score 'bad'")
            if t == "bad"
            else Prediction("positive", 0.9, {"negative": 0.1, "positive": 0.9})
            for t in texts
        ]

    def close(self) -> None:
        pass


def test_outputs_match_inputs_one_to_one_and_in_order() -> None:
    messages = [
        (b'{"text": "I love this", "id": "a"}', src(0)),
        (b"garbage", src(1)),
        (b'{"text": "no id here"}', src(2, key=b"k2")),
        (b'{"text": "no id nor key", "extra": [1]}', src(3)),
    ]
    result = process_batch(messages, load_engine(None, backend="vader"), max_text_chars=100)
    kinds = [type(o).__name__ for o in result.outputs]
    assert kinds == ["ScoredTweet", "DeadLetter", "ScoredTweet", "ScoredTweet"]
    first, _, second, third = result.outputs
    assert first.id == "a" and first.label == "positive" and first.model.startswith("vader@")
    assert second.id == "k2"  # the message key stands in for a missing id
    assert len(third.id) == 32 and third.model_extra == {"extra": [1]}
    assert abs(sum(first.scores.values()) - 1.0) < 1e-6
    assert first.latency_ms > 0


def test_one_failing_item_is_dead_lettered_and_its_neighbours_scored() -> None:
    engine = FlakyEngine()
    messages = [(json.dumps({"text": t}).encode(), src(i)) for i, t in enumerate(["fine", "bad", "ok"])]
    out = process_batch(messages, engine, 100).outputs
    assert [type(o) for o in out] == [ScoredTweet, DeadLetter, ScoredTweet]
    assert out[1].stage == "inference" and "cannot score 'bad'" in out[1].error


def test_engine_that_raises_for_the_batch_is_retried_text_by_text() -> None:
    engine = FlakyEngine()
    messages = [(json.dumps({"text": t}).encode(), src(i)) for i, t in enumerate(["a", "boom", "c"])]
    out = process_batch(messages, engine, 100).outputs
    assert engine.calls == [3, 1, 1, 1]
    assert [type(o) for o in out] == [ScoredTweet, DeadLetter, ScoredTweet]
    assert "RuntimeError: device on fire" in out[1].error


def test_long_text_is_cut_in_the_scored_event_and_flagged() -> None:
    messages = [(json.dumps({"text": "nice " * 100_000}).encode(), src(0))]
    (out,) = process_batch(messages, load_engine(None, backend="constant"), max_text_chars=1000).outputs
    assert isinstance(out, ScoredTweet)
    assert len(out.text) == 1000 and out.truncated


def test_records_are_keyed_by_id_and_routed_by_kind() -> None:
    kafka = KafkaSettings(scored_topic="s", dlq_topic="d")
    sources = [src(0, partition=2), src(1, key=b"raw-key", partition=3)]
    messages = [(b'{"text": "hey", "id": "x1"}', sources[0]), (b"{", sources[1])]
    result = process_batch(messages, load_engine(None, backend="constant"), 100)
    plain = to_records(result, sources, kafka, keep_partition=False)
    assert [(r.topic, r.key, r.partition) for r in plain] == [("s", b"x1", None), ("d", b"raw-key", None)]
    assert json.loads(plain[0].value)["id"] == "x1"
    assert DeadLetter.model_validate_json(plain[1].value).offset == 1
    copartitioned = to_records(result, sources, kafka, keep_partition=True)
    assert [r.partition for r in copartitioned] == [2, 3]


def test_tumbling_stats_close_windows_once_with_counts_and_percentiles() -> None:
    stats = TumblingStats(10.0, "w1")
    for i in range(100):
        stats.add_scored("positive" if i % 4 else "negative", 0.5, float(i), now=1000.0 + i / 100)
    stats.add_dead_letters(5, now=1005.0)
    stats.add_scored("neutral", 1.0, 1.0, now=1010.5)
    assert stats.close_due(1009.9) == []
    (window,) = stats.close_due(1010.0)
    assert window.count == 100 and window.counts == {"negative": 25, "positive": 75}
    assert window.dead_lettered == 5 and window.events_per_s == pytest.approx(10.5)
    assert window.latency_p50_ms == pytest.approx(49.5) and window.latency_p99_ms == pytest.approx(98.01)
    assert window.window_end.timestamp() - window.window_start.timestamp() == 10.0
    (rest,) = stats.close_all()
    assert rest.counts == {"neutral": 1} and stats.close_all() == []


def test_nan_inf_and_out_of_range_scores_are_failures() -> None:
    from stream.worker.scoring import checked

    for bad in (float("nan"), float("inf"), 1.5, -0.1):
        assert not checked(Prediction("positive", bad, {"negative": 0.1, "positive": bad})).ok
    assert not checked(Prediction("odd", 0.9, {"positive": 0.9})).ok  # a label without its score
    assert checked(Prediction("positive", 0.9, {"negative": 0.1, "positive": 0.9})).ok


def test_outputs_are_cut_to_fit_the_message_limit() -> None:
    kafka = KafkaSettings(scored_topic="s", dlq_topic="d")
    engine = load_engine(None, backend="constant")
    messages = [
        (json.dumps({"text": "fine", "id": "a", "blob": "b" * 50_000}).encode(), src(0)),
        (json.dumps({"text": "fine", "id": "x" * 600_000}).encode(), src(1, key=b"k" * 600_000)),
        (json.dumps({"text": "fine", "id": "c", "user": "u" * 30_000}).encode(), src(2)),
    ]
    result = process_batch(messages, engine, 100)
    records = to_records(result, [s for _, s in messages], kafka, keep_partition=False, limit=20_000)
    assert all(len(r.value) + len(r.key or b"") <= 20_000 for r in records)
    slim = ScoredTweet.model_validate_json(records[0].value)
    assert records[0].topic == "s" and slim.id == "a" and slim.truncated and not slim.model_extra
    letter = DeadLetter.model_validate_json(records[1].value)
    assert records[1].topic == "d" and letter.stage == "validate" and "600000 characters" in letter.error
    assert "original cut" in letter.error and len(letter.key) <= 512
    assert len(ScoredTweet.model_validate_json(records[2].value).user) == 1000
