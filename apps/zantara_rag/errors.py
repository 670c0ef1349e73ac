"""The error hierarchy. Each error carries a machine `code` and a message that is safe to show a user.

Driver and SDK exceptions are translated into these once, at the boundary; their text never travels further.
"""

from __future__ import annotations


class ZantaraError(Exception):
    """Base: `code` is stable for clients, `message` is safe to show and ends an answer sensibly."""

    code = "internal_error"
    status = 500
    message = "Sorry, something went wrong on our side. Please try again."

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)


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


class EmbeddingModelMismatch(ZantaraError):
    """The collection was built with another embedding model: searching it would return garbage."""

    code = "embedding_model_mismatch"
    status = 503
