"""How many CPUs this process may use: the container's CPU quota, else its CPU affinity."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def quota_cpus(cpu_max: str) -> int | None:
    """CPUs allowed by a cgroup v2 `cpu.max` line ("max 100000" or "150000 100000")."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


def available_cpus(cpu_max_file: Path = CGROUP_CPU_MAX) -> int:
    """The smaller of the CPU quota (rounded up) and the CPUs this process may run on."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpus = affinity or os.cpu_count() or 1
    try:
        quota = quota_cpus(cpu_max_file.read_text())
    except OSError:
        quota = None
    return min(cpus, quota) if quota else cpus
