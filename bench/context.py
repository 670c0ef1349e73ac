"""What every suite shares: the run's parameters (quick or full), subprocess helpers and the results files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

SERVICE_SOURCE: list[str] = []  # set by `--service-source`: a directory holding another `zantara_rag`


def service_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process that imports the service: PYTHONPATH first on `--service-source`."""
    import os

    env = dict(os.environ if env is None else env)
    if SERVICE_SOURCE:
        env["PYTHONPATH"] = os.pathsep.join([*SERVICE_SOURCE, str(ROOT)])
    return env


# Every count below is a bound: no loop in the benchmarks runs unbounded in count or time.
QUICK: dict[str, Any] = {
    "kb_sizes": [1000, 10000],
    "embedding": {"rounds": 3, "queries": 30, "batch_texts": 32},
    "retrieval": {"rounds": 3, "queries": 30},
    "ttfc": {"rounds": 3, "requests": 15, "warmup": 5, "baselines": True},
    "relay": {"streams": [500], "windows": 2, "window_s": 3.0, "hb_streams": 10, "apps": "all"},
    "idle": {"streams": [1000], "hold_s": 3.0, "apps": ["zantara", "seed-style"]},
    "coldstart": {"runs": 2},
    "ingestion": {"runs": 1, "copies": [1], "backends": ["onnx"]},
    "profile": False,
    "quiet_budget_s": 30,
}
FULL: dict[str, Any] = {
    "kb_sizes": [1000, 10000, 100000],
    "embedding": {"rounds": 5, "queries": 60, "batch_texts": 64},
    "retrieval": {"rounds": 5, "queries": 60},
    "ttfc": {"rounds": 5, "requests": 30, "warmup": 10, "baselines": True},
    "relay": {"streams": [100, 500, 1000], "windows": 3, "window_s": 5.0, "hb_streams": 20, "apps": "all"},
    "idle": {"streams": [1000, 5000], "hold_s": 4.0, "apps": "all"},
    "coldstart": {"runs": 3},
    "ingestion": {"runs": 2, "copies": [1, 2, 4], "backends": ["onnx", "torch"]},
    "profile": True,
    "quiet_budget_s": 120,
}


@dataclass
class Bench:
    mode: str
    params: dict[str, Any]
    command: str
    started: float = field(default_factory=time.monotonic)
    waited_s: float = 0.0
    # `--label before --service-source DIR`: the service from another source tree, results saved apart.
    label: str = ""

    def wait_quiet(self, below: float = 0.4, max_wait: float = 20.0) -> float:
        """Wait (bounded) until the rest of the machine uses fewer than `below` cores; returns what it used.

        Call it when nothing of ours is busy. The total wait of a run is bounded by `quiet_budget_s`.
        """
        budget = float(self.params.get("quiet_budget_s", 60)) - self.waited_s
        deadline = time.monotonic() + max(0.0, min(max_wait, budget))
        while True:
            t0, busy0 = time.monotonic(), machine.machine_busy()
            time.sleep(0.5)
            cores = (machine.machine_busy() - busy0) / (time.monotonic() - t0)
            self.waited_s += time.monotonic() - t0
            if cores < below or time.monotonic() >= deadline:
                if cores >= below:
                    self.log(f"machine still busy ({cores:.2f} cores used by others); measuring anyway")
                return cores

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        load = " ".join(f"{x:.2f}" for x in machine.load())
        print(f"[{elapsed:6.1f}s load {load}] {message}", file=sys.stderr, flush=True)

    def python(self, module: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run `python -m module '<spec>'` and parse the last line of its stdout as JSON."""
        out = subprocess.run(
            [sys.executable, "-m", module, json.dumps(spec)],
            cwd=ROOT,
            env=service_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{module} failed ({out.returncode}):\n{out.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    def loadgen(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.python("bench.loadgen", spec, timeout=float(spec.get("max_seconds", 600)) + 30)

    def save(self, name: str, data: dict[str, Any]) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / (f"{name}@{self.label}.json" if self.label else f"{name}.json")
        payload = {
            "suite": name,
            "mode": self.mode,
            "command": self.command,
            "machine": machine.describe(),
            **data,
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
        tmp.replace(path)
        return path
