"""Schemathesis fuzzes every operation of the running service's OpenAPI document: no input may cause a 5xx.

Bounded (`--max-examples`, a seed, a timeout) so that it can run on every CI build, against loopback only.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ServerProcess

pytestmark = pytest.mark.slow  # boots the service (or a browser) as a subprocess

MAX_EXAMPLES = 30


def test_no_generated_request_causes_a_server_error(
    mini_claude_server: ServerProcess, tmp_path: Path
) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{mini_claude_server.url}/openapi.json",
            "--checks=not_a_server_error",
            f"--max-examples={MAX_EXAMPLES}",
            "--seed=20261121",
            "--request-timeout=30",
            "--generation-database=none",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-6000:]
    # It really ran: every operation of the document was exercised, with many cases, all passing.
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    tested = re.search(r"Tested: (\d+)", report)
    cases = re.search(r"(\d+) generated, (\d+) passed", report)
    assert selected and tested and cases, report[-3000:]
    assert selected[1] == selected[2] == tested[1] and int(tested[1]) >= 3
    assert cases[1] == cases[2] and int(cases[1]) >= MAX_EXAMPLES
