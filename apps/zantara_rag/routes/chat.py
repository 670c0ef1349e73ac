"""`GET /bali-zero/chat-stream`: decide everything before the first byte, then relay the stream.

Validation, resume routing and retrieval all happen in the `open_stream` dependency, before FastAPI sends
the status line. A browser (its `Accept` names `text/event-stream`) gets failures in-band as one terminal
error event, because EventSource shows nothing of a 4xx; other clients get a 4xx/5xx JSON body with the
same message and code.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from ..chat import parse_chat
from ..errors import InvalidRequest, ShuttingDown, StreamExpired, ZantaraError
from ..pipeline import error_json, produce
from ..services import Services, ServicesDep
from ..streams import EventId, Stream

log = logging.getLogger(__name__)
router = APIRouter()


class NoContent(Exception):
    """The stream already ended and the client has its terminal event: 204 stops EventSource for good."""


class ReplayElsewhere(Exception):
    """The stream lives on another Fly machine: ask Fly's proxy to replay the request there."""

    def __init__(self, machine: str) -> None:
        super().__init__(machine)
        self.machine = machine


@dataclass
class Opened:
    stream: Stream
    after: int


def wants_event_stream(accept: str | None) -> bool:
    return "text/event-stream" in (accept or "").lower()


def _rejected(services: Services, error: ZantaraError) -> Opened:
    """A one-event finished stream, so that a reconnect after the error gets 204 rather than a retry loop."""
    stream = services.hub.create_finished(error_json(error, 0), outcome=error.code)
    return Opened(stream, 0)


async def open_stream(
    request: Request,
    services: ServicesDep,
    query: Annotated[str | None, Query(description="The user's question.")] = None,
    user_email: Annotated[
        str | None, Query(description="Optional; personalises answers for team members.")
    ] = None,
    conversation_history: Annotated[
        str | None, Query(description='JSON array of {"role": "user"|"assistant", "content": str}.')
    ] = None,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header(alias="last-event-id")] = None,
) -> Opened:
    in_band = wants_event_stream(accept)
    try:
        if last_event_id is not None and last_event_id.strip():
            return _resume(services, request, last_event_id)
        if services.draining:
            raise ShuttingDown()
        chat = parse_chat(query, user_email, conversation_history, services.settings)
        retrieval = await services.retriever.retrieve(chat.query)
    except (NoContent, ReplayElsewhere):
        raise
    except ZantaraError as exc:
        if exc.__cause__ is not None:
            log.error("retrieval failed (%s)", type(exc.__cause__).__name__)
        if in_band:
            return _rejected(services, exc)
        raise
    member = services.team.find(chat.user_email)
    stream = services.hub.create(
        lambda s: produce(
            s, services.answerer, chat, retrieval.passages, member, draining=services.drain_event
        )
    )
    return Opened(stream, 0)


def _resume(services: Services, request: Request, raw: str) -> Opened:
    event_id = EventId.parse(raw)
    if event_id is None:
        raise StreamExpired()
    hub = services.hub
    if event_id.machine != hub.machine_id:
        on_fly = services.settings.fly_machine_id is not None
        if on_fly and "fly-preferred-instance-unavailable" not in request.headers:
            raise ReplayElsewhere(event_id.machine)
        raise StreamExpired()
    stream = hub.get(event_id.stream)
    if stream is None or event_id.position > stream.last_position:
        raise StreamExpired()
    if stream.finished and event_id.position >= stream.last_position:
        raise NoContent()
    if not stream.can_replay_from(event_id.position):
        raise StreamExpired()
    stream.resumes += 1
    return Opened(stream, event_id.position)


@router.get(
    "/bali-zero/chat-stream",
    response_class=EventSourceResponse,
    summary="Ask Zantara; the answer streams as Server-Sent Events",
    responses={
        204: {"description": "Reconnect to a stream whose terminal event the client already has."},
        400: {"description": "Invalid input (non-SSE clients only; SSE clients get an in-band error)."},
        403: {"description": "Origin not allowed."},
        413: {"description": "Query too long (non-SSE clients)."},
        503: {"description": "Retrieval unavailable or shutting down (non-SSE clients)."},
    },
)
async def chat_stream(
    opened: Annotated[Opened, Depends(open_stream)], services: ServicesDep
) -> AsyncIterator[ServerSentEvent]:
    stream, hub = opened.stream, services.hub
    hub.attach(stream)
    try:
        async for position, data in stream.follow(opened.after, services.settings.slow_client_max_lag_events):
            yield ServerSentEvent(raw_data=data, id=f"{stream.id}:{position}")
    except LookupError:
        yield ServerSentEvent(raw_data=error_json(StreamExpired(), 0))
    finally:
        hub.detach(stream)


__all__ = ["InvalidRequest", "NoContent", "ReplayElsewhere", "router"]
