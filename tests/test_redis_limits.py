"""RATE_LIMIT_STORAGE_URI=redis://...: two service processes share one client's question window through a real
`redis-server`; when Redis goes away, questions are let through (and a warning is logged)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.harness import ServerProcess
from tests.redis_server import RedisServer
from tests.security import ask_sse


def test_two_machines_share_one_clients_limit_through_redis(mini_kb_template: Path) -> None:
    with RedisServer() as redis:
        env = {"AUTO_INGEST": "false", "RATE_LIMIT_STORAGE_URI": redis.url, "RATE_LIMIT_PER_MINUTE": "3"}
        with ServerProcess(mini_kb_template, **env) as a, ServerProcess(mini_kb_template, **env) as b:
            with (
                httpx.Client(base_url=a.url, timeout=30) as on_a,
                httpx.Client(base_url=b.url, timeout=30) as on_b,
            ):
                answered = [ask_sse(client).last for client in (on_a, on_a, on_b)]
                assert all(e.get("done") and "error" not in e for e in answered), answered
                # Each process alone has seen at most two questions: only the shared window refuses these.
                for client in (on_b, on_a):
                    refused = ask_sse(client).last
                    assert refused["code"] == "rate_limited" and refused["retryAfter"] >= 1
                redis.cleanup()  # Redis goes away: the limiter fails open rather than stopping every answer
                through = ask_sse(on_a).last
                assert through.get("done") and "error" not in through, through
            assert "could not read the question rate window" in a.logs()
