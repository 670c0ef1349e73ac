"""The machine a figure was measured on, and the CPU and memory of processes, read from /proc (Linux only).

Every benchmark on a shared machine has to say how busy it was: `CpuWindow` measures, over an interval,
the CPU seconds of the processes under test and of the whole machine; the difference is what other
people's work took from the cores while the figure was measured.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe() -> dict[str, Any]:
    """Cores, CPU, memory, versions and the source revision: the header of every result file."""
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": load(),
        "revision": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _git(*args: str) -> str:
    """Read-only git queries."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def process_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def process_rss(pid: int) -> int:
    """Resident set size in bytes."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


def machine_busy() -> float:
    """CPU seconds spent not idle by all cores since boot."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in parts]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest time is already counted in user/nice
    return (sum(values[:8]) - idle) / TICKS


@dataclass
class CpuWindow:
    """CPU used between `start()` and `stop()` by named processes and by the machine as a whole."""

    pids: dict[str, int]
    started: float = 0.0
    wall: float = 0.0
    _cpu0: dict[str, float] = field(default_factory=dict)
    _busy0: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0

    def start(self) -> CpuWindow:
        self.started = time.monotonic()
        self._cpu0 = {name: process_cpu(pid) for name, pid in self.pids.items()}
        self._busy0 = machine_busy()
        return self

    def stop(self) -> CpuWindow:
        self.wall = time.monotonic() - self.started
        self.cpu = {name: process_cpu(pid) - self._cpu0[name] for name, pid in self.pids.items()}
        self.busy = machine_busy() - self._busy0
        return self

    def report(self) -> dict[str, Any]:
        """Cores used (CPU s per wall s) by each process and by the rest of the machine; the load."""
        wall = max(self.wall, 1e-9)
        ours = sum(self.cpu.values())
        return {
            "wall_s": round(self.wall, 3),
            "cores_used": {name: round(sec / wall, 3) for name, sec in self.cpu.items()},
            "other_processes_cores": round(max(0.0, self.busy - ours) / wall, 3),
            "machine_cores_busy": round(self.busy / wall, 3),
            "load_average": load(),
        }
