"""Web views on Faust's own web server: GET /health, /live, /ready, /metrics, POST /predict.

/predict and /explain use the model, so they require `Authorization: Bearer <token>` when a token
is configured (--api-token-file), which it must be when the views are bound beyond loopback
(`check_web_access`, at start). /live, /ready, /metrics and /health stay open for probes and
Prometheus; /health shows no credentials or user names.

/predict scores with the worker's loaded engine on the worker's inference thread (the engine is
never used by two threads at once), behind any waiting stream batch. It is bounded in concurrency
(429), body size (413), text count (413, checked before the texts are validated) and body-read
time (408). Malformed requests get a 4xx with a short JSON error, never a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from pydantic import ValidationError

from sentistream.errors import UsageError
from stream.decode import describe_validation_error
from stream.worker.agent import Scorer
from stream.worker.health import Limits, liveness, readiness
from stream.worker.inference import WEB
from stream.worker.scoring import predict_guarded
from stream.worker_api import PredictRequest, PredictResponse, openapi_document

PREDICT_HINT = 'send {"texts": ["a text", ...]}'
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class HttpError(Exception):
    """A request the client must fix: its status and a one-line reason."""

    status: int
    error: str


def health_report(scorer: Scorer, now: float | None = None) -> tuple[bool, bool, dict]:
    """(alive, ready, details) from the scorer's own state (see stream/worker/health.py)."""
    now = time.monotonic() if now is None else now
    state = scorer.state
    lag = scorer.update_lag()
    busy = scorer.inference.stuck_for(now)
    limits = Limits(scorer.settings.stall_timeout_s, scorer.settings.inference_timeout_s)
    dead = liveness(state, lag, busy, limits, now)
    waiting = readiness(state, scorer.engine is not None)
    alive, ready = not dead, not dead and not waiting
    return (
        alive,
        ready,
        {
            "status": "ready" if ready else ("unhealthy" if dead else "starting"),
            "problems": dead + waiting,
            "model": scorer.engine.name if scorer.engine else None,
            "backend": scorer.engine.backend if scorer.engine else None,
            "models": scorer.models.describe(),
            "partitions": state.assigned or [],
            "in_flight": scorer.in_flight,
            "batches": scorer.batches,
            "lag": lag,
        },
    )


def is_loopback(host: str) -> bool:
    """True when `host` (web_host) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def read_api_token(path: Path | None) -> str | None:
    """The bearer token in `path` (None: no token); UsageError when it cannot be read or is short."""
    if path is None:
        return None
    try:
        token = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"cannot read --api-token-file {path}: {reason}") from None
    if len(token) < 16:
        raise UsageError(
            f"the token in --api-token-file {path} has {len(token)} characters; use 16 or more "
            "(openssl rand -hex 32)"
        )
    return token


def check_web_access(settings) -> str | None:
    """The token /predict and /explain require (None: none), or UsageError when the views would be
    bound beyond loopback with no token and the operator did not say --public-web-without-token."""
    token = read_api_token(settings.api_token_file)
    if token is None and not is_loopback(settings.web_host) and not settings.public_web_without_token:
        raise UsageError(
            f"--web-host {settings.web_host} serves /predict and /explain beyond this machine: give "
            "--api-token-file (or SENTISTREAM_API_TOKEN_FILE), or say --public-web-without-token"
        )
    return token


def authorized(header: str | None, token: str | None) -> bool:
    """True when no token is required, or `header` is `Bearer <token>` (compared in constant time)."""
    if token is None:
        return True
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def require_token(request, token: str | None) -> None:
    """HttpError 401 unless `request` carries the bearer token."""
    if not authorized(request.headers.get("Authorization"), token):
        raise HttpError(401, "send Authorization: Bearer <token> (the worker's --api-token-file)")


def parse_predict(body: bytes, max_texts: int) -> list[str]:
    """The texts of a /predict body, or HttpError saying what is wrong with it."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, bounded(f"body is not JSON ({exc}); {PREDICT_HINT}")) from None
    if not isinstance(data, dict):
        raise HttpError(422, f"body is a JSON {type(data).__name__}, not an object; {PREDICT_HINT}")
    texts = data.get("texts")
    # The count is checked before the items are validated, so a huge list costs no validation.
    if isinstance(texts, list) and len(texts) > max_texts:
        raise HttpError(413, f"{len(texts)} texts in one request; send at most {max_texts}")
    try:
        return PredictRequest.model_validate(data).texts
    except ValidationError as exc:
        raise HttpError(422, bounded(describe_validation_error(exc, PREDICT_HINT))) from None


def bounded(error: str, chars: int = MAX_ERROR_CHARS) -> str:
    """`error`, cut to `chars` so an error body stays small whatever the request held."""
    return error if len(error) <= chars else error[: chars - 1] + "…"


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
    """Score `texts` on the inference thread, after any waiting stream batch; per-text failures
    are reported, not raised."""
    predictions = await scorer.inference.run(WEB, predict_guarded, scorer.engine, texts)
    answer = {
        "model": scorer.engine.name,
        "predictions": [
            {"label": p.label, "score": p.score, "scores": p.scores, "truncated": p.truncated}
            if p.ok
            else {"error": p.error}
            for p in predictions
        ],
    }
    return PredictResponse.model_validate(answer).model_dump(mode="json", exclude_unset=True)


def register_views(app, scorer: Scorer) -> None:
    """Add /health, /metrics and /predict to `app` (a faust.App)."""
    from faust.web import View

    settings, metrics = scorer.settings, scorer.metrics

    @app.page("/health")
    class Health(View):
        """Ready and alive: what /health always meant (200 once the worker serves)."""

        async def get(self, request):
            _, ready, details = health_report(scorer)
            return self.json(details, status=200 if ready else 503)

    @app.page("/live")
    class Live(View):
        """Liveness (a Kubernetes livenessProbe): 503 only when a restart would help."""

        async def get(self, request):
            alive, _, details = health_report(scorer)
            return self.json(details, status=200 if alive else 503)

    @app.page("/ready")
    class Ready(View):
        """Readiness (a readinessProbe): 503 while starting or rebalancing."""

        async def get(self, request):
            _, ready, details = health_report(scorer)
            return self.json(details, status=200 if ready else 503)

    @app.page("/openapi.json")
    class OpenApi(View):
        """The API's description (open, like the probes): generated from the request/response models."""

        async def get(self, request):
            return self.json(openapi_document())

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request):
            # The type prometheus_client's own server gives this text (CONTENT_TYPE_LATEST would
            # announce format 1.0.0); a header, since aiohttp refuses a charset in content_type=.
            return self.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    gate = PredictGate(settings.max_predict_concurrency)
    token = read_api_token(settings.api_token_file)

    @app.page("/predict")
    class Predict(View):
        async def post(self, request):
            try:
                require_token(request, token)
                with gate:
                    body = await read_body_within(
                        request, settings.max_predict_bytes, settings.predict_read_timeout_s
                    )
                    answer = await predict_texts(scorer, parse_predict(body, settings.max_predict_texts))
            except HttpError as exc:
                metrics.predict_requests.labels(str(exc.status)).inc()
                return self.json({"error": exc.error}, status=exc.status)
            metrics.predict_requests.labels("200").inc()
            return self.json(answer)


class PredictGate:
    """At most `limit` requests inside at once; the next one gets 429 at once, not a queue."""

    def __init__(self, limit: int) -> None:
        self.limit, self.inside = limit, 0

    def __enter__(self) -> PredictGate:
        if self.inside >= self.limit:
            raise HttpError(429, f"{self.limit} /predict requests are being served; retry shortly")
        self.inside += 1
        return self

    def __exit__(self, *exc_info) -> None:
        self.inside -= 1


async def read_body_within(request, limit: int, timeout_s: float) -> bytes:
    """`read_body`, or HttpError 408 when the client takes longer than `timeout_s` to send it."""
    try:
        return await asyncio.wait_for(read_body(request, limit), timeout_s)
    except TimeoutError:
        raise HttpError(408, f"the body did not arrive within {timeout_s:.0f}s; send it at once") from None
