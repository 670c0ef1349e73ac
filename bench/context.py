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

# Every count below is a bound: no loop in the benchmarks runs unbounded in count or time.
QUICK: dict[str, Any] = {
    "kb_sizes": [10000],
    "embedding": {"rounds": 3, "queries": 20, "batch_texts": 32},
    "retrieval": {"rounds": 3, "queries": 20},
    "ttfc": {"rounds": 3, "requests": 8, "warmup": 3, "baselines": True},
    "relay": {
        "streams": [100],
        "baseline_streams": [100],
        "windows": 2,
        "window_s": 3.0,
        "hb_streams": 10,
        "apps": "all",
        "open_timeout_s": 15,
    },
    "idle": {"streams": {"500": ["zantara", "seed-style"]}, "hold_s": 2.0},
    "coldstart": {"runs": 2, "phase_runs": 0, "first_export": False},
    "ingestion": {"runs": 1, "copies": [1], "backends": ["onnx"]},
    "profile": False,
    "quiet_budget_s": 15,
}
FULL: dict[str, Any] = {
    "kb_sizes": [1000, 10000, 100000],
    "embedding": {"rounds": 5, "queries": 60, "batch_texts": 64},
    "retrieval": {"rounds": 5, "queries": 60},
    "ttfc": {"rounds": 5, "requests": 30, "warmup": 10, "baselines": True},
    # The SDK-based baselines are saturated well before 500 streams; 1000 adds nothing for them but minutes.
    "relay": {
        "streams": [100, 500, 1000],
        "baseline_streams": [100, 500],
        "windows": 3,
        "window_s": 3.0,
        "hb_streams": 20,
        "apps": "all",
        "open_timeout_s": 10,
    },
    "idle": {"streams": {"1000": "all", "5000": ["zantara", "seed-style", "raw-relay"]}, "hold_s": 3.0},
    "coldstart": {"runs": 3, "phase_runs": 2, "first_export": True},
    "ingestion": {"runs": 2, "copies": [1, 2, 3], "backends": ["onnx", "torch"]},
    "profile": True,
    "profile_streams": 100,
    "memory_streams": 60,
    "quiet_budget_s": 30,
}


@dataclass
class Bench:
    mode: str
    params: dict[str, Any]
    command: str
    started: float = field(default_factory=time.monotonic)
    waited_s: float = 0.0
    # `--label knee`: an exploratory run, saved as <suite>@knee.json beside the others (not committed).
    label: str = ""

    @property
    def results(self) -> Path:
        """bench/results for full runs (cited by docs/performance.md), bench/results/quick for quick ones."""
        return RESULTS if self.mode == "full" else RESULTS / "quick"

    @property
    def raw(self) -> Path:
        """Bulky by-products (py-spy's stacks): kept for a look, never committed (.gitignore)."""
        path = self.results / "raw"
        path.mkdir(parents=True, exist_ok=True)
        return path

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
        self.results.mkdir(parents=True, exist_ok=True)
        path = self.results / (f"{name}@{self.label}.json" if self.label else f"{name}.json")
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
