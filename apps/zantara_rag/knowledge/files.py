"""Which files ingestion reads, and how: regular files only, never through a symbolic link, size-capped.

A knowledge folder is content, not configuration: whoever can drop a file there must not be able to make
ingestion read something else. A link `kb/notes.txt -> /proc/self/environ` would put the process's
environment (the API key) into a passage that an ordinary question retrieves. So a folder is walked
without following links, every link and every non-regular file (FIFO, socket, device) is skipped with
its reason, and a file is opened with `O_NOFOLLOW` and checked again on the open descriptor (it may have
been swapped for a link since the walk). A folder named on the command line may itself be a link: the
operator chose it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf"}
SKIPPED_NAMES = {"readme.md", "readme.txt", "license.md"}


class SkippedFile(Exception):
    """A file ingestion refuses to read; `reason` says why (reported, never fatal)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Found:
    """The files to read, sorted, and what was passed over (`name (reason)`)."""

    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def discover(paths: list[Path]) -> Found:
    """Every supported regular file under `paths`, sorted (hidden folders and READMEs left out)."""
    found = Found()
    for path in paths:
        if path.is_dir():
            _walk(path.resolve(), found)
        elif path.is_symlink() or path.exists():
            reason = _refusal(path)
            if reason is None:
                found.files.append(path.absolute())
            else:
                found.skipped.append(f"{path.name} ({reason})")
        else:
            raise FileNotFoundError(f"{path} does not exist")
    found.files.sort()
    return found


def _walk(root: Path, found: Found) -> None:
    for folder, dirs, names in os.walk(root, followlinks=False):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in [d for d in dirs if (here / d).is_symlink()]:
            found.skipped.append(f"{name}/ (symbolic link)")
        for name in sorted(names):
            file = here / name
            if name.startswith(".") or file.suffix.lower() not in SUFFIXES or name.lower() in SKIPPED_NAMES:
                continue
            reason = _refusal(file)
            if reason is None:
                found.files.append(file)
            else:
                found.skipped.append(f"{file.relative_to(root).as_posix()} ({reason})")


def _refusal(path: Path) -> str | None:
    """Why `path` is not read (it is a link, or not a regular file), or None."""
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file reached without following a link, at most `max_bytes` of them.

    Raises `SkippedFile` for a link, a non-regular file or a file over the cap.
    """
    # O_NONBLOCK: a FIFO swapped in after the walk must not block the open; it is refused below.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if path.is_symlink():
            raise SkippedFile("symbolic link") from None
        raise SkippedFile(f"cannot be opened ({type(exc).__name__})") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SkippedFile("not a regular file")
        if info.st_size > max_bytes:
            raise SkippedFile(f"larger than {max_bytes} bytes")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew after the check
        raise SkippedFile(f"larger than {max_bytes} bytes")
    return data
