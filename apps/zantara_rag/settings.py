"""The one settings object: every knob is an environment variable, validated at boot.

`docs/configuration.md` documents each field; `tests/test_settings_doc.py` checks that the page and this
class agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_KNOWLEDGE_PATH = PACKAGE_DIR.parent / "knowledge"
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_ORIGINS = (
    "https://zantara.balizero.com",
    "http://localhost:3000",
    "http://localhost:5173",
    "http://127.0.0.1:3000",
    "http://127.0.0.1:5173",
)
# HS256 keys shorter than the hash output weaken the signature (RFC 7518, section 3.2).
MIN_SECRET_BYTES = 32
# A machine id becomes the first part of every event id (`<machine>-<token>:<n>`): words of [A-Za-z0-9_]
# joined by single hyphens, so the id parser can always tell the machine from the token.
MACHINE_ID_PATTERN = r"[A-Za-z0-9_]{1,64}(?:-[A-Za-z0-9_]{1,64})*"
# What ingestion reads at most per file (docs/security.md): a larger file, or a PDF of more pages, is skipped.
INGEST_MAX_FILE_BYTES = 20_000_000
INGEST_MAX_PDF_PAGES = 500
_STORAGE_URI_RE = re.compile(r"^(async\+)?(memory|redis|rediss|valkey|valkeys)://")
_DATABASE_URL_RE = re.compile(r"^(sqlite(\+aiosqlite)?:///|(postgres|postgresql(\+asyncpg)?)://)")
_ORIGIN_RE = re.compile(r"^(https?)://([a-z0-9.-]+|\[[0-9a-f:]+\])(:\d{1,5})?$")


class Settings(BaseSettings):
    """Zantara RAG configuration. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # --- server
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_query_text: bool = False
    # A request head (request line and headers) must arrive whole within this, or the connection is closed.
    head_timeout_seconds: float = Field(10.0, gt=0, le=300)
    # uvicorn's `limit_concurrency`: past this many connections (or requests in progress) it answers 503.
    limit_concurrency: int = Field(600, ge=1, le=100_000)
    # Set by Fly on its machines; there, the API docs are off unless API_DOCS says otherwise.
    fly_app_name: str | None = None
    api_docs: bool | None = None

    # --- Claude
    anthropic_api_key: SecretStr | None = None
    # Claude Haiku 5.5 (5.5 generation, Oct 2026): the fastest and cheapest current model ($0.10/$0.50 per
    # MTok below 100K prompt tokens). The fallback is another line, Claude Sonnet 5.5 (5.5 generation,
    # $2/$10): other capacity when Haiku is overloaded. Both refuse an assistant prefill (4.6+ rule).
    anthropic_model: str = Field("claude-haiku-5-5", min_length=1)
    anthropic_fallback_model: str | None = "claude-sonnet-5-5"
    anthropic_base_url: AnyHttpUrl | None = None
    # Thinking tokens count toward it on Haiku 5.5, whose adaptive thinking may run unasked, and its
    # tokenizer counts the same text as ~30 % more tokens than Haiku 4.5's.
    max_output_tokens: int = Field(2048, ge=16, le=64000)
    upstream_connect_timeout: float = Field(5.0, gt=0, le=120)
    upstream_first_token_timeout: float = Field(20.0, gt=0, le=600)
    upstream_idle_timeout: float = Field(20.0, gt=0, le=600)
    upstream_total_timeout: float = Field(120.0, gt=0, le=3600)
    upstream_retry_after_cap: float = Field(2.0, ge=0, le=60)
    upstream_breaker_failures: int = Field(5, ge=0, le=1000)
    upstream_breaker_cooldown_seconds: float = Field(30.0, gt=0, le=3600)

    # --- embeddings and the vector store
    embedding_model: str = Field(DEFAULT_EMBEDDING_MODEL, min_length=1)
    embedding_device: str = "cpu"
    embedding_backend: Literal["auto", "onnx", "torch"] = "auto"
    embedding_cache_dir: Path | None = None
    # Questions on the 8-bit model (ONNX backend; passages keep full precision): docs/retrieval.md, "Latency".
    embedding_query_precision: Literal["int8", "fp32"] = "int8"
    chroma_path: Path = Path("data/chroma")
    chroma_url: AnyHttpUrl | None = None
    chroma_collection: str = "zantara-kb"
    knowledge_path: Path = DEFAULT_KNOWLEDGE_PATH
    auto_ingest: bool = True
    ingest_max_file_bytes: int = Field(INGEST_MAX_FILE_BYTES, ge=1024, le=1_000_000_000)
    ingest_max_pdf_pages: int = Field(INGEST_MAX_PDF_PAGES, ge=1, le=100_000)

    # --- the living knowledge base (docs/operations.md#adding-a-document)
    knowledge_watch: bool = False
    knowledge_poll_seconds: float = Field(2.0, gt=0, le=60)
    admin_max_upload_bytes: int = Field(20_000_000, ge=1024, le=1_000_000_000)

    # --- retrieval
    # Prepended to questions / to passages before embedding (e5 models want "query: " / "passage: ").
    # Unset: chosen by the model's name (docs/retrieval.md, "Another embedding model").
    embedding_query_prefix: str | None = None
    embedding_passage_prefix: str | None = None

    # --- retrieval (docs/retrieval.md)
    retrieval_top_k: int = Field(6, ge=1, le=50)
    sources_top_k: int = Field(3, ge=1, le=20)
    fusion_candidates: int = Field(20, ge=1, le=500)
    min_relevance_en: float = Field(0.466, ge=0.0, le=2.0)
    min_relevance_id: float = Field(0.63, ge=0.0, le=2.0)
    glossary_path: Path | None = None
    chunk_max_chars: int = Field(1200, ge=200, le=8000)
    chunk_overlap_chars: int = Field(150, ge=0, le=2000)
    # Bilingual titles and keywords written by Claude at ingestion for documents whose front matter has none
    # (needs ANTHROPIC_API_KEY); cached by content hash (knowledge/enrichment.py).
    ingest_enrichment: Literal["auto", "off"] = "auto"
    enrichment_cache_dir: Path | None = None

    # --- request limits
    max_query_chars: int = Field(4000, ge=1, le=100_000)
    max_history_turns: int = Field(12, ge=0, le=200)
    max_history_chars: int = Field(16000, ge=0, le=1_000_000)
    max_history_param_bytes: int = Field(64_000, ge=0, le=10_000_000)

    # --- streaming
    heartbeat_seconds: float = Field(15.0, gt=0, le=120)
    extractive_chunk_delay_ms: int = Field(10, ge=0, le=1000)
    cors_allowed_origins: Annotated[tuple[str, ...], NoDecode] = DEFAULT_ORIGINS
    # `Origin: null` is what a page opened from disk (SSE_TEST.html) sends — and also what a sandboxed
    # iframe on any site sends. Development only; never in production.
    cors_allow_file_origin: bool = False
    team_directory: Path | None = None

    # --- resume, disconnects and restarts
    fly_machine_id: str | None = Field(None, pattern=f"^{MACHINE_ID_PATTERN}$", max_length=64)
    resume_grace_seconds: float = Field(15.0, ge=0, le=600)
    resume_ttl_seconds: float = Field(120.0, ge=0, le=3600)
    resume_max_streams: int = Field(5000, ge=1, le=1_000_000)
    # The longest answer: 2 x MAX_OUTPUT_TOKENS text events (an answer and a continuation), sources, done.
    resume_max_events: int = Field(4200, ge=16, le=1_000_000)
    resume_max_bytes: int = Field(1_000_000, ge=4096, le=100_000_000)
    slow_client_max_lag_events: int = Field(2000, ge=16, le=1_000_000)
    drain_seconds: float = Field(25.0, ge=0, le=290)

    # --- observability
    metrics_token: SecretStr | None = None
    # Set: /metrics is served on this port only (Fly's scraper reads it privately), never on PORT.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    timing_headers: bool = False
    # Unset: a key derived from AUTH_SECRET when that is set (logs.KeyedHash.from_settings), else a random key
    # per process (user hashes in logs then change at each restart).
    log_hash_key: SecretStr | None = None

    # --- conversations and feedback (docs/api.md), kept in a database (apps/zantara_rag/conversations)
    # Unset: a SQLite file beside CHROMA_PATH (data/zantara.db). May hold a password, hence secret.
    database_url: SecretStr | None = None
    store_conversations: bool = True
    conversation_retention_days: int = Field(90, ge=1, le=36500)

    # --- abuse protection and authentication (docs/security.md)
    auth_secret: SecretStr | None = None
    auth_secret_previous: SecretStr | None = None
    auth_audience: str = Field("zantara-rag", min_length=1, max_length=200)
    trust_proxy_headers: bool = False
    rate_limit_per_minute: int = Field(20, ge=0, le=100_000)
    max_streams_per_client: int = Field(3, ge=0, le=100_000)
    max_concurrent_streams: int = Field(500, ge=0, le=1_000_000)
    rate_limit_storage_uri: SecretStr | None = None
    daily_token_budget: int = Field(5_000_000, ge=0, le=10**12)
    daily_token_budget_per_client: int = Field(500_000, ge=0, le=10**12)
    budget_exhausted_mode: Literal["extractive", "error"] = "extractive"
    max_url_bytes: int = Field(131_072, ge=1024, le=8_000_000)
    max_request_head_bytes: int = Field(196_608, ge=4096, le=16_000_000)

    @field_validator("cors_allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("cors_allowed_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin == "*" or not _ORIGIN_RE.match(origin):
                raise ValueError(
                    f"{origin!r} is not an exact origin like https://zantara.balizero.com "
                    "(lower-case scheme://host[:port], no path, no wildcard)"
                )
        return value

    @field_validator("chroma_collection")
    @classmethod
    def _check_collection(cls, value: str) -> str:
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]", value) or ".." in value:
            raise ValueError("must be 3-512 characters of [a-zA-Z0-9._-], starting and ending alphanumeric")
        return value

    @field_validator("team_directory", "glossary_path")
    @classmethod
    def _check_readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @field_validator("auth_secret", "auth_secret_previous")
    @classmethod
    def _check_auth_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"must be at least {MIN_SECRET_BYTES} bytes (generate one with `openssl rand -hex 32`)"
            )
        return value

    @field_validator("rate_limit_storage_uri")
    @classmethod
    def _check_storage_uri(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _STORAGE_URI_RE.match(value.get_secret_value()):
            # The value may hold a password: the message does not repeat it.
            raise ValueError("must be memory:// or a redis://, rediss:// or valkey:// URI")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _DATABASE_URL_RE.match(value.get_secret_value()):
            # The value may hold a password: the message does not repeat it.
            raise ValueError("must be sqlite:///path/to/file.db or postgresql://user:password@host/database")
        return value

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        if self.chunk_overlap_chars >= self.chunk_max_chars:
            raise ValueError("CHUNK_OVERLAP_CHARS must be smaller than CHUNK_MAX_CHARS")
        if self.sources_top_k > self.retrieval_top_k:
            raise ValueError("SOURCES_TOP_K must not exceed RETRIEVAL_TOP_K")
        if self.auth_secret_previous is not None and self.auth_secret is None:
            raise ValueError("AUTH_SECRET_PREVIOUS needs AUTH_SECRET (the new secret)")
        if self.slow_client_max_lag_events >= self.resume_max_events:
            # A dropped reader resumes from the replay buffer: it must still hold where the reader was.
            raise ValueError("SLOW_CLIENT_MAX_LAG_EVENTS must be below RESUME_MAX_EVENTS")
        if self.max_url_bytes >= self.max_request_head_bytes:
            raise ValueError("MAX_URL_BYTES must be below MAX_REQUEST_HEAD_BYTES (which holds the URL)")
        if self.team_directory is not None and self.auth_secret is None:
            # Without tokens, anyone could claim a team member's address (and probe who is on the team).
            raise ValueError("TEAM_DIRECTORY needs AUTH_SECRET: only a verified token may say who asks")
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError("METRICS_PORT must differ from PORT (the public port must not serve /metrics)")
        if self.max_concurrent_streams >= self.limit_concurrency:
            raise ValueError("MAX_CONCURRENT_STREAMS must be below LIMIT_CONCURRENCY (uvicorn's own cap)")
        return self

    @property
    def docs_enabled(self) -> bool:
        """`/docs`, `/redoc` and `/openapi.json`: API_DOCS when set, else on everywhere but on Fly."""
        return self.api_docs if self.api_docs is not None else self.fly_app_name is None

    @cached_property
    def allowed_origins(self) -> frozenset[str]:
        return frozenset(self.cors_allowed_origins) | ({"null"} if self.cors_allow_file_origin else set())

    @property
    def has_api_key(self) -> bool:
        return self.anthropic_api_key is not None and bool(self.anthropic_api_key.get_secret_value())


# Settings that no longer exist, and what took their place (docs/configuration.md): a warning at start.
REMOVED = {
    "MIN_SIMILARITY": "MIN_RELEVANCE_EN and MIN_RELEVANCE_ID",
    "RERANK_CANDIDATES": "FUSION_CANDIDATES",
    "LEXICAL_WEIGHT": "nothing (BM25 replaced the word-overlap re-rank)",
}


def removed_settings(environ: Mapping[str, str]) -> list[str]:
    """One line per removed setting still set in `environ`."""
    return [
        f"{name} is no longer used (replaced by {instead}); see docs/configuration.md"
        for name, instead in REMOVED.items()
        if name in {k.upper() for k in environ}
    ]


def describe_validation_error(exc: Exception) -> str:
    """One line per problem, naming the environment variable, for a refusal to boot."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    lines = []
    for err in exc.errors():
        names = [str(p).upper() for p in err["loc"]]
        lines.append(f"{names[0]}: {err['msg']}" if names else str(err["msg"]).removeprefix("Value error, "))
    return "invalid configuration:\n  " + "\n  ".join(lines)
