"""Starting and stopping child processes (stream/supervisor.py), with tiny `python -c` children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from stream.supervisor import spawn, stop

IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
HONOURS_SIGTERM = "import time; print('ready', flush=True); time.sleep(60)"
# Starts a grandchild in a session of its own (out of reach of a signal to the child's group) and
# prints its pid; both ignore SIGTERM.
LEAVES_A_GRANDCHILD = f"""
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", {IGNORES_SIGTERM!r}], start_new_session=True,
                              stdout=subprocess.DEVNULL)
print(grandchild.pid, flush=True)
time.sleep(60)
"""


def started(code: str, log: Path, **options) -> subprocess.Popen:
    """`python -c code`, once it has printed its first line into `log`."""
    child = spawn([sys.executable, "-c", code], log=log, **options)
    deadline = time.monotonic() + 30
    while not log.read_text().strip() and time.monotonic() < deadline:
        assert child.poll() is None, log.read_text()
        time.sleep(0.05)
    return child


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    child = started(IGNORES_SIGTERM, tmp_path / "child.log")
    killed: list[int] = []
    began = time.monotonic()
    stop([child], 1.0, on_kill=lambda c: killed.append(c.pid))
    assert 1.0 <= time.monotonic() - began < 10
    assert killed == [child.pid] and child.returncode == -signal.SIGKILL


def test_children_that_honour_sigterm_stop_within_the_grace_and_are_not_killed(tmp_path: Path) -> None:
    children = [started(HONOURS_SIGTERM, tmp_path / f"child-{i}.log") for i in range(2)]
    killed: list[int] = []
    began = time.monotonic()
    stop(children, 30.0, on_kill=lambda c: killed.append(c.pid))
    assert time.monotonic() - began < 10
    assert killed == [] and [c.returncode for c in children] == [-signal.SIGTERM] * 2


def test_a_child_in_its_own_session_is_stopped_with_what_it_left_behind(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    child = started(LEAVES_A_GRANDCHILD, log, own_session=True)
    grandchild = psutil.Process(int(log.read_text().split()[0]))
    assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
    stop([child], 0.5, group=True)
    assert child.returncode == -signal.SIGKILL
    grandchild.wait(10)  # not our child: psutil cannot tell its status, only that it is gone
    assert not grandchild.is_running()


def test_a_child_started_to_die_with_its_parent_does_when_the_parent_is_killed(tmp_path: Path) -> None:
    parent_code = (
        "import sys, time\n"
        "from stream.supervisor import spawn\n"
        f"child = spawn([sys.executable, '-c', {HONOURS_SIGTERM!r}], die_with_parent=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "parent.log"
    parent = spawn([sys.executable, "-c", parent_code], log=log)
    deadline = time.monotonic() + 30
    while not log.read_text().split() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = psutil.Process(int(log.read_text().split()[0]))
    parent.kill()
    parent.wait(10)
    child.wait(10)  # raises psutil.TimeoutExpired while it lives on
    assert not child.is_running()
