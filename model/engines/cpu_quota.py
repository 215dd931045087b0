"""How many CPU threads one process should use: the physical cores, capped by the container's CPU quota.

A pod with `limits.cpu: 1` on a 32-core node still sees 32 cores through psutil; sizing ONNX Runtime
or PyTorch from that spins 16+ threads that the kernel throttles to one CPU's worth of time (slower
than one thread, with long stalls at every period's end). The quota lives in the cgroup: v2
`cpu.max` ("QUOTA PERIOD" or "max PERIOD"), v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1: none).
"""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def cpu_quota() -> float | None:
    """CPUs this process's cgroup may use (1.5 for `limits.cpu: 1500m`), or None when unlimited."""
    for path in _cgroup_dirs(CGROUP_ROOT, PROC_CGROUP):
        quota = _v2_quota(path / "cpu.max")
        if quota is None:
            quota = _v1_quota(path)
        if quota is not None:
            return quota
    return None


def quota_threads() -> int | None:
    """Whole CPUs of the quota (at least 1: 1500m gives 1, so no thread waits on throttling), or None."""
    quota = cpu_quota()
    return None if quota is None else max(1, int(quota))


def physical_cores() -> int:
    """Threads for one forward pass: physical cores (hyper-threads contend for the same units),
    no more than the CPU quota allows."""
    import psutil

    cores = psutil.cpu_count(logical=False) or 1
    return min(cores, quota_threads() or cores)


def _cgroup_dirs(root: Path, proc_cgroup: Path) -> list[Path]:
    """The process's own cgroup directories (v2 path, v1 cpu controller), then the mount roots.

    In a container with its own cgroup namespace the process's path is `/`, so the root is its cgroup.
    """
    dirs = []
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":
            dirs.append(root / relative)
        elif "cpu" in controllers.split(","):
            dirs += [root / name / relative for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu")]
    return [*dirs, root, root / "cpu", root / "cpu,cpuacct"]


def _v2_quota(cpu_max: Path) -> float | None:
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period
