"""One writer per embedded Chroma directory: an advisory lock (`flock`) on a file inside it.

Embedded Chroma keeps its index in the process that opened it: a second process writing the same directory
is not seen by the first and can corrupt it. The running service holds this lock for its whole life;
`zantara-rag ingest` takes it for the duration of its run and, when a service holds it, refuses and names
`--server` (send the files through the service instead). The kernel releases the lock when its holder
exits, however it exits, so a crash never leaves a stale lock behind. A Chroma server (`CHROMA_URL`)
takes any number of writers and needs no lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import StoreBusy

LOCK_NAME = "zantara-writer.lock"


class WriterLock:
    """The exclusive, non-blocking writer lock of one embedded store directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, holder: str) -> WriterLock:
        """Take the lock or raise `StoreBusy` at once; `holder` is written in the file for people to read."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreBusy(
                f"another process writes the embedded store {self.path.parent} (a running service, or "
                "`zantara-rag ingest`): one writer at a time. Send files through the running service with "
                "`zantara-rag ingest --server URL --token T PATH...`"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{holder} pid {os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
