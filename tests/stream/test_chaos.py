"""The short chaos and fuzz runs (benchmarks/chaos.py and benchmarks/fuzz.py run the long ones)."""

from __future__ import annotations

import pytest

from benchmarks.chaos import Plan, run_chaos
from benchmarks.fuzz import run_fuzz


@pytest.mark.slow
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_kills_and_a_broker_restart_lose_nothing(guarantee: str, tmp_path) -> None:
    plan = Plan(messages=3000, guarantee=guarantee, rate=300.0, broker_restarts=1, seed=3, timeout_s=400)
    outcome = run_chaos(plan, tmp_path)
    assert outcome.kills >= 1 and outcome.broker_restarts == 1
    assert outcome.lost == 0, outcome
    if guarantee == "exactly_once":
        assert outcome.duplicates == 0, outcome


@pytest.mark.slow
def test_fuzzed_payloads_each_come_out_exactly_once(broker_url, tmp_path) -> None:
    result = run_fuzz(broker_url, tmp_path, 2000, backend="vader", seed=5)
    assert result["worker_alive"] and result["worker_restarts"] == 0, result
    assert result["missing"] == result["duplicated"] == result["unknown_outputs"] == 0, result
    assert result["scored"] + result["dead_lettered"] == 2000
