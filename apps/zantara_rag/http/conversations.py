"""Conversations and feedback: `GET /conversations`, `GET`/`DELETE /conversations/{id}`, `POST /feedback`, and
the chat stream's step that reads a continued conversation's turns alongside retrieval.

With authentication on, a conversation belongs to the token's subject and everyone else gets 404; with it
off, the id itself (128 random bits) is the capability. The token travels in `Authorization: Bearer` only:
these are fetch requests, and a token in a URL ends up in browser history.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..conversations.keeper import Thread, is_conversation_id
from ..conversations.storage import Access, StoredTurn
from ..errors import NO_CONVERSATION, NotFound
from ..retrieval.search import Retrieval
from ..services import Services
from .auth import authenticate
from .deps import ServicesDep
from .parsing import sanitize

router = APIRouter(tags=["conversations"])

MAX_COMMENT_CHARS = 2000
AuthorizationHeader = Annotated[
    str | None, Header(description="`Bearer <token>`, when authentication is on.")
]


async def retrieve_in_thread(
    services: Services, query: str, requested: str | None, access: Access
) -> tuple[Retrieval, Thread]:
    """Retrieval, and the continued conversation's stored turns read at the same time (no extra wait)."""
    keeper = services.conversations
    if not is_conversation_id(requested) or keeper.store is None:
        return await services.retriever.retrieve(query), await keeper.thread(requested, access)
    reading = asyncio.ensure_future(keeper.thread(requested, access))
    try:
        retrieval = await services.retriever.retrieve(query)
    except BaseException:
        reading.cancel()
        raise
    return retrieval, await reading


def caller(services: Services, authorization: str | None) -> Access:
    """Who asks: with authentication on, the token's subject (401 without a valid token); else nobody."""
    principal = authenticate(services.settings, authorization, None)
    if principal is None:
        return Access(None, enforced=False)
    return services.conversations.access(principal.subject, enforced=True)


class _Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class TurnUsage(_Out):
    input_tokens: int = Field(alias="inputTokens")
    output_tokens: int = Field(alias="outputTokens")
    cache_read_tokens: int = Field(alias="cacheReadTokens")


class TurnPublic(_Out):
    """One finished answer, as its stream sent it."""

    turn: int = Field(description="1-based; what `POST /feedback` names.")
    asked_at: float = Field(alias="askedAt", description="Unix seconds.")
    question: str
    answer: str = Field(
        description="The text sent (for an interrupted answer, what was sent before it stopped)."
    )
    sources: list[dict[str, Any]] = Field(description="The sources event's entries, as sent.")
    model: str | None
    degraded: bool
    outcome: str = Field(description="`done`, `degraded`, or the terminal error code.")
    usage: TurnUsage
    time_to_first_chunk_ms: float | None = Field(alias="timeToFirstChunkMs")
    duration_ms: float | None = Field(alias="durationMs")
    rating: Literal[1, -1] | None = None
    comment: str | None = None


class ConversationPublic(_Out):
    conversation_id: str = Field(alias="conversationId")
    created_at: float = Field(alias="createdAt")
    updated_at: float = Field(alias="updatedAt")
    turns: list[TurnPublic]


class ConversationListed(_Out):
    conversation_id: str = Field(alias="conversationId")
    created_at: float = Field(alias="createdAt")
    updated_at: float = Field(alias="updatedAt")
    turns: int
    title: str = Field(description="The first question, at most 120 characters.")


class ConversationList(_Out):
    conversations: list[ConversationListed]


class FeedbackIn(BaseModel):
    """A rating of one answer; a second rating of the same turn replaces the first."""

    model_config = ConfigDict(strict=True, extra="ignore")

    conversation_id: str = Field(max_length=64)
    turn: int = Field(ge=1, le=1_000_000, description="1-based, as in `GET /conversations/{id}`.")
    # An int with a check rather than Literal[1, -1], which takes `true` for 1 even in strict mode.
    rating: int = Field(json_schema_extra={"enum": [1, -1]}, description="1 (thumbs up) or -1 (thumbs down).")
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)

    @field_validator("rating")
    @classmethod
    def _one_or_minus_one(cls, value: int) -> int:
        if value not in (1, -1):
            raise ValueError("must be 1 or -1")
        return value


def _ts(at: datetime) -> float:
    return round(at.timestamp(), 3)


def _public(turn: StoredTurn) -> TurnPublic:
    return TurnPublic(
        turn=turn.number,
        asked_at=_ts(turn.asked_at),
        question=turn.question,
        answer=turn.answer,
        sources=turn.sources,
        model=turn.model,
        degraded=turn.degraded,
        outcome=turn.outcome,
        usage=TurnUsage(
            input_tokens=turn.input_tokens,
            output_tokens=turn.output_tokens,
            cache_read_tokens=turn.cache_read_tokens,
        ),
        time_to_first_chunk_ms=turn.first_chunk_ms,
        duration_ms=turn.duration_ms,
        rating=1 if turn.rating == 1 else -1 if turn.rating == -1 else None,
        comment=turn.comment,
    )


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    401: {"description": "Authentication is on and the token is missing or invalid."},
    404: {"description": "No such conversation (or turn), or not the caller's."},
}


@router.get(
    "/conversations",
    response_model=ConversationList,
    summary="The caller's conversations, most recently active first (authentication on only)",
    responses=_NOT_FOUND,
)
async def list_conversations(
    services: ServicesDep,
    authorization: AuthorizationHeader = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ConversationList:
    access = caller(services, authorization)
    if not access.enforced:
        raise NotFound(
            "Conversations are listed only when authentication is on: keep the ids you were given."
        )
    found = await services.conversations.conversations(access, limit)
    return ConversationList(
        conversations=[
            ConversationListed(
                conversation_id=c.id,
                created_at=_ts(c.created_at),
                updated_at=_ts(c.updated_at),
                turns=c.turns,
                title=c.title[:120],
            )
            for c in found
        ]
    )


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationPublic,
    summary="A conversation's turns, oldest first",
    responses=_NOT_FOUND,
)
async def get_conversation(
    conversation_id: str, services: ServicesDep, authorization: AuthorizationHeader = None
) -> ConversationPublic:
    found = await services.conversations.conversation(conversation_id, caller(services, authorization))
    if found is None:
        raise NotFound(NO_CONVERSATION)
    return ConversationPublic(
        conversation_id=found.id,
        created_at=_ts(found.created_at),
        updated_at=_ts(found.updated_at),
        turns=[_public(t) for t in found.turns],
    )


@router.delete(
    "/conversations/{conversation_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a conversation: its turns and feedback are gone, and it is no longer used as history",
    responses=_NOT_FOUND,
)
async def delete_conversation(
    conversation_id: str, services: ServicesDep, authorization: AuthorizationHeader = None
) -> Response:
    if not await services.conversations.delete(conversation_id, caller(services, authorization)):
        raise NotFound(NO_CONVERSATION)
    return Response(status_code=204)


@router.post(
    "/feedback",
    status_code=204,
    response_class=Response,
    summary="Rate one answer: 1 (thumbs up) or -1 (thumbs down), with an optional comment",
    responses={**_NOT_FOUND, 400: {"description": "The body is not a valid rating."}},
)
async def post_feedback(
    feedback: FeedbackIn, services: ServicesDep, authorization: AuthorizationHeader = None
) -> Response:
    access = caller(services, authorization)
    comment = sanitize(feedback.comment).strip() if feedback.comment else None
    rated = await services.conversations.rate(
        feedback.conversation_id, feedback.turn, access, feedback.rating, comment or None
    )
    if not rated:
        raise NotFound("There is no such answer in this conversation, or it is not yours.")
    return Response(status_code=204)
