"""Earlier versions of the service, rebuilt on the fly: each optimisation's before and after run together.

A variant is a directory holding a `zantara_rag` package, put first on the app's PYTHONPATH:

- `fastapi-sse`: the package at revision 7e36f9f, which sent events through FastAPI's generator-based SSE
  loop (before `relay.StreamRelay`);
- `typed-events`: the package at a377335, `StreamRelay` but Claude's events validated into the SDK's typed
  models by `messages.create(stream=True)`, an HTTP read timeout and the idle deadline re-armed per delta
  (before `client.post` with JSON events and the lazy deadlines);
- `sdk-helper`: `typed-events` with answer.py's raw event stream undone, textually, back to the
  `messages.stream()` helper.

Revisions come from `git archive`; without git or the revision (an exported tree, a shallow clone), or if
the change cannot be located, `build` returns None and the comparison is skipped (and says so) rather
than measuring something else.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

REVISIONS = {"fastapi-sse": "7e36f9f", "typed-events": "a377335"}
DESCRIPTIONS = {
    "fastapi-sse": "StreamRelay (was FastAPI's generator SSE loop)",
    "typed-events": "Claude's stream read as JSON via `client.post`, no per-read or per-delta timer "
    "(was typed SDK models, both timers)",
    "sdk-helper": "Claude's raw event stream (was the `messages.stream()` helper)",
}

_SDK_AFTER = (
    "                await self.client.messages.create(\n"
    "                    model=model, max_tokens=s.max_output_tokens, system=system, messages=messages, "
    "stream=True\n"
    "                ) as stream,\n"
)
_SDK_BEFORE = (
    "                self.client.messages.stream(\n"
    "                    model=model, max_tokens=s.max_output_tokens, system=system, messages=messages\n"
    "                ) as stream,\n"
)
_EVENT_AFTER = (
    '                        if event.type == "content_block_delta" and event.delta.type == "text_delta":\n'
    "                            if not event.delta.text:\n"
    "                                continue\n"
)
_EVENT_BEFORE = '                        if event.type == "text" and event.text:\n'
_YIELD_AFTER = "                            yield event.delta.text\n"
_YIELD_BEFORE = "                            yield event.text\n"


def revision(name: str) -> Path | None:
    """A directory holding `zantara_rag` as committed at the variant's revision."""
    try:
        archive = subprocess.run(
            ["git", "archive", REVISIONS[name], "apps/zantara_rag"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    target = Path(tempfile.mkdtemp(prefix=f"bench-variant-{name}-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    shutil.move(target / "apps" / "zantara_rag", target / "zantara_rag")
    return target


def sdk_helper() -> Path | None:
    """`typed-events` with the `messages.stream()` helper instead of the raw event stream."""
    target = revision("typed-events")
    if target is None:
        return None
    answer = target / "zantara_rag" / "answer.py"
    source = answer.read_text()
    pairs = [(_SDK_AFTER, _SDK_BEFORE), (_EVENT_AFTER, _EVENT_BEFORE), (_YIELD_AFTER, _YIELD_BEFORE)]
    if any(source.count(after) != 1 for after, _ in pairs):
        return None
    for after, before in pairs:
        source = source.replace(after, before)
    answer.write_text(source)
    return target


def build(name: str) -> Path | None:
    return sdk_helper() if name == "sdk-helper" else revision(name)
