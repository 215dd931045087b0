"""Replay a labelled dataset into the `tweets` topic at a chosen pace.

The file is read by the training loaders (`training.datasets.load_dataset`), so every format
training understands replays, with the same malformed-row report. Rows become `Tweet`s with the
dataset's label as `true_label`. Pacing follows a schedule against a monotonic clock (row *i* is
due at `i / rate`, or at its own `created_at` gap divided by `speedup`), so late wake-ups are caught
up instead of accumulating drift; unthrottled, rows go out in large batches as fast as Kafka acks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sentistream.errors import UsageError
from stream.feeders.producer import Encoded, ProducerSettings, TweetProducer, encode_tweet
from stream.settings import KafkaSettings
from training.datasets import load_dataset

TICK_S = 0.005  # rows due within this much of "now" go out together: fewer wake-ups, same average rate
MAX_SLEEP_S = 0.2  # long --speedup gaps are slept in slices so Ctrl-C is answered promptly
ROWS_SHOWN = 5


class ReplaySettings(BaseSettings):
    """What to replay and how fast (`sentistream replay`)."""

    model_config = SettingsConfigDict(env_prefix="SENTISTREAM_REPLAY_", frozen=True)

    rate: float | None = Field(
        default=None, gt=0, description="messages per second, held steady; unset: as fast as Kafka takes them"
    )
    speedup: float | None = Field(
        default=None, gt=0, description="follow the file's created_at times, this many times faster"
    )
    limit: int | None = Field(default=None, gt=0, description="stop after this many messages")
    loop: bool = Field(default=False, description="start over at the end of the file (until --limit/Ctrl-C)")
    shuffle: bool = Field(default=False, description="send the rows in a random order (see --seed)")
    seed: int = Field(default=0, description="seed of --shuffle (each --loop pass reshuffles)")
    text_col: str | None = Field(
        default=None, description="column holding the text; unset: guessed from its name"
    )
    label_col: str | None = Field(default=None, description="column holding the known label, if any")
    format: str = Field(default="auto", description="file format, as `sentistream train --format`")
    strict: bool = Field(default=False, description="stop at the first malformed or invalid row")
    chunk: int = Field(default=2000, ge=1, description="most messages handed to Kafka in one go")


@dataclass
class ReplayResult:
    """What a replay did: sent and skipped counts, and how long it took."""

    sent: int = 0
    malformed: int = 0
    malformed_lines: list[int] = field(default_factory=list)
    invalid: int = 0
    invalid_reasons: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    interrupted: bool = False

    @property
    def rate(self) -> float:
        """Messages per second over the whole replay."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self, topic: str) -> str:
        """One line for the terminal."""
        line = f"sent {self.sent} messages to {topic!r} in {self.elapsed_s:.1f}s ({self.rate:,.0f}/s)"
        if self.malformed:
            lines = ", ".join(map(str, self.malformed_lines))
            line += f"; skipped {self.malformed} malformed rows (first at lines {lines})"
        if self.invalid:
            line += f"; skipped {self.invalid} invalid rows (first: {self.invalid_reasons[0]})"
        return line


def check_options(settings: ReplaySettings) -> None:
    """Reject flag combinations that contradict each other."""
    if settings.rate and settings.speedup:
        raise UsageError("--rate and --speedup both set the pace; pass only one")
    if settings.speedup and settings.shuffle:
        raise UsageError("--speedup follows the file's own time order, so it cannot be --shuffle'd")


def load_rows(path: str | Path, settings: ReplaySettings, result: ReplayResult) -> pd.DataFrame:
    """The dataset as `text` (+ `true_label`, `created_at`, other columns), via the training loader."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no such file or folder: {path}; pass a dataset to replay (CSV, TSV, JSONL, ...)")
    dataset = load_dataset(path, settings.format, settings.text_col, settings.label_col, require_labels=False)
    result.malformed = dataset.report.malformed_rows
    result.malformed_lines = dataset.report.malformed_lines
    if settings.strict and result.malformed:
        lines = ", ".join(map(str, result.malformed_lines))
        raise UsageError(
            f"{path}: {result.malformed} malformed rows (first at lines {lines}); fix them or drop --strict"
        )
    return dataset.frame.rename(columns={"label": "true_label"})


def pass_schedule(frame: pd.DataFrame, settings: ReplaySettings) -> np.ndarray | None:
    """Seconds from the start of a pass at which each row is due under --speedup (None otherwise)."""
    if not settings.speedup:
        return None
    if "created_at" not in frame:
        raise UsageError(
            f"--speedup follows a created_at column, and this file has only: {', '.join(frame.columns)}; "
            "use --rate instead"
        )
    times = pd.to_datetime(frame["created_at"], utc=True, errors="coerce", format="ISO8601")
    if times.isna().all():
        raise UsageError("--speedup needs created_at times, but none could be read; use --rate instead")
    times = times.ffill().bfill()
    # Out-of-order rows are sent at once (cummax) rather than waiting backwards in time.
    seconds = (times - times.iloc[0]).dt.total_seconds().cummax().clip(lower=0)
    return seconds.to_numpy() / settings.speedup


def planned_rows(frame: pd.DataFrame, settings: ReplaySettings) -> Iterator[tuple[float, dict[str, Any]]]:
    """(seconds after the start when due, row) for every message to send, --loop and --limit applied."""
    offsets = pass_schedule(frame, settings)
    pass_length = _pass_length(offsets)
    # Plain object arrays, once: pandas' per-row access (to_dict, iterrows) costs more than sending.
    columns = {str(name): frame[name].to_numpy(dtype=object) for name in frame.columns}
    count, pass_no = 0, 0
    while settings.limit is None or count < settings.limit:
        order = _pass_order(len(frame), settings, pass_no)
        for position, row in _rows_in_order(columns, order, pass_no):
            if settings.limit is not None and count >= settings.limit:
                return
            yield _due(count, position, pass_no, offsets, pass_length, settings), row
            count += 1
        if not settings.loop:
            return
        pass_no += 1


def _pass_length(offsets: np.ndarray | None) -> float:
    """A --speedup pass lasts its span plus one mean gap, so a looped file does not double its last row."""
    if offsets is None or len(offsets) == 0:
        return 0.0
    span = float(offsets[-1])
    return span + (span / (len(offsets) - 1) if len(offsets) > 1 else 1.0)


def _pass_order(rows: int, settings: ReplaySettings, pass_no: int) -> np.ndarray:
    if not settings.shuffle:
        return np.arange(rows)
    return np.random.default_rng(settings.seed + pass_no).permutation(rows)


def _rows_in_order(
    columns: dict[str, np.ndarray], order: np.ndarray, pass_no: int, block: int = 1000
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows as dicts without missing values, a block at a time so huge files start sending at once."""
    names = list(columns)
    for start in range(0, len(order), block):
        positions = order[start : start + block]
        block_rows = zip(*(a[positions] for a in columns.values()), strict=True)
        for position, values in zip(positions, block_rows, strict=True):
            yield int(position), _present(dict(zip(names, values, strict=True)), pass_no)


def _present(record: dict[str, Any], pass_no: int) -> dict[str, Any]:
    # `v == v` is False only for NaN/NaT: missing cells are left out instead of sent as null.
    row = {k: v for k, v in record.items() if v is not None and v == v}
    if pass_no and "id" in row:
        row["id"] = f"{row['id']}#{pass_no}"  # a looped file must not repeat ids
    return row


def _due(
    count: int,
    position: int,
    pass_no: int,
    offsets: np.ndarray | None,
    pass_length: float,
    settings: ReplaySettings,
) -> float:
    if settings.rate:
        return count / settings.rate
    if offsets is not None:
        return pass_no * pass_length + float(offsets[position])
    return 0.0


async def replay(
    path: str | Path,
    kafka: KafkaSettings,
    producer_settings: ProducerSettings,
    settings: ReplaySettings,
    *,
    progress: bool = True,
    stop: asyncio.Event | None = None,
) -> ReplayResult:
    """Replay the dataset at `path` into `kafka.topic`; set `stop` to end early (what was sent is flushed)."""
    check_options(settings)
    result = ReplayResult()
    frame = load_rows(path, settings, result)
    total = settings.limit if settings.limit or settings.loop else len(frame)
    async with TweetProducer(kafka, producer_settings) as producer:
        began = time.monotonic()
        try:
            await pump(producer, planned_rows(frame, settings), settings, result, stop or asyncio.Event(),
                        _progress_bar(total, kafka.topic, progress))  # fmt: skip
        finally:
            await producer.flush()
            result.elapsed_s = time.monotonic() - began
    return result


def _progress_bar(total: int | None, topic: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=f"replay -> {topic}",
        unit="msg",
        disable=not enabled,
        smoothing=0.1,
        mininterval=0.5,
    )


async def pump(
    producer: TweetProducer,
    rows: Iterator[tuple[float, dict[str, Any]]],
    settings: ReplaySettings,
    result: ReplayResult,
    stop: asyncio.Event,
    bar: Any,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Send rows as they fall due, batching everything due within one tick.

    `clock` and `sleep` are the pacing's only view of time (tests pass a simulated one).
    """
    start = clock()
    pending = next(rows, None)
    with bar:
        while pending is not None and not stop.is_set():
            wait = pending[0] - (clock() - start)
            if wait > 0:
                await sleep(min(wait, MAX_SLEEP_S))
                continue
            horizon = clock() - start + TICK_S
            batch = [pending[1]]
            pending = next(rows, None)
            while pending is not None and pending[0] <= horizon and len(batch) < settings.chunk:
                batch.append(pending[1])
                pending = next(rows, None)
            encoded = _encode(batch, settings.strict, result)
            await producer.send_encoded(encoded)
            bar.update(len(encoded))
            await asyncio.sleep(0)  # let the sender task run between chunks
    result.interrupted = stop.is_set()


def _encode(batch: list[dict[str, Any]], strict: bool, result: ReplayResult) -> list[Encoded]:
    """Valid rows as Kafka messages; invalid ones are counted (or fatal under --strict)."""
    encoded = []
    for row in batch:
        try:
            encoded.append(encode_tweet(row))
        except UsageError as exc:
            if strict:
                raise UsageError(
                    f"{exc} (row {row.get('text', '')[:40]!r}); fix it or drop --strict"
                ) from None
            result.invalid += 1
            if len(result.invalid_reasons) < ROWS_SHOWN:
                result.invalid_reasons.append(str(exc))
    result.sent += len(encoded)
    return encoded
