"""Earlier versions of the service, rebuilt on the fly: an optimisation's before and after run together.

`sdk_helper()`: the service as it was before `answer.py` read Claude's raw event stream, i.e. with the SDK's
`messages.stream()` helper, in a copy of `apps/zantara_rag` under a temporary directory. It is made by
undoing that one change textually; if the code has moved on so that the change cannot be located, it
returns None and the comparison is skipped (and says so) rather than measuring something else.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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


def sdk_helper() -> Path | None:
    """A directory to put first on PYTHONPATH, holding the service with the `messages.stream()` helper."""
    source = (ROOT / "apps" / "zantara_rag" / "answer.py").read_text()
    pairs = [(_SDK_AFTER, _SDK_BEFORE), (_EVENT_AFTER, _EVENT_BEFORE), (_YIELD_AFTER, _YIELD_BEFORE)]
    if any(source.count(after) != 1 for after, _ in pairs):
        return None
    for after, before in pairs:
        source = source.replace(after, before)
    target = Path(tempfile.mkdtemp(prefix="bench-variant-sdk-helper-"))
    shutil.copytree(ROOT / "apps" / "zantara_rag", target / "zantara_rag")
    (target / "zantara_rag" / "answer.py").write_text(source)
    return target
