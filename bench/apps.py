"""The apps under test, each its own process on loopback: the service and the three baselines.

They run under the tests' harness (`tests.harness.ServerProcess`: a private copy of a knowledge base, a free
loopback port, a log file, `/ready` polling, SIGINT then kill on stop). What a benchmark changes is the
environment (limits off, long upstream deadlines, the fake upstream) and, for the baselines and the
tracemalloc'd service, the command: uvicorn on their module instead of `zantara-rag serve`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.harness import ROOT, ServerProcess

# name -> the ASGI app run by uvicorn (None: the service's own `zantara-rag serve`, as the harness runs it)
APPS: dict[str, str | None] = {
    "zantara": None,
    "seed-style": "bench.baselines.seed_style:app",
    "sse-starlette": "bench.baselines.sse_starlette_app:app",
    "raw-relay": "bench.baselines.raw_relay:app",
}
BASELINES = ["seed-style", "sse-starlette", "raw-relay"]

# Limits that would refuse a load test from one address, and deadlines far beyond any measurement.
BENCH_ENV = {
    "ANONYMIZED_TELEMETRY": "False",
    "AUTO_INGEST": "false",
    "ANTHROPIC_API_KEY": "sk-ant-bench-0123456789",
    "ANTHROPIC_FALLBACK_MODEL": "",
    "MAX_OUTPUT_TOKENS": "64000",
    "UPSTREAM_FIRST_TOKEN_TIMEOUT": "600",
    "UPSTREAM_IDLE_TIMEOUT": "600",
    "UPSTREAM_TOTAL_TIMEOUT": "3600",
    "RESUME_GRACE_SECONDS": "0",
    "RESUME_MAX_STREAMS": "1000000",
    "RATE_LIMIT_PER_MINUTE": "0",
    "MAX_STREAMS_PER_CLIENT": "0",
    "MAX_CONCURRENT_STREAMS": "0",
    "LIMIT_CONCURRENCY": "100000",
    "DAILY_TOKEN_BUDGET": "0",
    "DAILY_TOKEN_BUDGET_PER_CLIENT": "0",
    "LOG_LEVEL": "warning",
    "DRAIN_SECONDS": "0",
}
# Settings exported in the caller's shell must not change what is measured (the harness drops ANTHROPIC_,
# CHROMA_ and FLY_ already).
_FOREIGN = ("EMBEDDING_", "AUTH_", "RATE_LIMIT", "MAX_", "DAILY_", "RESUME_", "DRAIN_", "LIMIT_")


class AppProcess(ServerProcess):
    """One app with a private copy of a knowledge base; its Claude is the fake upstream at `upstream_url`."""

    def __init__(
        self,
        name: str,
        kb: Path | None,
        upstream_url: str,
        command: list[str] | None = None,
        ready_timeout: float = 180.0,
        **env: Any,
    ) -> None:
        overrides = {**BENCH_ENV, "ANTHROPIC_BASE_URL": upstream_url, **env}
        super().__init__(kb, ready_timeout=ready_timeout, **overrides)
        self.env = {k: v for k, v in self.env.items() if k in overrides or not k.startswith(_FOREIGN)}
        self.name = name
        module = APPS[name]
        self.command = command or (None if module is None else uvicorn(module, self.port))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: str | None = "/ready") -> AppProcess:
        if self.command is None:
            super().start(wait)
            return self
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait_for(wait, self.ready_timeout)
        return self

    def __enter__(self) -> AppProcess:
        return self.start()


def uvicorn(module: str, port: int) -> list[str]:
    options = f"--host 127.0.0.1 --port {port} --log-level warning --no-access-log"
    return [sys.executable, "-m", "uvicorn", module, *options.split(), "--timeout-graceful-shutdown", "1"]
