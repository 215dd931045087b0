"""POST /explain on the worker: word weights for a few texts, off the stream's inference path.

Bounded like /predict (the same body limit, at most `ExplainSettings.max_texts` texts, and at most
`MAX_WAITING` requests queued), and run on a thread of its own with a model of its own (loaded on
the first request), so explanations never wait behind, or hold up, the scoring of the stream.

`sentistream worker` registers it right after `create_app` (stream/cli.py).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from model.explain import Explainer, ExplainSettings, explainer_for
from stream.web import HttpError, bounded, parse_predict, read_body_within

log = logging.getLogger(__name__)

MAX_WAITING = 4  # requests beyond this many in flight get 429 at once


class ExplainService:
    """Loads the explainer on first use and runs every explanation on its own thread."""

    def __init__(self, engine, model_settings, settings: ExplainSettings | None = None, current=None) -> None:
        # `engine`: the worker's, read only for its backend and device; never called from here.
        # `current()`: (engine, model path) serving now, when deployments can change it.
        self.engine, self.model_settings = engine, model_settings
        self.current = current or (lambda: (engine, model_settings.model))
        self.settings = settings or ExplainSettings()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")
        self.explainer: Explainer | None = None
        self.in_flight = 0

    def _load(self) -> Explainer:
        engine, model = self.current()
        if self.explainer is not None and engine is not self.engine:  # a deployment swapped the model
            self.explainer.close()
            self.explainer = None
        if self.explainer is None:
            self.engine = own = engine
            settings = self.model_settings.model_copy(update={"model": model})
            if engine.backend != "torch":
                own = settings.load_engine()  # occlusion calls it: a second engine, not the stream's
            self.explainer = explainer_for(own, model, self.settings)
            log.info("explanations by %s for %s", self.explainer.method, engine.name)
        return self.explainer

    def _explain(self, texts: list[str]) -> dict:
        explainer = self._load()
        return {
            "model": self.engine.name,
            "method": explainer.method,
            "explanations": [e.to_json() for e in explainer.explain(texts)],
        }

    async def answer(self, body: bytes) -> dict:
        """The JSON answer for a request body, or HttpError."""
        texts = parse_predict(body, self.settings.max_texts)
        if self.in_flight >= MAX_WAITING:
            raise HttpError(429, f"{self.in_flight} explanations in progress; retry in a few seconds")
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._explain, texts)
        finally:
            self.in_flight -= 1

    def close(self) -> None:
        """Stop the thread and drop the model."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.explainer is not None:
            self.explainer.close()


def register_explain_view(
    app, scorer, model_settings, settings: ExplainSettings | None = None
) -> ExplainService:
    """Add POST /explain to `app` (a faust.App) next to /predict."""
    from faust.web import View

    models = scorer.models
    service = ExplainService(
        scorer.engine, model_settings, settings, current=lambda: (models.engine, models.model_path)
    )
    limit, timeout_s = scorer.settings.max_predict_bytes, scorer.settings.predict_read_timeout_s

    @app.page("/explain")
    class Explain(View):
        async def post(self, request):
            try:
                return self.json(await service.answer(await read_body_within(request, limit, timeout_s)))
            except HttpError as exc:
                return self.json({"error": bounded(exc.error)}, status=exc.status)

    return service
