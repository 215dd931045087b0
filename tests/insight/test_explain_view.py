"""POST /explain's logic: bounded like /predict, and never touching the stream's engine."""

from __future__ import annotations

import orjson
import pytest

from model.engines.vader_engine import VaderEngine
from model.explain import ExplainSettings
from model.settings import ModelSettings
from stream.explain_view import MAX_WAITING, ExplainService
from stream.web import HttpError


class StreamEngine(VaderEngine):
    """The worker's engine: its backend and name may be read, it must never be called from /explain."""

    def predict(self, texts):
        raise AssertionError("/explain used the stream's engine")


@pytest.fixture
def service() -> ExplainService:
    service = ExplainService(StreamEngine(), ModelSettings(backend="vader"), ExplainSettings(max_texts=3))
    yield service
    service.close()


async def test_explains_each_text_with_its_own_engine(service: ExplainService) -> None:
    answer = await service.answer(orjson.dumps({"texts": ["what a great day", "awful service"]}))
    assert answer["method"] == "occlusion" and answer["model"] == "vader@3.3.2"
    first, second = answer["explanations"]
    assert (
        first["label"] == "positive" and max(first["tokens"], key=lambda t: t["weight"])["token"] == "great"
    )
    assert second["label"] == "negative" and [t["token"] for t in second["tokens"]] == ["awful", "service"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b'{"texts": []}', 422),
        (b'{"texts": [1]}', 422),
        (orjson.dumps({"texts": ["a", "b", "c", "d"]}), 413),  # more than max_texts
    ],
)
async def test_bad_requests_get_a_4xx_with_a_reason(
    service: ExplainService, body: bytes, status: int
) -> None:
    with pytest.raises(HttpError) as caught:
        await service.answer(body)
    assert caught.value.status == status and caught.value.error


async def test_too_many_at_once_get_429(service: ExplainService) -> None:
    service.in_flight = MAX_WAITING
    with pytest.raises(HttpError) as caught:
        await service.answer(b'{"texts": ["fine"]}')
    assert caught.value.status == 429
