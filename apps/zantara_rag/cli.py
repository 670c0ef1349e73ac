"""`zantara-rag`: serve, ingest, token, report gaps, erase."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from .settings import Settings, describe_validation_error

if TYPE_CHECKING:
    from .conversations.storage import ConversationStore

T = TypeVar("T")


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        print(f"zantara-rag: {describe_validation_error(exc)}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zantara-rag", description="Bali Zero's streaming RAG chat backend."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service (ingests the sample set on first start)")
    serve.add_argument("--host", help="bind address (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: PORT or 8000)")
    serve.add_argument(
        "--proxy-headers",
        action="store_true",
        help="take the client address from X-Forwarded-For (not behind Fly: see docs/security.md)",
    )
    serve.add_argument(
        "--forwarded-allow-ips", default=None, help="proxy addresses whose X-Forwarded-For to trust"
    )

    ing = sub.add_parser("ingest", help="index knowledge files (markdown, text, HTML, PDF)")
    ing.add_argument(
        "paths", nargs="*", type=Path, help="files or folders (default: the sample knowledge base)"
    )
    ing.add_argument("--prune", action="store_true", help="remove chunks of files that are gone")
    ing.add_argument("--reset", action="store_true", help="drop the collection and rebuild it")
    ing.add_argument("--no-progress", action="store_true", help="no progress bar")
    ing.add_argument(
        "--server",
        metavar="URL",
        help="send the files through a running service's admin API instead of writing the store here",
    )
    ing.add_argument(
        "--token",
        default=os.environ.get("ZANTARA_TOKEN"),
        help="admin token for --server (default: ZANTARA_TOKEN)",
    )

    token = sub.add_parser("token", help="mint a signed access token (needs AUTH_SECRET)")
    token.add_argument("--sub", required=True, help="the subject, usually the user's e-mail")
    token.add_argument("--ttl", default="1h", help="lifetime, e.g. 30m, 1h, 2d (default 1h)")
    token.add_argument(
        "--admin", action="store_true", help="may manage the knowledge base (/admin): keep it short-lived"
    )

    report = sub.add_parser("report", help="reports for the operator, read from the conversation database")
    reports = report.add_subparsers(dest="report", required=True)
    gaps = reports.add_parser(
        "gaps", help="questions the knowledge base fails (no source, degraded, rated -1), paraphrases grouped"
    )
    gaps.add_argument("--since", default="7d", help="how far back: 24h, 7d, 4w (default 7d)")
    gaps.add_argument("--format", choices=["table", "json"], default="table", help="default: table")

    erase = sub.add_parser(
        "erase", help="delete every stored conversation of one user (needs LOG_HASH_KEY or AUTH_SECRET)"
    )
    erase.add_argument("--email", required=True, help="the user's e-mail (the token's subject)")

    args = parser.parse_args(argv)
    commands = {"serve": _serve, "ingest": _ingest, "token": _token, "report": _report, "erase": _erase}
    return commands[args.command](args)


def _serve(args: argparse.Namespace) -> int:
    from .server import run

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(**overrides)
    run(settings, proxy_headers=args.proxy_headers, forwarded_allow_ips=args.forwarded_allow_ips)
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from .errors import StoreBusy
    from .logs import configure_logging
    from .retrieval.writer_lock import WriterLock

    settings = load_settings()
    configure_logging(settings)
    paths = args.paths or [settings.knowledge_path]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"zantara-rag ingest: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.server:
        return _ingest_remote(args, settings, paths)
    if settings.chroma_url is not None:
        return _ingest_here(args, settings, paths)
    try:
        lock = WriterLock(settings.chroma_path).acquire("zantara-rag ingest")
    except StoreBusy:
        print(
            f"zantara-rag ingest: a running service holds the store {settings.chroma_path} (one writer at "
            "a time: a second one would not be seen by it, and could corrupt it). Send the files through "
            "the service instead: zantara-rag ingest --server URL --token TOKEN PATH...",
            file=sys.stderr,
        )
        return 2
    with lock:
        return _ingest_here(args, settings, paths)


def _ingest_remote(args: argparse.Namespace, settings: Settings, paths: list[Path]) -> int:
    from .knowledge.remote import RemoteRefused, ingest_remote

    if args.reset:
        print(
            "zantara-rag ingest: --reset rebuilds the store here; it cannot go with --server", file=sys.stderr
        )
        return 2
    if not args.token:
        print("zantara-rag ingest: --server needs an admin token (--token or ZANTARA_TOKEN)", file=sys.stderr)
        return 2
    try:
        report = ingest_remote(
            paths,
            args.server,
            args.token,
            root=settings.knowledge_path,
            prune=args.prune,
            progress=False if args.no_progress else None,
            max_file_bytes=settings.ingest_max_file_bytes,
        )
    except RemoteRefused as exc:
        print(f"zantara-rag ingest: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 1 if report.failed and report.files == len(report.failed) else 0


def _ingest_here(args: argparse.Namespace, settings: Settings, paths: list[Path]) -> int:
    from .errors import EmbeddingModelMismatch
    from .knowledge.enrichment import Enricher
    from .knowledge.ingest import ingest_configured
    from .retrieval.embedder import Embedder
    from .retrieval.store import INDEX_FORMAT, VectorStore

    try:
        store = VectorStore.open(settings, reset=args.reset)
    except EmbeddingModelMismatch as exc:
        print(f"zantara-rag ingest: {exc.message}", file=sys.stderr)
        return 2
    if store.index_format < INDEX_FORMAT and store.count() > 0:
        # Adding chunks of the new format to a collection of the old one would leave it half upgraded.
        print(
            f"zantara-rag ingest: the collection {store.name!r} was built by an earlier version of "
            f"zantara-rag (index format {store.index_format}; this version writes {INDEX_FORMAT}). Rebuild "
            "it from every folder it was built from: `zantara-rag ingest --reset FOLDER...` (the sample "
            "knowledge base: `zantara-rag ingest --reset`).",
            file=sys.stderr,
        )
        return 2
    embedder = Embedder.from_settings(settings)
    enricher = Enricher.from_settings(settings)
    try:
        report = ingest_configured(
            paths,
            store,
            embedder,
            settings,
            enricher=enricher,
            prune=args.prune,
            progress=False if args.no_progress else None,
        )
    finally:
        embedder.close()
        if enricher is not None:
            enricher.close()
    print(report.summary())
    return 1 if report.failed and report.files == len(report.failed) else 0


def _token(args: argparse.Namespace) -> int:
    from .http.auth import ADMIN_SCOPE, mint_token, parse_ttl

    settings = load_settings()
    if settings.auth_secret is None:
        print("zantara-rag token: set AUTH_SECRET first", file=sys.stderr)
        return 2
    try:
        print(mint_token(settings, args.sub, parse_ttl(args.ttl), [ADMIN_SCOPE] if args.admin else []))
    except ValueError as exc:
        print(f"zantara-rag token: {exc}", file=sys.stderr)
        return 2
    return 0


def _report(args: argparse.Namespace) -> int:
    from .conversations.gaps import gaps_report, parse_since, render_json, render_table
    from .retrieval.embedder import Embedder

    settings = load_settings()
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"zantara-rag report gaps: {exc}", file=sys.stderr)
        return 2
    embedders: list[Embedder] = []

    def embed(texts: list[str]) -> list[list[float]]:
        if not embedders:  # loaded only when there is something to group
            embedders.append(Embedder.from_settings(settings))
        return embedders[0].embed(texts)

    report = _with_store(settings, lambda store: gaps_report(store, embed, since))
    if report is None:
        return 1
    print(render_json(report) if args.format == "json" else render_table(report))
    return 0


def _erase(args: argparse.Namespace) -> int:
    from .logs import KeyedHash

    settings = load_settings()
    if settings.log_hash_key is None and settings.auth_secret is None:
        print(
            "zantara-rag erase: set the service's LOG_HASH_KEY (or AUTH_SECRET, from which the key is "
            "derived when LOG_HASH_KEY is unset): owners are stored as its keyed hash",
            file=sys.stderr,
        )
        return 2
    owner = KeyedHash.from_settings(settings)(args.email)
    erased = _with_store(settings, lambda store: store.erase_owner(owner))
    if erased is None:
        return 1
    print(f"erased {erased} conversation(s)")
    return 0


def _with_store(settings: Settings, work: Callable[[ConversationStore], Awaitable[T]]) -> T | None:
    """Run `work` on the conversation database (migrated first, as the service does); None if it failed."""
    import asyncio

    from .conversations.database import create_engine, migrate
    from .conversations.storage import ConversationStore
    from .logs import configure_logging

    configure_logging(settings)

    async def run() -> T:
        engine = create_engine(settings)
        try:
            await migrate(engine)
            return await work(ConversationStore(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except (OSError, SQLAlchemyError) as exc:
        print(
            f"zantara-rag: the conversation database cannot be used ({type(exc).__name__})", file=sys.stderr
        )
        return None


if __name__ == "__main__":
    logging.basicConfig()
    raise SystemExit(main())
