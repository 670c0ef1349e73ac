"""Server mode (`CHROMA_URL`): the store is a real `chroma run` server, shared by machines and ingested once.

The wire contract in server mode is tests/test_contract.py's `[server]` half; here are the properties that
only server mode has: an ingest reaches a running service without a restart, and an outage of the store is
a clean, logged `retrieval_unavailable` that heals when the store comes back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import chromadb
import httpx
import pytest
from chromadb.config import Settings as ChromaSettings

from tests.chroma_server import ChromaServer
from tests.harness import ServerProcess, ingest_template
from tests.sse import CHAT, ask, assert_contract
from zantara_rag.settings import DEFAULT_EMBEDDING_MODEL

pytestmark = [pytest.mark.server_mode, pytest.mark.slow]

FACT = """---
title: Quokka permit
url: https://balizero.com/kb/quokka-permit
---

# Quokka permit

The Quokka permit is a fictional permit used by the Zantara test suite. The Quokka permit costs
IDR 4,321 per day and is issued by the Bali Zero test office in Denpasar within three working days.
"""


@pytest.fixture(scope="module")
def fact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fact")
    (folder / "quokka-permit.md").write_text(FACT, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def own_chroma() -> Iterator[ChromaServer]:
    """A Chroma server of this module's own, which tests may stop and start again."""
    with ChromaServer() as chroma:
        yield chroma


@pytest.fixture(scope="module")
def live(own_chroma: ChromaServer) -> Iterator[ServerProcess]:
    """A service on `own_chroma`'s empty collection, without first-start ingestion."""
    server = ServerProcess(CHROMA_URL=own_chroma.url, AUTO_INGEST="false")
    try:
        yield server.start(wait="/health")
    finally:
        server.cleanup()


def test_the_cli_ingests_into_the_server_and_the_service_reads_it(
    chroma_server: ChromaServer, tmp_path: Path
) -> None:
    client = chromadb.HttpClient(
        host="127.0.0.1", port=chroma_server.port, settings=ChromaSettings(anonymized_telemetry=False)
    )
    collection = client.get_collection("zantara-kb")
    assert collection.metadata["embedding_model"] == DEFAULT_EMBEDDING_MODEL
    chunks = collection.count()
    assert chunks > 100
    # Nothing on local disk: the service's CHROMA_PATH stays empty.
    with ServerProcess(CHROMA_URL=chroma_server.url, CHROMA_PATH=tmp_path / "unused") as server:
        ready = httpx.get(server.url + "/ready").json()
        assert ready["status"] == "ready" and ready["chunks"] == chunks
        got = ask(server.url, "How much is the overstay fine per day?")
        assert_contract(got)
        assert "1,000,000" in got.answer
    assert not (tmp_path / "unused").exists()


def test_a_document_ingested_while_serving_is_answered_without_restart(
    live: ServerProcess, own_chroma: ChromaServer, fact: Path, tmp_path: Path
) -> None:
    summary = ingest_template(tmp_path / "unused", fact, CHROMA_URL=own_chroma.url)
    assert summary.startswith("1 files: ") and "0 removed" in summary, summary
    live.wait_for("/ready", timeout=10)
    got = ask(live.url, "How much does the Quokka permit cost per day?")
    assert_contract(got)
    assert "4,321" in got.answer
    assert got.sources[0]["source"] == "Quokka permit"


def test_a_store_outage_is_retrieval_unavailable_and_heals(
    live: ServerProcess, own_chroma: ChromaServer
) -> None:
    assert_contract(ask(live.url, "Quokka permit"))
    own_chroma.stop()
    try:
        down = ask(live.url, "Quokka permit")
        assert_contract(down, expect_error="retrieval_unavailable")
        plain = httpx.get(live.url + CHAT, params={"query": "Quokka permit"}, timeout=30)
        assert plain.status_code == 503 and plain.json()["code"] == "retrieval_unavailable"
        ready = httpx.get(live.url + "/ready", timeout=10)
        assert ready.status_code == 503 and ready.json()["reason"] == "vector store unreachable"
    finally:
        own_chroma.start()
    assert_contract(ask(live.url, "Quokka permit"))
    lines = [json.loads(line) for line in live.logs().splitlines()]
    failures = [line["msg"] for line in lines if line["msg"].startswith("retrieval failed")]
    assert failures, "the outage must be logged"
    assert all(re.fullmatch(r"retrieval failed \(\w+\)", msg) for msg in failures), failures
