"""Running the real service for tests: `zantara-rag serve` as a subprocess under uvicorn on loopback.

Ingesting the sample knowledge base embeds every chunk (about 15 s here), so it is done once per session
into a template directory; each server gets its own copy (one writer per embedded Chroma directory).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from zantara_rag.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
KNOWLEDGE = ROOT / "apps" / "knowledge"
# The models a server uses when the test does not choose (tests/test_models.py says which generation).
DEFAULT_MODEL = str(Settings.model_fields["anthropic_model"].default)
DEFAULT_FALLBACK = str(Settings.model_fields["anthropic_fallback_model"].default)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], sig: int, timeout: float) -> None:
    """Send `sig` to a process still running and wait for it; kill it if it outlasts `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.05) -> None:
    """Poll `condition` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def base_env(**overrides: Any) -> dict[str, str]:
    """The environment of a test server: offline, no API key unless given, fast extractive chunks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CHROMA_", "FLY_"))}
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "LOG_LEVEL": "info",
            "EXTRACTIVE_CHUNK_DELAY_MS": "0",
            "PYTHONUNBUFFERED": "1",
            # Every test client is 127.0.0.1: limits are off unless a test sets them (tests/test_abuse.py).
            "RATE_LIMIT_PER_MINUTE": "0",
            "MAX_STREAMS_PER_CLIENT": "0",
            "MAX_CONCURRENT_STREAMS": "0",
            "DAILY_TOKEN_BUDGET": "0",
            "DAILY_TOKEN_BUDGET_PER_CLIENT": "0",
            # Faults enqueued by one test must not open a circuit breaker for the next: off unless a test
            # sets it (tests/test_faults.py).
            "UPSTREAM_BREAKER_FAILURES": "0",
        }
    )
    env.update({k: str(v) for k, v in overrides.items() if v is not None})
    return env


def claude_env(base_url: str) -> dict[str, str]:
    """Settings of a server whose Claude is the fake server (tests/fakes), reached through the real SDK."""
    return {
        "ANTHROPIC_API_KEY": "sk-ant-test-SECRET-0123456789",
        "ANTHROPIC_BASE_URL": base_url,
        "UPSTREAM_RETRY_AFTER_CAP": "0.2",
        "UPSTREAM_FIRST_TOKEN_TIMEOUT": "2",
        "UPSTREAM_IDLE_TIMEOUT": "2",
    }


def run_cli(*args: str, timeout: float = 300, **env: Any) -> subprocess.CompletedProcess[str]:
    """The real `zantara-rag` CLI with `args`, in the tests' base environment plus `env`; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "zantara_rag.cli", *args],
        env=base_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ingest_template(target: Path, *paths: Path, **env: Any) -> str:
    """Run the real `zantara-rag ingest` CLI into `target`; returns its summary line."""
    out = run_cli("ingest", "--no-progress", *map(str, paths), timeout=600, CHROMA_PATH=target, **env)
    if out.returncode != 0:
        raise RuntimeError(f"ingest failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout.strip().splitlines()[-1]


class ServerProcess:
    """The real app under real uvicorn. Use as a context manager; `url` is its base URL."""

    def __init__(self, chroma_template: Path | None = None, ready_timeout: float = 120.0, **env: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = Path(tempfile.mkdtemp(prefix="zantara-test-"))
        self.chroma = self._tmp / "chroma"
        if chroma_template is not None:
            shutil.copytree(chroma_template, self.chroma)
        self.log_path = self._tmp / "server.log"
        env.setdefault("CHROMA_PATH", self.chroma)
        self.env = base_env(HOST="127.0.0.1", PORT=self.port, **env)
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    def start(self, wait: str | None = "/ready") -> ServerProcess:
        # The child holds its own copy of the descriptor: ours is closed as soon as it has started.
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "zantara_rag.cli", "serve"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_for(wait, self.ready_timeout)
        return self

    def wait_for(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{path} not 200 after {timeout}s:\n{self.logs()[-4000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.returncode = self.proc.wait(timeout=timeout)
        return self.returncode

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT, 15)
            self.returncode = self.proc.returncode

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
