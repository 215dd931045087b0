"""Web views on Faust's own web server: GET /health, GET /metrics, POST /predict.

/predict scores with the worker's loaded engine on the worker's inference thread (the engine is
never used by two threads at once). Malformed requests get a 4xx with a JSON error, never a 500.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from stream.agents import Scorer
from stream.decode import describe_validation_error
from stream.scoring import predict_guarded

PREDICT_HINT = 'send {"texts": ["a text", ...]}'
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"  # aiohttp adds the charset itself


class PredictRequest(BaseModel):
    """The body of POST /predict."""

    model_config = ConfigDict(extra="forbid")

    texts: list[StrictStr] = Field(min_length=1)


@dataclass(frozen=True)
class HttpError(Exception):
    """A request the client must fix: its status and a one-line reason."""

    status: int
    error: str


def health_report(app, scorer: Scorer) -> tuple[bool, dict]:
    """(ready, details): ready once the model is loaded and the consumer has its partitions."""
    assigned = _assigned_partitions(app, scorer.kafka.topic)
    ready = scorer.engine is not None and assigned is not None and not app.rebalancing
    return ready, {
        "status": "ready" if ready else "starting",
        "model": scorer.engine.name if scorer.engine else None,
        "backend": scorer.engine.backend if scorer.engine else None,
        "partitions": assigned or [],
        "in_flight": scorer.in_flight,
        "batches": scorer.batches,
    }


def _assigned_partitions(app, topic: str) -> list[str] | None:
    """`topic[partition]` strings of the current assignment, None before the first rebalance ends."""
    if not getattr(app, "sentistream_assigned", False):
        return None
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in app.consumer.assignment() if tp.topic == topic)


def parse_predict(body: bytes, max_texts: int) -> list[str]:
    """The texts of a /predict body, or HttpError saying what is wrong with it."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"body is not JSON ({exc}); {PREDICT_HINT}") from None
    if not isinstance(data, dict):
        raise HttpError(422, f"body is a JSON {type(data).__name__}, not an object; {PREDICT_HINT}")
    try:
        texts = PredictRequest.model_validate(data).texts
    except ValidationError as exc:
        raise HttpError(422, describe_validation_error(exc, PREDICT_HINT)) from None
    if len(texts) > max_texts:
        raise HttpError(413, f"{len(texts)} texts in one request; send at most {max_texts}")
    return texts


async def read_body(request, limit: int) -> bytes:
    """The request body, or HttpError 413 as soon as it exceeds `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, f"body is {request.content_length} bytes; send at most {limit}")
    chunks, size = [], 0
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"body is over {limit} bytes; send at most {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


async def predict_texts(scorer: Scorer, texts: list[str]) -> dict:
    """Score `texts` on the inference thread; per-text failures are reported, not raised."""
    loop = asyncio.get_running_loop()
    predictions = await loop.run_in_executor(scorer.executor, predict_guarded, scorer.engine, texts)
    return {
        "model": scorer.engine.name,
        "predictions": [
            {"label": p.label, "score": p.score, "scores": p.scores, "truncated": p.truncated}
            if p.ok
            else {"error": p.error}
            for p in predictions
        ],
    }


def register_views(app, scorer: Scorer) -> None:
    """Add /health, /metrics and /predict to `app` (a faust.App)."""
    from faust.web import View

    settings, metrics = scorer.settings, scorer.metrics

    @app.page("/health")
    class Health(View):
        async def get(self, request):
            ready, details = health_report(app, scorer)
            return self.json(details, status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request):
            return self.bytes(metrics.render(), content_type=PROMETHEUS_CONTENT_TYPE)

    @app.page("/predict")
    class Predict(View):
        async def post(self, request):
            try:
                body = await read_body(request, settings.max_predict_bytes)
                answer = await predict_texts(scorer, parse_predict(body, settings.max_predict_texts))
            except HttpError as exc:
                metrics.predict_requests.labels(str(exc.status)).inc()
                return self.json({"error": exc.error}, status=exc.status)
            metrics.predict_requests.labels("200").inc()
            return self.json(answer)
