"""'Try it': score texts through the worker's POST /predict, or locally through `model/` without one.

The dashboard never does model math itself: either the worker scores (the model it serves), or
`model.engines` does in this process when no worker answers.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

PREDICT_CHUNK = 256  # the worker's default max_predict_texts
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class WorkerUnavailableError(Exception):
    """No worker answered at the configured URL."""


@dataclass(frozen=True)
class Scored:
    """Predictions of a batch of texts and who made them."""

    predictions: list[dict]  # {"label", "score", "scores"} or {"error"} per text, in order
    model: str
    source: str  # "worker at URL" or "this dashboard (model/)"


def score_with_worker(worker_url: str, texts: Sequence[str], timeout: float = 30.0) -> Scored:
    """Score through the worker's POST /predict, in chunks it accepts."""
    import requests

    predictions: list[dict] = []
    model = "?"
    for start in range(0, len(texts), PREDICT_CHUNK):
        chunk = list(texts[start : start + PREDICT_CHUNK])
        try:
            response = requests.post(
                f"{worker_url.rstrip('/')}/predict", json={"texts": chunk}, timeout=timeout
            )
        except requests.RequestException as exc:
            raise WorkerUnavailableError(str(exc)) from None
        if response.status_code >= 500 or response.status_code == 404:
            raise WorkerUnavailableError(f"worker answered {response.status_code}")
        body = response.json()
        if response.status_code != 200:
            raise ValueError(body.get("error", f"worker answered {response.status_code}"))
        predictions.extend(body["predictions"])
        model = body.get("model", model)
    return Scored(predictions, model, f"worker at {worker_url}")


def score_with_engine(engine, texts: Sequence[str]) -> Scored:
    """Score with a `model.engines` engine loaded in this process."""
    predictions = [
        {"label": p.label, "score": p.score, "scores": p.scores} if p.ok else {"error": p.error}
        for p in engine.predict(list(texts))
    ]
    return Scored(predictions, engine.name, "this dashboard (model/, no worker answered)")


def score_texts(worker_url: str, texts: Sequence[str], local_engine: Callable[[], object]) -> Scored:
    """The worker's verdict when a worker answers, else the local engine's (`local_engine()` loads it)."""
    try:
        return score_with_worker(worker_url, texts)
    except WorkerUnavailableError:
        return score_with_engine(local_engine(), texts)


def probabilities_frame(prediction: dict) -> pd.DataFrame:
    """One row per label with its probability, most probable first."""
    scores = prediction.get("scores") or {}
    frame = pd.DataFrame({"label": list(scores), "probability": list(scores.values())})
    return frame.sort_values("probability", ascending=False, ignore_index=True)


def read_upload(data: bytes, limit_bytes: int, max_rows: int) -> tuple[pd.DataFrame, bool]:
    """An uploaded CSV as plain strings (data only, never evaluated); (frame, was_cut_to_max_rows)."""
    if len(data) > limit_bytes:
        raise ValueError(f"the file is {len(data) / 1e6:.1f} MB; upload at most {limit_bytes / 1e6:.0f} MB")
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, nrows=max_rows + 1)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"could not read it as CSV ({exc}); upload a UTF-8 CSV with a header row") from None
    if frame.empty or len(frame.columns) == 0:
        raise ValueError("the CSV has no rows; upload a CSV with a header row and one text per row")
    return frame.head(max_rows), len(frame) > max_rows


def with_predictions(frame: pd.DataFrame, text_col: str, scored: Scored) -> pd.DataFrame:
    """`frame` plus label, score, one probability column per label, and error."""
    out = frame.copy()
    out["label"] = [p.get("label") for p in scored.predictions]
    out["score"] = [p.get("score") for p in scored.predictions]
    labels = sorted({label for p in scored.predictions for label in (p.get("scores") or {})})
    for label in labels:
        out[f"p_{label}"] = [(p.get("scores") or {}).get(label) for p in scored.predictions]
    out["error"] = [p.get("error") for p in scored.predictions]
    out["model"] = scored.model
    return out


def to_safe_csv(frame: pd.DataFrame) -> bytes:
    """CSV bytes where no cell can run as a spreadsheet formula (OWASP: prefix such cells with ')."""
    safe = frame.map(lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v)
    return safe.to_csv(index=False).encode("utf-8")
