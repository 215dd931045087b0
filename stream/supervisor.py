"""Child processes of a supervising process: start one, stop a set of them.

Shared by `sentistream worker --processes N` (stream/worker/processes.py) and `sentistream demo`
(infra/demo.py); which children they start and what a child's exit means stays with each of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1
KILL_WAIT_S = 5.0  # after SIGKILL: the kernel's part, not the child's


def spawn(
    argv: Sequence[str], *, log: Path | None = None, own_session: bool = False, die_with_parent: bool = False
) -> subprocess.Popen:
    """Start `argv`; its output goes to `log` (None: this process's). `own_session`: the terminal's
    Ctrl-C reaches only the parent, which stops the child itself (`stop(..., group=True)`), and the
    child reads no stdin. `die_with_parent`: SIGTERM it when this process dies, however (Linux)."""
    with open(log, "wb") if log is not None else contextlib.nullcontext() as out:
        return subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT if log is not None else None,
            stdin=subprocess.DEVNULL if own_session else None,
            start_new_session=own_session,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the parent dies (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop(
    children: Sequence[subprocess.Popen],
    grace_s: float,
    *,
    group: bool = False,
    on_kill: Callable[[subprocess.Popen], None] | None = None,
) -> None:
    """SIGTERM every child still running (its whole process group when `group`: a child that leads
    its own session), SIGKILL those still running after `grace_s` (`on_kill(child)` first), then
    kill what they started and left behind."""
    import psutil

    descendants = [d for c in children for d in _descendants(c)]
    running = [c for c in children if c.poll() is None]
    for child in running:
        _signal(child, signal.SIGTERM, group)
    deadline = time.monotonic() + grace_s
    for child in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(max(0.0, deadline - time.monotonic()))
    for child in [c for c in running if c.poll() is None]:
        if on_kill is not None:
            on_kill(child)
        _signal(child, signal.SIGKILL, group)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(KILL_WAIT_S)
    # psutil checks each process's start time, so a recycled pid is never signalled by mistake
    for leftover in psutil.wait_procs(descendants, timeout=KILL_WAIT_S)[1]:
        leftover.kill()


def _descendants(child: subprocess.Popen) -> list:
    import psutil

    try:
        return psutil.Process(child.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _signal(child: subprocess.Popen, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(child.pid, sig)  # the child leads its own session, so its group id is its pid
        else:
            child.send_signal(sig)
