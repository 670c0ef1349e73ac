"""The apps under test, each started as its own process on loopback: the service and the three baselines."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.context import service_env

ROOT = Path(__file__).resolve().parents[1]

# name -> the module run by uvicorn (None: the service's own `zantara-rag serve`)
APPS: dict[str, str | None] = {
    "zantara": None,
    "seed-style": "bench.baselines.seed_style:app",
    "sse-starlette": "bench.baselines.sse_starlette_app:app",
    "raw-relay": "bench.baselines.raw_relay:app",
}
BASELINES = ["seed-style", "sse-starlette", "raw-relay"]

# Limits that would refuse a load test from one address, and answers that must come from the fake upstream.
BENCH_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "PYTHONUNBUFFERED": "1",
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
_DROP = (
    "ANTHROPIC_",
    "CHROMA_",
    "FLY_",
    "EMBEDDING_",
    "AUTH_",
    "RATE_LIMIT",
    "MAX_",
    "DAILY_",
    "RESUME_",
    "DRAIN_",
    "LIMIT_",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AppProcess:
    """One app under uvicorn with a private copy of a knowledge base. `ready_s`: start → /ready 200."""

    def __init__(self, name: str, kb: Path | None, upstream_url: str, **env: Any) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        chroma = self._tmp / "chroma"
        if kb is not None:
            shutil.copytree(kb, chroma)
        base = {k: v for k, v in os.environ.items() if not k.startswith(_DROP)}
        self.env = {
            **(service_env(base) if name == "zantara" else base),
            **BENCH_ENV,
            "CHROMA_PATH": str(chroma),
            "ANTHROPIC_BASE_URL": upstream_url,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            **{k: str(v) for k, v in env.items()},
        }
        self.log_path = self._tmp / "app.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s: float | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        module = APPS[self.name]
        if module is None:
            return [sys.executable, "-m", "zantara_rag.cli", "serve"]
        return [
            sys.executable,
            "-m",
            "uvicorn",
            module,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "1",
        ]

    def start(self, timeout: float = 180.0) -> AppProcess:
        with self.log_path.open("ab") as log:
            started = time.monotonic()
            self.proc = subprocess.Popen(
                self.command(), env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = started + timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.logs()[-3000:]}"
                    )
                try:
                    if client.get(self.url + "/ready").status_code == 200:
                        self.ready_s = time.monotonic() - started
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)  # the service drains on the first signal, exits on the second
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> AppProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
