"""One micro-batch, without I/O: raw messages -> decoded tweets or dead letters -> the model's verdicts
-> the records to produce, one output per input, in input order (run on the inference thread).
The agent around it (stream/worker/agent.py) takes the batches and delivers their records.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from model.engines.base import Engine
from stream.decode import Source, dead_letter, decode_tweet
from stream.events import DeadLetter, ScoredTweet, Tweet
from stream.settings import KafkaSettings
from stream.worker.delivery import Record
from stream.worker.scoring import (
    Item,
    ModelId,
    dlq_key,
    fit_output,
    predict_guarded,
    to_outputs,
)

if TYPE_CHECKING:
    from stream.worker.serving import CanaryRoute


@dataclass
class BatchResult:
    """What one micro-batch produced: one output per input, in input order."""

    outputs: list[ScoredTweet | DeadLetter] = field(default_factory=list)
    inference_s: float = 0.0
    raws: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class Scored:
    """A scored batch: what the model made of it and the messages to produce."""

    result: BatchResult
    sources: list[Source]
    records: list[Record]
    model_version: str = ""  # the champion that scored it (a shadow compares against it)
    canary: CanaryRoute | None = None  # the canary that scored its partitions, if any

    def model_of(self, partition: int) -> str:
        """The model_version that scored the events of input `partition` in this batch."""
        if self.canary is not None and self.canary.serves(partition):
            return self.canary.engine.model_version
        return self.model_version


def process_batch(
    messages: Sequence[tuple[bytes | None, Source]], engine: Engine, max_text_chars: int
) -> BatchResult:
    """Decode, validate and score a batch (runs on the inference thread; no I/O)."""
    decoded = [(decode_guarded(value, source), value, source) for value, source in messages]
    items = [
        Item(out, source, value or b"") for out, value, source in decoded if not isinstance(out, DeadLetter)
    ]
    began = time.perf_counter()
    predictions = predict_guarded(engine, [item.tweet.text for item in items]) if items else []
    inference_s = time.perf_counter() - began
    model = ModelId(engine.name, engine.model_version)
    scored = iter(to_outputs(items, predictions, model, max_text_chars))
    outputs = [out if isinstance(out, DeadLetter) else next(scored) for out, _, _ in decoded]
    return BatchResult(outputs, inference_s, [value or b"" for value, _ in messages])


def process_routed(
    messages: Sequence[tuple[bytes | None, Source]],
    engine: Engine,
    canary: CanaryRoute,
    max_text_chars: int,
) -> BatchResult:
    """`process_batch` with the canary's engine on its partitions and `engine` on the others, one
    model call each; outputs stay in input order (runs on the inference thread; no I/O)."""
    on_canary = [canary.serves(source.partition) for _, source in messages]
    outputs: list = [None] * len(messages)
    inference_s = 0.0
    for wanted, model in ((False, engine), (True, canary.engine)):
        indices = [i for i, served in enumerate(on_canary) if served == wanted]
        if not indices:
            continue
        part = process_batch([messages[i] for i in indices], model, max_text_chars)
        for i, out in zip(indices, part.outputs, strict=True):
            outputs[i] = out
        inference_s += part.inference_s
    return BatchResult(outputs, inference_s, [value or b"" for value, _ in messages])


def decode_guarded(value: bytes | None, source: Source) -> Tweet | DeadLetter:
    """`decode_tweet`, with anything it raises (deep nesting: RecursionError) as the record's own
    dead letter: an error one record causes must never cost its batch."""
    try:
        return decode_tweet(value, source)
    except Exception as exc:
        return dead_letter(value or b"", source, "decode", f"value cannot be decoded: {type(exc).__name__}")


def to_records(
    result: BatchResult,
    sources: Sequence[Source],
    kafka: KafkaSettings,
    keep_partition: bool,
    limit: int = 1_000_000,
) -> list[Record]:
    """The messages to produce, each at most `limit` bytes; `keep_partition` co-partitions outputs
    with inputs (transactions)."""
    raws = result.raws or [b""] * len(sources)
    records = []
    for out, raw, source in zip(result.outputs, raws, sources, strict=True):
        event, value = fit_output(out, raw, source, limit)
        partition = source.partition if keep_partition else None
        if isinstance(event, DeadLetter):
            records.append(Record(kafka.dlq_topic, dlq_key(source), value, partition, event, source, raw))
        else:
            records.append(
                Record(kafka.scored_topic, event.id.encode(), value, partition, event, source, raw)
            )
    return records


def next_offsets(sources: Sequence[Source]) -> dict[int, int]:
    """Input partition -> the offset after its last event in the batch (what a commit records)."""
    ends: dict[int, int] = {}
    for source in sources:
        ends[source.partition] = max(ends.get(source.partition, 0), source.offset + 1)
    return ends


def source_of(message) -> Source:
    return Source(message.topic, message.partition, message.offset, message.key, message.timestamp)
