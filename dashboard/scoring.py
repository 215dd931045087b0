"""'Try it': score texts through the worker's POST /predict, or locally through `model/` without one.

The dashboard never does model math itself: either the worker scores (the model it serves), or
`model.engines` does in this process when no worker answers. Uploads are untrusted: bounded in
bytes, columns, cells and characters per cell before anything is scored, and written back so no
cell or header can run as a spreadsheet formula.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import orjson
import pandas as pd

from model.engines.base import Prediction, failed
from model.predictions import with_predictions
from stream.worker_api import MAX_PREDICT_BYTES, MAX_PREDICT_TEXTS

# The worker's /predict limits (its defaults): a request over either is answered 413.
PREDICT_MAX_TEXTS = MAX_PREDICT_TEXTS  # the worker's default limits (stream/worker_api.py)
PREDICT_MAX_BYTES = MAX_PREDICT_BYTES
_ENVELOPE = len(b'{"texts":[]}')
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
MAX_ERROR_CHARS = 300


class WorkerUnavailableError(Exception):
    """No worker answered at the configured URL."""


class WorkerRefusedError(Exception):
    """The worker answered but refused the request (413 too large, 400 bad body, 429 busy)."""


@dataclass(frozen=True)
class Scored:
    """Predictions of a batch of texts and who made them."""

    predictions: list[Prediction]  # one per text, in order; failed ones have `error`
    labels: list[str]
    model: str
    source: str  # "worker at URL" or "this dashboard (model/)"


def chunks(
    texts: Sequence[str], max_texts: int = PREDICT_MAX_TEXTS, max_bytes: int = PREDICT_MAX_BYTES
) -> Iterator[list[str]]:
    """`texts` in order, in runs whose /predict body stays within both of the worker's limits."""
    chunk: list[str] = []
    size = _ENVELOPE
    for text in texts:
        cost = len(orjson.dumps(text)) + 1  # the text as JSON, and its comma
        if chunk and (len(chunk) == max_texts or size + cost > max_bytes):
            yield chunk
            chunk, size = [], _ENVELOPE
        chunk.append(text)
        size += cost
    if chunk:
        yield chunk


CONNECT_TIMEOUT_S = 3.0


def score_with_worker(
    worker_url: str, texts: Sequence[str], timeout: float = 30.0, token: str | None = None
) -> Scored:
    """Score through the worker's POST /predict, one request per chunk it accepts."""
    predictions: list[Prediction] = []
    model = "?"
    for chunk in chunks(texts):
        body = _post_predict(worker_url, orjson.dumps({"texts": chunk}), timeout, token)
        answers = body.get("predictions") if isinstance(body, dict) else None
        if not isinstance(answers, list) or len(answers) != len(chunk):
            raise WorkerRefusedError(
                "the worker's answer has no prediction per text; is it a Sentistream worker?"
            )
        predictions.extend(_prediction(answer) for answer in answers)
        model = str(body.get("model", model))
    return Scored(predictions, _labels_of(predictions), model, f"worker at {worker_url}")


def _post_predict(worker_url: str, body: bytes, timeout: float, token: str | None = None) -> object:
    import requests

    from dashboard.settings import bearer

    try:
        response = requests.post(
            f"{worker_url.rstrip('/')}/predict",
            data=body,
            headers={"Content-Type": "application/json", **bearer(token)},
            # Connecting gets 3 s: a Service with no endpoints (workers scaled to zero) may drop the
            # connection instead of refusing it, and "Try it" should fall back to local scoring fast.
            timeout=(CONNECT_TIMEOUT_S, timeout),
        )
    except requests.RequestException as exc:
        raise WorkerUnavailableError(str(exc)) from None
    if response.status_code >= 500 or response.status_code == 404:
        raise WorkerUnavailableError(f"worker answered {response.status_code}")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200:
        reason = answer.get("error") if isinstance(answer, dict) else None
        reason = str(reason or response.reason or "no reason given")[:MAX_ERROR_CHARS]
        raise WorkerRefusedError(f"the worker refused the request ({response.status_code}): {reason}")
    return answer


def _prediction(answer: object) -> Prediction:
    if not isinstance(answer, dict):
        return failed("the worker sent no prediction for this text")
    if "error" in answer:
        return failed(str(answer["error"])[:MAX_ERROR_CHARS])
    scores = answer.get("scores") if isinstance(answer.get("scores"), dict) else {}
    return Prediction(
        label=str(answer.get("label")),
        score=answer.get("score"),
        scores=scores,
        truncated=bool(answer.get("truncated", False)),
    )


def _labels_of(predictions: Sequence[Prediction]) -> list[str]:
    return list(dict.fromkeys(label for p in predictions for label in p.scores))


def score_with_engine(engine, texts: Sequence[str]) -> Scored:
    """Score with a `model.engines` engine loaded in this process."""
    predictions = engine.predict(list(texts))
    return Scored(
        predictions, list(engine.labels), engine.name, "this dashboard (model/, no worker answered)"
    )


def score_texts(
    worker_url: str, texts: Sequence[str], local_engine: Callable[[], object], token: str | None = None
) -> Scored:
    """The worker's verdict when a worker answers, else the local engine's (`local_engine()` loads it).
    `token`: the workers' bearer token, when they require one."""
    try:
        return score_with_worker(worker_url, texts, token=token)
    except WorkerUnavailableError:
        return score_with_engine(local_engine(), texts)


def merge(parts: Sequence[Scored]) -> Scored:
    """Several chunks' results as one, in order."""
    predictions = [p for part in parts for p in part.predictions]
    labels = list(dict.fromkeys(label for part in parts for label in part.labels))
    return Scored(predictions, labels, parts[-1].model, parts[-1].source)


def probabilities_frame(prediction: Prediction) -> pd.DataFrame:
    """One row per label with its probability, most probable first."""
    scores = prediction.scores or {}
    frame = pd.DataFrame({"label": list(scores), "probability": list(scores.values())})
    return frame.sort_values("probability", ascending=False, ignore_index=True)


@dataclass(frozen=True)
class Upload:
    """An uploaded CSV as plain strings, and what was cut to keep it within the limits."""

    frame: pd.DataFrame
    rows_cut: bool  # only the first rows are kept (row or cell limit)
    cells_cut: int  # cells cut to the per-cell character limit


def read_upload(
    data: bytes,
    limit_bytes: int,
    max_rows: int,
    max_columns: int = 100,
    max_cells: int = 1_000_000,
    max_cell_chars: int = 10_000,
) -> Upload:
    """An uploaded CSV as plain strings (data only, never evaluated), within every limit."""
    if len(data) > limit_bytes:
        raise ValueError(f"the file is {len(data) / 1e6:.1f} MB; upload at most {limit_bytes / 1e6:.0f} MB")
    try:
        header = pd.read_csv(io.BytesIO(data), dtype=str, nrows=0)
        columns = len(header.columns)
        if columns > max_columns:
            raise ValueError(f"the CSV has {columns:,} columns; upload at most {max_columns:,}")
        rows = max(1, min(max_rows, max_cells // max(columns, 1)))
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, nrows=rows + 1)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0][:MAX_ERROR_CHARS] if str(exc) else type(exc).__name__
        raise ValueError(
            f"could not read it as CSV ({reason}); upload a UTF-8 CSV with a header row"
        ) from None
    if frame.empty or len(frame.columns) == 0:
        raise ValueError("the CSV has no rows; upload a CSV with a header row and one text per row")
    rows_cut, frame = len(frame) > rows, frame.head(rows)
    too_long = frame.map(lambda v: isinstance(v, str) and len(v) > max_cell_chars)
    cut = int(too_long.to_numpy().sum())
    if cut:
        frame = frame.map(lambda v: v[:max_cell_chars] if isinstance(v, str) else v)
    frame.columns = [str(c)[:max_cell_chars] for c in frame.columns]
    return Upload(frame, rows_cut, cut)


def scored_upload(frame: pd.DataFrame, scored: Scored) -> pd.DataFrame:
    """The upload plus predicted_label/predicted_score/score_<label>/..., as `predict --input` writes."""
    return with_predictions(frame, scored.predictions, scored.labels, scored.model)


def to_safe_csv(frame: pd.DataFrame) -> bytes:
    """CSV bytes where no cell or header can run as a spreadsheet formula (OWASP: prefix with ')."""
    safe = frame.map(_defused)
    safe.columns = [_defused(str(c)) for c in frame.columns]
    return safe.to_csv(index=False).encode("utf-8")


def _defused(value: object) -> object:
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value
