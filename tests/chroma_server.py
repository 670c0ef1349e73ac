"""A real Chroma server for server-mode tests: `chroma run` (shipped in the chromadb wheel) on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.harness import free_port, stop_process

HEARTBEAT = "/api/v2/heartbeat"


def chroma_executable() -> str:
    beside = Path(sys.executable).parent / "chroma"
    found = str(beside) if beside.is_file() else shutil.which("chroma")
    if found is None:
        raise RuntimeError("the `chroma` command is missing: it ships with the chromadb package")
    return found


class ChromaServer:
    """`chroma run --path DIR --host 127.0.0.1 --port N`, ready once its heartbeat answers."""

    def __init__(self, path: Path | None = None, port: int | None = None) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="zantara-chroma-"))
        self.path = path or self._tmp / "data"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self._tmp / "chroma.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ChromaServer:
        command = ["run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [chroma_executable(), *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "ANONYMIZED_TELEMETRY": "False", "NO_COLOR": "1"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chroma exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            try:
                if httpx.get(self.url + HEARTBEAT, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"chroma heartbeat not 200 after {timeout}s:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the server, keeping its data (a later `start` on the same path and port serves it again)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, signal.SIGTERM, 15)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> ChromaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
