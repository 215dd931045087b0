"""The automatic markers (tests/conftest.py) and `make test-fast`'s selection built on them."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = [
    "tests/stream/test_replay.py",
    "tests/stream/test_worker_processes.py",
    "tests/stream/test_worker_faults.py",
    "tests/test_ports.py",
    "tests/dashboard/test_browser.py",
    "tests/infra/test_manifests.py",
]


DUMP = """
import json, sys, pytest

class Dump:
    def pytest_collection_finish(self, session):
        marks = {i.nodeid.split("[")[0]: sorted({m.name for m in i.iter_markers()}) for i in session.items}
        print("MARKS " + json.dumps(marks))

pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *sys.argv[1:]], plugins=[Dump()])
"""


@functools.cache
def markers() -> dict[str, set[str]]:
    """Test id -> its markers, for every test of FILES (one collection in a fresh interpreter)."""
    out = subprocess.run(
        [sys.executable, "-c", DUMP, *FILES], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("MARKS ")), None)
    assert line, out.stdout + out.stderr
    return {test: set(names) for test, names in json.loads(line.removeprefix("MARKS ")).items()}


def marked(name: str) -> set[str]:
    return {test for test, names in markers().items() if name in names}


def selected(expression: str) -> set[str]:
    """Test ids of FILES that `pytest -m EXPRESSION` runs (collection only)."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", expression, *FILES],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode in (0, 5), out.stdout + out.stderr  # 5: nothing selected
    return {line.split("[")[0] for line in out.stdout.splitlines() if "::" in line}


def make_test_fast_expression() -> str:
    return re.search(r"^FAST := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).strip()


def test_broker_tests_are_marked_kafka_through_fixtures_and_own_brokers():
    kafka = marked("kafka")
    assert (
        "tests/stream/test_replay.py::test_ctrl_c_stops_a_replay_flushes_it_and_exits_130" in kafka
    )  # broker_url
    # only through a fixture of the module (two_processes -> broker_url)
    assert "tests/stream/test_worker_processes.py::test_a_child_killed_stops_the_set_with_a_failure" in kafka
    # a broker of its own, started in the test
    assert "tests/test_ports.py::test_a_client_port_taken_before_the_broker_binds_it_is_retried" in kafka
    assert "tests/infra/test_manifests.py::test_compose_quick_start_runs_without_a_bundle" not in kafka


def test_kill_freeze_and_restart_tests_are_marked_fault_and_static_checks_are_not():
    fault = marked("fault")
    assert {
        "tests/stream/test_worker_faults.py::test_two_workers_share_partitions_and_survive_a_kill_9",
        "tests/stream/test_worker_faults.py::test_broker_restart_mid_stream_loses_nothing",
        "tests/stream/test_worker_processes.py::test_a_frozen_child_is_killed_and_the_set_stopped",
    } <= fault
    assert (
        "tests/infra/test_manifests.py::test_healthcheck_comment_check_catches_the_restart_claim" not in fault
    )
    assert "tests/stream/test_replay.py::test_ctrl_c_stops_a_replay_flushes_it_and_exits_130" not in fault


def test_make_test_fast_runs_no_broker_fault_or_browser_test():
    fast = selected(make_test_fast_expression())
    assert "tests/infra/test_manifests.py::test_compose_quick_start_runs_without_a_bundle" in fast
    assert fast.isdisjoint(marked("kafka") | marked("fault") | marked("browser"))
    assert "tests/dashboard/test_browser.py::test_models_tab_draws_agreement_and_accuracy_charts" in marked(
        "browser"
    )


def test_under_ci_a_skip_for_a_missing_browser_or_kubectl_fails_the_run(tmp_path) -> None:
    import os

    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import pytest\n"
        "def test_manifests():\n    pytest.skip('kubectl (with kustomize) is not installed')\n"
        'def test_page():\n    pytest.skip("needs Debian\'s chromium and chromium-driver")\n'
        "def test_gpu():\n    pytest.skip('no GPU here')\n"
    )

    def run(ci: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci else {})
        done = subprocess.run(
            [sys.executable, "-m", "pytest", str(probe), "-p", "tests.conftest", "-q", "-p", "no:cacheprovider",
             "--rootdir", str(tmp_path)],
            capture_output=True, text=True, timeout=120, check=False, env=env, cwd=Path(__file__).parent.parent,
        )  # fmt: skip
        return done.stdout.strip().splitlines()[-1]

    assert "2 failed, 1 skipped" in run("1")
    assert "3 skipped" in run(None)
