"""`sentistream produce` and `stream.feeders.producer`: message building without a broker, sending with one."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from sentistream.cli import main
from sentistream.errors import UsageError
from stream.events import Tweet
from stream.feeders.produce_cli import OrderedIds, parse_line
from stream.feeders.producer import (
    MAX_MESSAGE_BYTES,
    RECORD_OVERHEAD_BYTES,
    ProducerSettings,
    encode_tweet,
    partition_for,
    produce_texts,
    to_tweet,
)
from stream.settings import KafkaSettings
from tests.kafka_reader import count_records, read_topic

# ---- building messages ---------------------------------------------------------------------------


def test_a_plain_text_becomes_a_tweet_keyed_by_a_fresh_id():
    first, second = encode_tweet("great phone #win"), encode_tweet("great phone #win")
    assert first.id != second.id
    assert first.key == first.id.encode()
    assert json.loads(first.value) == {"text": "great phone #win", "id": first.id}


def test_a_mapping_keeps_its_id_and_extra_fields_and_numeric_ids_become_text():
    message = encode_tweet({"text": "hi", "id": 42, "user": "ann", "campaign": "spring"})
    assert message.id == "42" and message.key == b"42"
    assert json.loads(message.value) == {"text": "hi", "id": "42", "user": "ann", "campaign": "spring"}


def test_a_tweet_without_id_gets_one_and_round_trips_through_the_schema():
    message = encode_tweet(Tweet(text="news at nine", true_label="neutral"))
    parsed = Tweet.model_validate_json(message.value)
    assert parsed.id == message.id and parsed.true_label == "neutral"


@pytest.mark.parametrize("bad", ["   ", {"user": "no text"}, {"text": 5}])
def test_invalid_tweets_are_one_line_usage_errors(bad):
    with pytest.raises(UsageError, match="not a valid tweet: field 'text'") as caught:
        to_tweet(bad)
    assert "\n" not in str(caught.value)


def test_partitions_are_stable_per_key_and_spread_over_all_partitions():
    keys = [encode_tweet(f"t{i}").key for i in range(400)]
    chosen = [partition_for(k, 4) for k in keys]
    assert chosen == [partition_for(k, 4) for k in keys]
    assert set(chosen) == {0, 1, 2, 3}


def test_stdin_lines_parse_as_text_or_json_objects():
    assert parse_line("hello world\r\n", "text") == "hello world"
    assert parse_line('{"text": "hi", "lang": "en"}\n', "jsonl") == {"text": "hi", "lang": "en"}
    with pytest.raises(UsageError, match="not valid JSON"):
        parse_line("{broken\n", "jsonl")
    with pytest.raises(UsageError, match="not an object"):
        parse_line("[1, 2]\n", "jsonl")


def test_ids_are_printed_in_sending_order_and_failed_ones_are_left_out():
    out = io.StringIO()
    printer = OrderedIds(out)
    first, second, third = printer.expect(), printer.expect(), printer.expect()
    third("c", None)
    second("b", RuntimeError("lost"))
    assert out.getvalue() == ""  # the first is not acknowledged yet, so nothing may be printed
    first("a", None)
    assert out.getvalue().split() == ["a", "c"]
    assert printer.printed == 2


# ---- the command line, bad input ----------------------------------------------------------------


def test_produce_with_nothing_to_send_is_a_usage_error(capsys):
    assert main(["produce", "--broker", "kafka://127.0.0.1:9"]) == 2
    assert "give texts as arguments" in capsys.readouterr().err


def test_an_unreachable_broker_fails_with_one_line(capsys, dead_port):
    # A port nobody listens on: refused at once, so no wall-clock limit is needed to keep this short.
    status = main(["produce", "--broker", f"kafka://127.0.0.1:{dead_port}", "--connect-timeout-s", "3", "x"])
    out, err = capsys.readouterr()
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and "cannot reach Kafka" in err and "sentistream kafka start" in err


def test_an_oversized_tweet_is_bad_input_that_names_the_limit():
    envelope = len('{"text":"","id":"i"}')  # the value around the text, compact JSON
    largest = MAX_MESSAGE_BYTES - RECORD_OVERHEAD_BYTES - envelope - len(b"i")
    assert len(encode_tweet({"text": "x" * largest, "id": "i"}).value) == envelope + largest
    with pytest.raises(
        UsageError, match=r"over the limit of 1,048,576 bytes \(1 MiB\); shorten or split"
    ) as caught:
        encode_tweet({"text": "x" * (largest + 1), "id": "i"})
    assert "\n" not in str(caught.value)


def test_a_malformed_broker_address_is_a_usage_error(capsys):
    assert main(["produce", "--broker", "http://localhost", "x"]) == 2
    assert "kafka://HOST:PORT" in capsys.readouterr().err


# ---- against the real broker ---------------------------------------------------------------------


def test_produce_sends_arguments_and_prints_their_ids(broker_url, topic_name, capsys):
    assert main(["produce", "--broker", broker_url, "--topic", topic_name, "first 🎉", "second @you"]) == 0
    ids = capsys.readouterr().out.split()
    records = read_topic(broker_url, topic_name, 2, idle_s=0)
    assert [r.key.decode() for r in records] == ids
    assert [json.loads(r.value)["text"] for r in records] == ["first 🎉", "second @you"]


def test_produce_stdin_plain_lines(broker_url, topic_name, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("one line\n\n  two: {not json} \nthree\n"))
    assert main(["produce", "--broker", broker_url, "--topic", topic_name, "--stdin"]) == 0
    assert len(capsys.readouterr().out.split()) == 3
    records = read_topic(broker_url, topic_name, 3, idle_s=0)
    assert [json.loads(r.value)["text"] for r in records] == ["one line", "  two: {not json} ", "three"]


def test_produce_stdin_json_lines_reports_malformed_lines(broker_url, topic_name, capsys, monkeypatch):
    lines = [
        '{"text": "good one", "id": "a1", "user": "ann", "campaign": "x"}',
        '{"user": "no text"}',
        "not json at all",
        '{"text": "good two", "true_label": "positive"}',
        "[1]",
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["produce", "--broker", broker_url, "--topic", topic_name, "--stdin"]) == 0
    out, err = capsys.readouterr()
    assert out.split()[0] == "a1" and len(out.split()) == 2
    assert "skipped 3 malformed lines (2, 3, 5" in err
    values = [json.loads(r.value) for r in read_topic(broker_url, topic_name, 2, idle_s=0)]
    assert values[0] == {"text": "good one", "id": "a1", "user": "ann", "campaign": "x"}
    assert values[1]["true_label"] == "positive"


def test_produce_strict_stops_at_the_first_malformed_line(broker_url, topic_name, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "fine"}\n{"text": ""}\n{"text": "never"}\n'))
    assert main(["produce", "--broker", broker_url, "--topic", topic_name, "--stdin", "--strict"]) == 2
    assert "line 2:" in capsys.readouterr().err
    assert [json.loads(r.value)["text"] for r in read_topic(broker_url, topic_name, 1, idle_s=0)] == ["fine"]
    assert count_records(broker_url, topic_name) == 1  # and nothing after it, counted, not waited out


def test_produce_texts_helper_returns_acknowledged_ids(broker_url, topic_name):
    kafka = KafkaSettings(broker=broker_url, topic=topic_name)
    ids = produce_texts(["from an app", {"text": "with a user", "user": "bob"}], kafka, ProducerSettings())
    records = read_topic(broker_url, topic_name, 2, idle_s=0)
    assert [r.key.decode() for r in records] == ids
    assert json.loads(records[1].value)["user"] == "bob"


def test_the_largest_tweet_the_limit_allows_is_taken_by_kafka(broker_url, topic_name, capsys, monkeypatch):
    """The limit is Kafka's, not a guess: a tweet right at it goes through uncompressed."""
    generated_id = 32  # a uuid4 hex: the key, and the id inside the value
    line = "y" * (MAX_MESSAGE_BYTES - RECORD_OVERHEAD_BYTES - len('{"text":"","id":""}') - 2 * generated_id)
    monkeypatch.setattr("sys.stdin", io.StringIO(line + "\n" + line + "yy\nsmall\n"))
    args = ["produce", "--broker", broker_url, "--topic", topic_name, "--stdin", "--compression", "none"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert len(out.split()) == 2
    assert "skipped 1 malformed lines (2; first: not a valid tweet: " in err and "1,048,576 bytes" in err
    values = [json.loads(r.value)["text"] for r in read_topic(broker_url, topic_name, 2, idle_s=0)]
    assert values == [line, "small"]


def test_an_oversized_line_under_strict_exits_2_with_one_line(broker_url, topic_name, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("fine\n" + "z" * MAX_MESSAGE_BYTES + "\n"))
    assert main(["produce", "--broker", broker_url, "--topic", topic_name, "--stdin", "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 2: not a valid tweet" in err and "1,048,576 bytes" in err


# ---- a real `sentistream produce --stdin` process ------------------------------------------------


def start_produce(broker_url: str, topic: str, *flags: str, verbose: bool = False) -> subprocess.Popen:
    """`sentistream produce --stdin` fed through a pipe (-v: it logs each line as it is queued)."""
    command = [sys.executable, "-m", "sentistream.cli", *(["-v"] if verbose else []), "produce", "--stdin"]
    return subprocess.Popen(
        [*command, "--broker", broker_url, "--topic", topic, *flags],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
    )  # fmt: skip


def wait_for_line(stream, pattern: str) -> str:
    """Read `stream` until a line matches (EOF fails the test: the process ended without it)."""
    for line in stream:
        if re.search(pattern, line):
            return line
    raise AssertionError(f"the process ended without printing {pattern!r}")


def finish(process: subprocess.Popen) -> tuple[str, str]:
    """Wait for the exit with stdin still open (a live feed has no end), draining both outputs."""
    with ThreadPoolExecutor(2) as pool:
        out, err = pool.submit(process.stdout.read), pool.submit(process.stderr.read)
        try:
            process.wait(timeout=120)  # a generous bound against a hang, never a speed claim
        finally:
            process.kill()
        return out.result(), err.result()


def test_ctrl_c_flushes_what_is_buffered_and_exits_130(broker_url, topic_name):
    # The linger keeps the queued lines in the producer's buffer, unacknowledged, when Ctrl-C comes.
    process = start_produce(broker_url, topic_name, "--linger-ms", "3000", verbose=True)
    process.stdin.write("first\nsecond\n")
    process.stdin.flush()
    wait_for_line(process.stderr, r"line 2 queued as")
    process.send_signal(signal.SIGINT)  # stdin stays open: the feed has not ended
    out, err = finish(process)
    assert process.returncode == 130, err
    ids = out.split()
    assert len(ids) == 2
    assert "interrupted: sent 2 messages" in err.strip().splitlines()[-1]
    records = read_topic(broker_url, topic_name, 2, idle_s=0)
    assert [r.key.decode() for r in records] == ids


@pytest.mark.slow  # a broker of its own
def test_a_broker_lost_mid_send_reports_only_what_it_acknowledged(own_broker, topic_name):
    process = start_produce(own_broker.url, topic_name, "--linger-ms", "0", "--request-timeout-ms", "2000")
    process.stdin.write("before the loss\n")
    process.stdin.flush()
    acked = process.stdout.readline().strip()  # an id is printed only once Kafka acknowledged it
    assert [r.key.decode() for r in read_topic(own_broker.url, topic_name, 1, idle_s=0)] == [acked]
    own_broker.stop()
    process.stdin.write("after the loss 1\nafter the loss 2\n")
    process.stdin.close()
    out, err = finish(process)
    assert process.returncode == 1
    assert out == ""  # nothing after the loss may be reported as sent
    assert err.count("\n") == 1, err  # one line, no traceback
    assert err.startswith("sentistream produce: error: 2 messages were not delivered")
