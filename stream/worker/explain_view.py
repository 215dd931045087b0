"""POST /explain on the worker: word weights for a few texts, off the stream's inference path.

Bounded like /predict (the same body limit, at most `ExplainSettings.max_texts` texts) and more: it
requires the same bearer token, explains one request at a time (the next gets 429 while one runs),
answers 503 when an explanation runs past `explain_timeout_s`, and runs on a niced thread of its own
with a model of its own (loaded on the first request), so explanations never wait behind, or
starve, the scoring of the stream: integrated gradients cost a hundred forward passes a text.

`sentistream worker` registers it right after `create_app` (stream/worker/cli.py).
"""

from __future__ import annotations

import asyncio
import logging

from model.explain import Explainer, ExplainSettings, explainer_for
from stream.worker.inference import WEB, InferenceThread
from stream.worker.web import (
    HttpError,
    bounded,
    parse_predict,
    read_api_token,
    read_body_within,
    require_token,
)
from stream.worker_api import ExplainResponse

log = logging.getLogger(__name__)

EXPLAIN_NICE = 15  # below the stream (0) and the shadow (10): explanations get what is left
DEFAULT_TIMEOUT_S = 30.0


class ExplainService:
    """Loads the explainer on first use and runs every explanation on its own thread."""

    def __init__(
        self,
        engine,
        model_settings,
        settings: ExplainSettings | None = None,
        current=None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        # `engine`: the worker's, read only for its backend; no reference is kept (a swapped-out
        # engine must be freed). `current()`: (engine, model path) serving now.
        self.model_settings, self.timeout_s = model_settings, timeout_s
        self.current = current or (lambda: (engine, model_settings.model))
        self.settings = settings or ExplainSettings()
        self.thread = InferenceThread("explain", nice=EXPLAIN_NICE)
        self.explainer: Explainer | None = None
        self.explains: tuple[str, str | None] | None = None  # (model_version, path) it was built for
        self.model_name: str | None = None
        self._running: asyncio.Future | None = None

    def _load(self) -> Explainer:
        engine, model = self.current()
        wanted = (engine.model_version, model)
        if self.explainer is not None and self.explains != wanted:  # a deployment swapped the model
            self.forget()
        if self.explainer is None:
            own = engine
            settings = self.model_settings.model_copy(update={"model": model})
            if engine.backend != "torch":
                own = settings.load_engine()  # occlusion calls it: a second engine, not the stream's
            self.explainer = explainer_for(own, model, self.settings)
            self.explains, self.model_name = wanted, engine.name
            log.info("explanations by %s for %s", self.explainer.method, engine.name)
        return self.explainer

    def forget(self) -> None:
        """Drop the explainer and its model (on the explain thread, or when it is idle)."""
        if self.explainer is not None:
            self.explainer.close()
        self.explainer = self.explains = None

    def _explain(self, texts: list[str]) -> dict:
        explainer = self._load()
        answer = {
            "model": self.model_name,
            "method": explainer.method,
            "explanations": [e.to_json() for e in explainer.explain(texts)],
        }
        return ExplainResponse.model_validate(answer).model_dump(mode="json")

    async def answer(self, body: bytes) -> dict:
        """The JSON answer for a request body, or HttpError (429 while another runs, 503 past the cap)."""
        texts = parse_predict(body, self.settings.max_texts)
        if self._running is not None and not self._running.done():
            raise HttpError(429, "an explanation is in progress; retry in a few seconds")
        self._running = asyncio.ensure_future(self.thread.run(WEB, self._explain, texts))
        try:
            # shield: past the cap the request is answered, but the thread finishes its work (it
            # cannot be interrupted) and the next request waits for it (429).
            return await asyncio.wait_for(asyncio.shield(self._running), self.timeout_s)
        except TimeoutError:
            raise HttpError(
                503, f"the explanation took over {self.timeout_s:.0f}s; send fewer or shorter texts"
            ) from None

    def close(self) -> None:
        """Stop the thread and drop the model."""
        self.thread.shutdown()
        self.forget()


def register_explain_view(
    app, scorer, model_settings, settings: ExplainSettings | None = None
) -> ExplainService:
    """Add POST /explain to `app` (a faust.App) next to /predict."""
    from faust.web import View

    models, worker = scorer.models, scorer.settings
    service = ExplainService(
        scorer.engine,
        model_settings,
        settings,
        current=lambda: (models.engine, models.model_path),
        timeout_s=worker.explain_timeout_s,
    )
    # After a swap the explainer's model goes too (on the explain thread, after any explanation).
    models.on_swap.append(lambda: service.thread.submit(WEB, service.forget))
    limit, timeout_s = worker.max_predict_bytes, worker.predict_read_timeout_s
    token = read_api_token(worker.api_token_file)

    @app.page("/explain")
    class Explain(View):
        async def post(self, request):
            try:
                require_token(request, token)
                return self.json(await service.answer(await read_body_within(request, limit, timeout_s)))
            except HttpError as exc:
                return self.json({"error": bounded(exc.error)}, status=exc.status)

    return service
