"""`zantara-rag`: serve, ingest, token."""

from __future__ import annotations

import argparse
import logging
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

    token = sub.add_parser("token", help="mint a signed access token (needs AUTH_SECRET)")
    token.add_argument("--sub", required=True, help="the subject, usually the user's e-mail")
    token.add_argument("--ttl", default="1h", help="lifetime, e.g. 30m, 1h, 2d (default 1h)")

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
    from .errors import EmbeddingModelMismatch
    from .knowledge.enrichment import Enricher
    from .knowledge.ingest import ingest
    from .logs import configure_logging
    from .retrieval.embedder import Embedder
    from .retrieval.store import INDEX_FORMAT, VectorStore

    settings = load_settings()
    configure_logging(settings)
    paths = args.paths or [settings.knowledge_path]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"zantara-rag ingest: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
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
            "knowledge base: "
            "`zantara-rag ingest --reset`).",
            file=sys.stderr,
        )
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
        enricher=Enricher.from_settings(settings),
    )
    print(report.summary())
    return 1 if report.failed and report.files == len(report.failed) else 0


def _token(args: argparse.Namespace) -> int:
    from .http.auth import mint_token, parse_ttl

    settings = load_settings()
    if settings.auth_secret is None:
        print("zantara-rag token: set AUTH_SECRET first", file=sys.stderr)
        return 2
    try:
        print(mint_token(settings, args.sub, parse_ttl(args.ttl)))
    except ValueError as exc:
        print(f"zantara-rag token: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    logging.basicConfig()
    raise SystemExit(main())
