"""A real PostgreSQL server for the tests: Debian's `postgresql` binaries, a throwaway cluster in a temporary
directory, on a free loopback port, started and stopped by the test session (as `tests/chroma_server.py` does
for Chroma).

PostgreSQL refuses to run as root: as root (CI) the cluster belongs to the `postgres` system user that the
Debian package creates, and the server runs as that user. `scripts/install-databases.sh` installs the package.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.harness import free_port, stop_process

SUPERUSER = "zantara"


def postgres_bin() -> Path:
    """The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout); fails when PostgreSQL is missing."""
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise RuntimeError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/postgres): "
            "run `bash scripts/install-databases.sh` as root"
        )
    return versions[-1]


class PostgresServer:
    """`initdb` then `postgres -D DIR -p N` on 127.0.0.1, trust authentication, no fsync (throwaway data)."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self._tmp = Path(tempfile.mkdtemp(prefix="zantara-pg-"))
        self.data = self._tmp / "data"
        self.port = free_port()
        self.log_path = self._tmp / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            os.chown(self._tmp, user.pw_uid, user.pw_gid)
        self._initdb()

    def _initdb(self) -> None:
        out = subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
             "--locale=C.UTF-8", "--no-sync"],
            capture_output=True, text=True, timeout=120, check=False, cwd=self._tmp, **self._as,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> PostgresServer:
        settings = ["listen_addresses=127.0.0.1", "fsync=off", "full_page_writes=off", "max_connections=200"]
        command = [
            str(self.bin / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self._tmp),
        ]
        for setting in settings:
            command += ["-c", setting]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._tmp,
                start_new_session=True,  # its own process group: `pause` freezes the server and its backends
                **self._as,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            if self._psql("SELECT 1").returncode == 0:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"postgres not accepting connections after {timeout}s:\n{self.logs()[-3000:]}")

    def _psql(self, sql: str) -> subprocess.CompletedProcess[str]:
        psql = self.bin / "psql"
        return subprocess.run(
            [str(psql if psql.exists() else "psql"), self.url(), "-v", "ON_ERROR_STOP=1", "-qtAc", sql],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    def create_database(self) -> str:
        """A new empty database; its URL (`postgresql://...`, as DATABASE_URL takes it)."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        out = self._psql(f"CREATE DATABASE {name}")
        if out.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE failed: {out.stderr}")
        return self.url(name)

    def pause(self) -> None:
        """Freeze the server and its backends (SIGSTOP): a database that accepts and answers nothing."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the server (fast shutdown), keeping its data: `start` serves it again on the same port."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, signal.SIGINT, 30)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
