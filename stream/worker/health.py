"""What /live, /ready and /health say: the worker's own view of its agent, commits and inference.

Liveness fails only when a restart would help: the agent is dead, no batch has completed for
`stall_timeout_s` while input is waiting, or one batch has held the inference thread for
`inference_timeout_s`. Readiness additionally needs the model and a completed rebalance, so a long
rebalance takes a worker out of service without getting it killed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class WorkerState:
    """Owned by the Scorer, updated by the agent and the rebalance listener, read by the views."""

    assigned: list[str] | None = None  # `topic[partition]` once a rebalance completed
    rebalancing: bool = False
    agent_running: bool = False
    agent_failed: str | None = None
    last_progress: float = field(default_factory=time.monotonic)  # a batch completed, or idle
    next_offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset to process

    def progressed(self, now: float | None = None) -> None:
        self.last_progress = time.monotonic() if now is None else now


@dataclass(frozen=True)
class Limits:
    stall_timeout_s: float
    inference_timeout_s: float


def liveness(
    state: WorkerState, lag: int | None, inference_busy_s: float, limits: Limits, now: float
) -> list[str]:
    """The reasons the worker is not alive (empty when it is)."""
    problems = []
    if not state.agent_running:
        problems.append(f"the scoring agent is not running ({state.agent_failed or 'not started'})")
    stalled = now - state.last_progress
    if lag and stalled > limits.stall_timeout_s:
        problems.append(f"no batch completed for {stalled:.0f}s while {lag} messages wait")
    if inference_busy_s > limits.inference_timeout_s:
        problems.append(f"one batch has held the inference thread for {inference_busy_s:.0f}s")
    return problems


def readiness(state: WorkerState, model_loaded: bool) -> list[str]:
    """The reasons the worker should not receive traffic yet (liveness aside)."""
    problems = []
    if not model_loaded:
        problems.append("the model is not loaded")
    if state.assigned is None:
        problems.append("waiting for the first partition assignment")
    elif state.rebalancing:
        problems.append("rebalancing")
    return problems
