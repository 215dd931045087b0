"""Liveness/readiness rules and the inference thread's priorities, without a broker."""

from __future__ import annotations

import asyncio
import threading

import pytest

from stream.worker.health import Limits, WorkerState, liveness, readiness
from stream.worker.inference import STREAM, WEB, InferenceThread
from stream.worker.web import HttpError, PredictGate, bounded, parse_predict

LIMITS = Limits(stall_timeout_s=60.0, inference_timeout_s=30.0)


def running(**kwargs) -> WorkerState:
    state = WorkerState(agent_running=True, assigned=["in[0]"], last_progress=1000.0)
    for name, value in kwargs.items():
        setattr(state, name, value)
    return state


def test_a_running_agent_that_keeps_up_is_alive_and_ready() -> None:
    assert liveness(running(), lag=0, inference_busy_s=0.0, limits=LIMITS, now=5000.0) == []
    assert readiness(running(), model_loaded=True) == []


def test_a_dead_agent_is_not_alive() -> None:
    (problem,) = liveness(running(agent_running=False), 0, 0.0, LIMITS, now=1001.0)
    assert "agent is not running" in problem


def test_no_progress_while_messages_wait_is_not_alive_but_idle_is() -> None:
    assert liveness(running(), lag=5, inference_busy_s=0.0, limits=LIMITS, now=1059.0) == []
    (problem,) = liveness(running(), lag=5, inference_busy_s=0.0, limits=LIMITS, now=1061.0)
    assert "no batch completed for 61s while 5 messages wait" in problem
    assert liveness(running(), lag=0, inference_busy_s=0.0, limits=LIMITS, now=9999.0) == []


def test_a_stuck_inference_thread_is_not_alive() -> None:
    (problem,) = liveness(running(), lag=0, inference_busy_s=31.0, limits=LIMITS, now=1001.0)
    assert "inference thread for 31s" in problem


def test_rebalancing_is_not_ready_but_still_alive() -> None:
    state = running(rebalancing=True)
    assert readiness(state, model_loaded=True) == ["rebalancing"]
    assert liveness(state, 0, 0.0, LIMITS, now=1001.0) == []
    assert readiness(running(assigned=None), True) == ["waiting for the first partition assignment"]


async def test_stream_batches_run_before_waiting_web_requests() -> None:
    thread, order, release = InferenceThread(), [], threading.Event()
    blocker = asyncio.ensure_future(thread.run(WEB, release.wait))
    while thread.stuck_for() == 0.0:
        await asyncio.sleep(0.01)
    web = asyncio.ensure_future(thread.run(WEB, order.append, "web"))
    stream = asyncio.ensure_future(thread.run(STREAM, order.append, "stream"))
    while thread.queued() < 2:
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(blocker, web, stream)
    assert order == ["stream", "web"]
    thread.shutdown()


def test_the_predict_gate_lets_in_at_most_its_limit() -> None:
    gate = PredictGate(1)
    with gate, pytest.raises(HttpError) as refused, gate:
        pass
    assert refused.value.status == 429
    with gate:  # released again
        assert gate.inside == 1


def test_an_oversized_list_is_refused_before_its_items_are_validated() -> None:
    body = b'{"texts": [' + b",".join([b"1"] * 5000) + b"]}"
    with pytest.raises(HttpError) as refused:
        parse_predict(body, max_texts=10)
    assert refused.value.status == 413 and "5000 texts" in refused.value.error


def test_error_bodies_are_bounded() -> None:
    body = b'{"texts": [' + b",".join([b"1"] * 300) + b"]}"  # one problem per bad item
    with pytest.raises(HttpError) as refused:
        parse_predict(body, max_texts=1000)
    assert refused.value.status == 422 and "texts.299" not in refused.value.error
    assert len(refused.value.error) <= 500 and bounded("x" * 10, 5) == "xxxx…"


def test_a_niced_inference_thread_runs_below_the_stream_priority() -> None:
    import os
    import threading

    thread = InferenceThread("shadow", nice=7)
    try:
        niceness = asyncio.run(
            thread.run(0, lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        )
        assert niceness == os.getpriority(os.PRIO_PROCESS, 0) + 7
    finally:
        thread.shutdown()
