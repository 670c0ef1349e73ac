"""scripts/smoke.sh, the curl-only smoke test for a deployed instance, run against the real server."""

from __future__ import annotations

import subprocess

import pytest

from tests.harness import ROOT, ServerProcess, free_port

pytestmark = pytest.mark.slow  # boots the service (or a browser) as a subprocess

SMOKE = ROOT / "scripts" / "smoke.sh"


def test_smoke_script_passes_against_a_live_server(extractive_server: ServerProcess) -> None:
    out = subprocess.run(
        ["bash", str(SMOKE), extractive_server.url], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAIL" not in out.stdout
    assert out.stdout.count("PASS") >= 5


def test_smoke_script_fails_readably_against_a_dead_port() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(
        ["bash", str(SMOKE), dead],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "SMOKE_TIMEOUT": "3"},
    )
    assert out.returncode != 0
    assert "FAIL" in out.stdout
