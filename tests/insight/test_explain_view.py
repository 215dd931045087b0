"""POST /explain's logic: bounded like /predict, and never touching the stream's engine."""

from __future__ import annotations

import orjson
import pytest

from model.engines.vader_engine import VaderEngine
from model.explain import ExplainSettings
from model.settings import ModelSettings
from stream.worker.explain_view import EXPLAIN_NICE, ExplainService
from stream.worker.web import HttpError


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


class Slow:
    """An explainer that takes `seconds` a request (integrated gradients on a long text)."""

    method = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def explain(self, texts):
        import time

        time.sleep(self.seconds)
        return []

    def close(self) -> None:
        pass


def slow_service(seconds: float, timeout_s: float) -> ExplainService:
    service = ExplainService(StreamEngine(), ModelSettings(backend="vader"), timeout_s=timeout_s)
    service._load = lambda: Slow(seconds)
    return service


async def test_one_explanation_at_a_time_the_next_gets_429() -> None:
    import asyncio

    service = slow_service(0.5, timeout_s=5)
    first = asyncio.ensure_future(service.answer(b'{"texts": ["fine"]}'))
    await asyncio.sleep(0.1)
    with pytest.raises(HttpError) as caught:
        await service.answer(b'{"texts": ["fine"]}')
    assert caught.value.status == 429
    assert (await first)["method"] == "slow"
    assert (await service.answer(b'{"texts": ["fine"]}'))["method"] == "slow"  # free again
    service.close()


async def test_an_explanation_past_the_time_cap_gets_503_and_holds_the_slot_until_done() -> None:
    import asyncio

    service = slow_service(1.0, timeout_s=0.2)
    with pytest.raises(HttpError) as caught:
        await service.answer(b'{"texts": ["fine"]}')
    assert caught.value.status == 503
    with pytest.raises(HttpError) as busy:  # the thread is still at it: no second one piles up
        await service.answer(b'{"texts": ["fine"]}')
    assert busy.value.status == 429
    await asyncio.sleep(1.0)
    service.timeout_s = 5
    assert (await service.answer(b'{"texts": ["fine"]}'))["method"] == "slow"
    service.close()


async def test_explanations_run_on_a_niced_thread(service: ExplainService) -> None:
    import os
    import threading

    def nice_of_this_thread() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    base = os.getpriority(os.PRIO_PROCESS, 0)
    from stream.worker.inference import WEB

    assert await service.thread.run(WEB, nice_of_this_thread) == max(base, EXPLAIN_NICE)
