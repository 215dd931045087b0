"""Threads follow the container's CPU quota (cgroup v2 cpu.max, v1 cfs quota), not the node's cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.engines import cpu_quota


def fake_cgroup(tmp_path: Path, monkeypatch, files: dict[str, str], proc: str = "0::/\n") -> None:
    """A cgroup tree at tmp_path/cgroup holding `files`, and a node of 32 physical cores."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "proc-cgroup").write_text(proc)
    monkeypatch.setattr(cpu_quota, "CGROUP_ROOT", root)
    monkeypatch.setattr(cpu_quota, "PROC_CGROUP", tmp_path / "proc-cgroup")
    monkeypatch.setattr("psutil.cpu_count", lambda logical=True: 64 if logical else 32)


@pytest.mark.parametrize(
    ("files", "proc", "quota", "threads"),
    [
        ({"cpu.max": "100000 100000\n"}, "0::/\n", 1.0, 1),  # v2, own namespace: limits.cpu 1
        ({"cpu.max": "250000 100000\n"}, "0::/\n", 2.5, 2),  # 2500m: 2 threads, none throttled
        ({"cpu.max": "50000 100000\n"}, "0::/\n", 0.5, 1),  # 500m: at least one thread
        (
            {"kubepods/pod1/cpu.max": "400000 100000\n", "cpu.max": "max 100000\n"},
            "0::/kubepods/pod1\n",
            4.0,
            4,
        ),
        (
            {"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"},
            "2:cpu,cpuacct:/\n",
            2.0,
            2,
        ),  # v1
    ],
)
def test_a_quota_caps_the_threads(tmp_path, monkeypatch, files, proc, quota, threads):
    fake_cgroup(tmp_path, monkeypatch, files, proc)
    assert cpu_quota.cpu_quota() == quota
    assert cpu_quota.physical_cores() == threads


@pytest.mark.parametrize(
    "files",
    [
        {"cpu.max": "max 100000\n"},  # v2, no limit
        {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},  # v1, no limit
        {},  # no cgroup files at all (macOS, a bare VM)
    ],
)
def test_no_quota_leaves_the_physical_cores(tmp_path, monkeypatch, files):
    fake_cgroup(tmp_path, monkeypatch, files)
    assert cpu_quota.cpu_quota() is None
    assert cpu_quota.quota_threads() is None
    assert cpu_quota.physical_cores() == 32


def test_a_quota_above_the_cores_leaves_the_cores(tmp_path, monkeypatch):
    fake_cgroup(tmp_path, monkeypatch, {"cpu.max": "6400000 100000\n"})
    assert cpu_quota.physical_cores() == 32


def test_the_worker_processes_split_the_quota_not_the_node(tmp_path, monkeypatch):
    """`worker --processes 2` in a 4-CPU pod on a 32-core node: 2 threads each, not 16."""
    from stream.worker.processes import cpu_threads

    fake_cgroup(tmp_path, monkeypatch, {"cpu.max": "400000 100000\n"})
    assert cpu_threads(2) == 2


def test_onnx_and_torch_engines_size_their_pools_from_the_quota(tmp_path, monkeypatch, bundle_dir):
    import torch

    from model.engines import load_engine

    fake_cgroup(tmp_path, monkeypatch, {"cpu.max": "100000 100000\n"})
    onnx = load_engine(str(bundle_dir), "onnx", "cpu", int8=False)
    assert onnx.session.get_session_options().intra_op_num_threads == 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(5)  # what an earlier engine (or PyTorch's own default) left
        load_engine(str(bundle_dir), "torch", "cpu")
        assert torch.get_num_threads() == 1
        load_engine(str(bundle_dir), "torch", "cpu", threads=3)  # --threads still wins
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
