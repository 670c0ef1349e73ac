"""`zantara-rag`: serve, ingest, token."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from .settings import Settings, describe_validation_error


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

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "ingest":
        return _ingest(args)
    return _token(args)


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
        )
    except RemoteRefused as exc:
        print(f"zantara-rag ingest: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 1 if report.failed and report.files == len(report.failed) else 0


def _ingest_here(args: argparse.Namespace, settings: Settings, paths: list[Path]) -> int:
    from .errors import EmbeddingModelMismatch
    from .knowledge.ingest import ingest
    from .retrieval.embedder import Embedder
    from .retrieval.store import VectorStore, connect

    client = connect(settings)
    try:
        if args.reset:
            store = VectorStore.reset(client, settings.chroma_collection, settings.embedding_model)
        else:
            store = VectorStore(client, settings.chroma_collection, settings.embedding_model)
    except EmbeddingModelMismatch as exc:
        print(f"zantara-rag ingest: {exc.message}", file=sys.stderr)
        return 2
    embedder = Embedder.from_settings(settings)
    report = ingest(
        paths,
        store,
        embedder,
        root=settings.knowledge_path,
        max_chars=settings.chunk_max_chars,
        overlap=settings.chunk_overlap_chars,
        prune=args.prune,
        progress=False if args.no_progress else None,
    )
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


if __name__ == "__main__":
    logging.basicConfig()
    raise SystemExit(main())
