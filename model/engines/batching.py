"""Batching that wastes nothing: sort by token length, cut by a token budget, pad to each batch's longest.

The flow of one `predict` call: validate and clean every text (bad ones get their error now), then
in chunks: tokenise without padding, sort by length, cut batches so that batch size x longest text
stays within `max_batch_tokens`, pad each batch to its own longest text. The next chunk is prepared
on a worker thread while the device runs the current one, and results are scattered back to input
order. The engine's forward pass returns logits; the one softmax of every engine is here, after
dividing each row by the bundle's calibrated temperature of its predicted label
(`model.calibration`), so PyTorch and both ONNX graphs serve the same calibrated probabilities.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.calibration import calibrated
from model.cleaning import CleaningOptions, clean_batch, validate_text
from model.engines.base import Prediction, failed, from_probabilities

DEFAULT_BATCH_TOKENS = 16_384  # a GPU wants big passes to fill its cores
# A CPU wants small ones: on 2 cores, MiniLM int8 ONNX scored 1,044 tweets/s at 512-token passes,
# 955 at 1,024 and 547 at 16,384 (activations stop fitting in cache); PyTorch 247 vs 132.
DEFAULT_CPU_BATCH_TOKENS = 1_024
DEFAULT_BATCH_SIZE = 512
DEFAULT_CHUNK_TEXTS = 2_048


@dataclass(frozen=True)
class Screened:
    """A text that passed validation, cleaned, with its position in the caller's input."""

    index: int
    text: str
    truncated: bool


@dataclass(frozen=True)
class TokenBatch:
    """One forward pass: padded token ids and mask, and the input positions of its rows."""

    indices: list[int]
    input_ids: np.ndarray  # (rows, longest) int64
    attention_mask: np.ndarray  # (rows, longest) int64, 0 on padding
    truncated: list[bool]
    payload: Any = None  # whatever the engine's `collate` made of the arrays (e.g. pinned tensors)


def screen(texts: Sequence[object], options: CleaningOptions) -> tuple[list[Screened], dict[int, str]]:
    """Validate and clean each text: (usable texts, {input position: error})."""
    errors: dict[int, str] = {}
    usable: list[tuple[int, str]] = []
    for i, value in enumerate(texts):
        error = validate_text(value)
        if error is None:
            usable.append((i, value))  # type: ignore[arg-type]  # validate_text proved it is a str
        else:
            errors[i] = error
    cleaned = clean_batch([text for _, text in usable], options)
    screened = []
    for (i, _), c in zip(usable, cleaned, strict=True):
        if c.text:
            screened.append(Screened(i, c.text, c.truncated))
        else:
            errors[i] = "text is empty after cleaning (only markup or whitespace)"
    return screened, errors


def plan_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Positions grouped by similar length, each group's count x longest <= max_batch_tokens.

    A single text longer than the budget still gets a batch of its own.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        # Sorted ascending, so lengths[i] is the longest of the batch if it joins.
        if current and ((len(current) + 1) * lengths[i] > max_batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) padded to the longest row, never to a fixed length."""
    longest = max(len(row) for row in rows)
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = row
        mask[r, : len(row)] = 1
    return ids, mask


class TokenBatcher:
    """Runs `forward` over token-budgeted batches of texts; shared by the ONNX and PyTorch engines."""

    def __init__(
        self,
        tokenizer: Any,
        labels: Sequence[str],
        max_length: int,
        cleaning: CleaningOptions,
        max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
        max_batch_size: int = DEFAULT_BATCH_SIZE,
        chunk_texts: int = DEFAULT_CHUNK_TEXTS,
        collate: Callable[[np.ndarray, np.ndarray], Any] | None = None,
        temperatures: float | Sequence[float] = 1.0,
    ) -> None:
        if max_batch_tokens < max_length:
            raise ValueError(
                f"max_batch_tokens ({max_batch_tokens}) must be at least max_length ({max_length})"
            )
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.max_length = max_length
        self.cleaning = cleaning
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.chunk_texts = chunk_texts
        self.collate = collate
        self.temperatures = temperatures  # one T, or one per predicted label in `labels` order
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentistream-tokenize")
        # The Rust tokenizer is not re-entrant and forward passes share one model: one call at a time.
        self._lock = threading.Lock()

    def run(self, texts: Sequence[object], forward: Callable[[TokenBatch], np.ndarray]) -> list[Prediction]:
        """Predictions in input order; `forward` maps a batch to logits (rows x labels), which become
        probabilities as softmax(logits / T), T the temperature of each row's predicted label."""
        with self._lock:
            screened, errors = screen(texts, self.cleaning)
            results: list[Prediction | None] = [None] * len(texts)
            for i, error in errors.items():
                results[i] = failed(error)
            for batch in self._prefetched_batches(screened):
                probs = calibrated(forward(batch), self.temperatures)
                for row, (i, truncated) in enumerate(zip(batch.indices, batch.truncated, strict=True)):
                    results[i] = from_probabilities(self.labels, probs[row].tolist(), truncated)
            return results  # type: ignore[return-value]  # every position was filled above

    def close(self) -> None:
        """Stop the tokenising thread."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _prefetched_batches(self, screened: list[Screened]) -> Iterator[TokenBatch]:
        """Batches of each chunk, with the next chunk prepared on the worker while these run."""
        chunks = [screened[i : i + self.chunk_texts] for i in range(0, len(screened), self.chunk_texts)]
        pending: Future[list[TokenBatch]] | None = (
            self._pool.submit(self.prepare, chunks[0]) if chunks else None
        )
        for k in range(len(chunks)):
            ready = pending.result()  # type: ignore[union-attr]  # set for every k < len(chunks)
            more = k + 1 < len(chunks)
            pending = self._pool.submit(self.prepare, chunks[k + 1]) if more else None
            yield from ready

    def prepare(self, chunk: Sequence[Screened]) -> list[TokenBatch]:
        """Tokenise a chunk without padding, sort and cut it by the token budget, pad each batch."""
        rows, token_truncated = self.tokenize([s.text for s in chunk])
        plan = plan_batches([len(r) for r in rows], self.max_batch_tokens, self.max_batch_size)
        return [self._batch(chunk, rows, token_truncated, members) for members in plan]

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text (cut at max_length) and whether each was cut."""
        if isinstance(self.tokenizer, RustTokenizer):
            return self.tokenizer.encode_rows(texts)
        enc = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            return_overflowing_tokens=True,  # how we learn exactly which texts were cut
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        rows: list[list[int]] = [[] for _ in texts]
        pieces = [0] * len(texts)
        for ids, sample in zip(enc["input_ids"], enc["overflow_to_sample_mapping"], strict=True):
            if pieces[sample] == 0:
                rows[sample] = ids
            pieces[sample] += 1
        return rows, [n > 1 for n in pieces]

    def _batch(
        self, chunk: Sequence[Screened], rows: list[list[int]], cut: list[bool], members: list[int]
    ) -> TokenBatch:
        ids, mask = pad_rows([rows[m] for m in members], self.pad_id)
        return TokenBatch(
            indices=[chunk[m].index for m in members],
            input_ids=ids,
            attention_mask=mask,
            truncated=[chunk[m].truncated or cut[m] for m in members],
            payload=self.collate(ids, mask) if self.collate else None,
        )


class RustTokenizer:
    """A bundle's `tokenizer.json` run by the `tokenizers` library itself, without transformers.

    The transformers fast tokenizer is a wrapper around this same file, so the ids are the same;
    skipping it keeps transformers (and the torch it imports) out of an ONNX worker's start.
    """

    def __init__(self, tokenizer_json: str, pad_token: str, max_length: int) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(tokenizer_json)
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.pad_token_id = self._tokenizer.token_to_id(pad_token)

    def encode_rows(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text (special tokens added, cut at max_length) and whether each was cut."""
        encodings = self._tokenizer.encode_batch(texts)
        return [e.ids for e in encodings], [bool(e.overflowing) for e in encodings]
