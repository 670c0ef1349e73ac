"""The error hierarchy. Each error carries a machine `code` and a message that is safe to show a user.

Driver and SDK exceptions are translated into these once, at the boundary; their text never travels further.
"""

from __future__ import annotations


class ZantaraError(Exception):
    """Base: `code` is stable for clients, `message` is safe to show and ends an answer sensibly."""

    code = "internal_error"
    status = 500
    message = "Sorry, something went wrong on our side. Please try again."
    retry_after: int | None = None  # seconds; sent as `Retry-After` and `retryAfter` when known

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        if message is not None:
            self.message = message
        if retry_after is not None:
            self.retry_after = retry_after
        super().__init__(self.message)

    def response_headers(self) -> dict[str, str]:
        """Headers of the non-streaming error response."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class InvalidRequest(ZantaraError):
    code = "invalid_request"
    status = 400


class InvalidQuery(InvalidRequest):
    code = "invalid_query"
    message = "Please type a question."


class QueryTooLong(InvalidRequest):
    code = "query_too_long"
    status = 413


class InvalidHistory(InvalidRequest):
    code = "invalid_history"


class UrlTooLong(InvalidRequest):
    code = "url_too_long"
    status = 414
    message = "This request is too long. Please start a new conversation or ask a shorter question."


class Unauthorized(ZantaraError):
    code = "unauthorized"
    status = 401
    message = "Please sign in again: your access token is missing, invalid or expired."

    def response_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class RateLimited(ZantaraError):
    code = "rate_limited"
    status = 429
    message = "You are asking questions faster than Zantara can answer. Please wait a moment and ask again."


class BudgetExhausted(ZantaraError):
    code = "budget_exhausted"
    status = 429
    message = "Zantara has answered as many questions as it can today. Please try again tomorrow."


class InvalidFeedback(InvalidRequest):
    code = "invalid_feedback"
    message = (
        'Feedback must look like {"conversation_id": "...", "turn": 1, "rating": 1 or -1, "comment": "..."}.'
    )


class ConversationsUnavailable(ZantaraError):
    """The conversation database failed or did not answer in time: the request wrote nothing new."""

    code = "conversations_unavailable"
    status = 503
    message = "Saved conversations are unavailable right now. Please try again in a moment."


class NotFound(ZantaraError):
    """Also what something that belongs to someone else looks like: nobody learns which ids exist."""

    code = "not_found"
    status = 404
    message = "Not found."


NO_CONVERSATION = "There is no such conversation, or it is not yours."


class InvalidEmail(InvalidRequest):
    code = "invalid_email"
    message = "The e-mail address is not valid."


class OriginNotAllowed(ZantaraError):
    code = "origin_not_allowed"
    status = 403
    message = "This origin is not allowed to use the Zantara API."


class RetrievalUnavailable(ZantaraError):
    code = "retrieval_unavailable"
    status = 503
    message = (
        "Sorry, the knowledge base is unavailable right now, so I can't give a grounded answer. "
        "Please try again in a moment."
    )


class UpstreamInterrupted(ZantaraError):
    code = "upstream_interrupted"
    status = 502
    message = "… Sorry, the answer was interrupted. Please ask again to get the rest."


class StreamExpired(ZantaraError):
    code = "stream_expired"
    status = 410
    message = "This answer is no longer available to resume. Please ask again."


class ShuttingDown(ZantaraError):
    code = "shutting_down"
    status = 503
    message = "Zantara is restarting. Please ask again in a few seconds."


class CannotStart(ZantaraError):
    """A refusal to start (logged, the process exits); never sent to a client, so not in docs/api.md."""

    code = "cannot_start"
    status = 503


class EmbeddingModelMismatch(CannotStart):
    """The collection was built with another embedding model: searching it would return garbage."""

    code = "embedding_model_mismatch"
    status = 503


class Forbidden(ZantaraError):
    code = "forbidden"
    status = 403
    message = "This token may not manage the knowledge base: mint one with `zantara-rag token --admin`."


class UploadTooLarge(ZantaraError):
    code = "too_large"
    status = 413


class UnsupportedType(ZantaraError):
    code = "unsupported_type"
    status = 415


class InvalidUpload(InvalidRequest):
    code = "invalid_upload"
    message = "Send the files as multipart/form-data, each in a field named `file`."


class StoreBusy(ZantaraError):
    """Another process writes the embedded store: a second writer would corrupt it."""

    code = "store_busy"
    status = 503


class KnowledgeUnavailable(ZantaraError):
    """A write to the knowledge base failed (the store is unreachable): what was being written is not kept."""

    code = "knowledge_unavailable"
    status = 503
    message = (
        "The knowledge base could not be written right now. The document being written keeps its previous "
        "version; documents listed before it were saved. Please try again in a moment."
    )


class IndexOutdated(CannotStart):
    """The collection was built by an earlier version, in a format this version cannot search correctly."""

    code = "index_outdated"
    status = 503


class InvalidGlossary(CannotStart):
    """GLOSSARY_PATH (or the bundled glossary) is not a list of {en, id} entries."""

    code = "invalid_glossary"
    status = 503
