"""`GET /bali-zero/chat-stream`: decide everything before the first byte, then relay the stream.

Validation, resume routing and retrieval all happen in the `open_stream` dependency, before FastAPI sends
the status line. A browser (its `Accept` names `text/event-stream`) gets failures in-band as one terminal
error event, because EventSource shows nothing of a 4xx; other clients get a 4xx/5xx JSON body with the
same message and code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request

from ..domain import ChatRequest
from ..errors import RateLimited, ShuttingDown, StreamExpired, ZantaraError
from ..events import ErrorEvent
from ..generation.answerer import OverBudgetAnswerer
from ..generation.team import Member
from ..retrieval.search import Retrieval
from ..services import Services
from ..streaming.producer import produce
from ..streaming.relay import SSE_ITEM_SCHEMA, StreamRelay
from ..streaming.stream import EventId, Reader, Stream
from .admission import Admission, Ticket
from .auth import authenticate
from .client import ClientKey
from .conversations import retrieve_in_thread
from .deps import AdmissionDep, ServicesDep
from .parsing import check_request_target, keep_recent, parse_chat

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
    """The stream a response follows, from which position, with which extra response headers."""

    stream: Stream
    after: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Asked:
    """What one chat request carries (its query parameters and headers)."""

    query: str | None
    user_email: str | None
    conversation_history: str | None
    access_token: str | None
    accept: str | None
    last_event_id: str | None
    authorization: str | None
    conversation_id: str | None = None

    @property
    def in_band(self) -> bool:
        """An EventSource: failures go out as an error event, since it shows nothing of a 4xx."""
        return "text/event-stream" in (self.accept or "").lower()


def asked(
    query: Annotated[str | None, Query(description="The user's question.")] = None,
    user_email: Annotated[
        str | None, Query(description="Optional; personalises answers for team members.")
    ] = None,
    conversation_history: Annotated[
        str | None, Query(description='JSON array of {"role": "user"|"assistant", "content": str}.')
    ] = None,
    access_token: Annotated[
        str | None, Query(description="Access token for EventSource clients, when the server requires one.")
    ] = None,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header(alias="last-event-id")] = None,
    authorization: Annotated[str | None, Header(description="`Bearer <token>`, when required.")] = None,
    conversation_id: Annotated[
        str | None, Query(description="Continue this conversation (the `conversationId` of a done event).")
    ] = None,
) -> Asked:
    return Asked(
        query,
        user_email,
        conversation_history,
        access_token,
        accept,
        last_event_id,
        authorization,
        conversation_id,
    )


class TicketHolder:
    """The admission ticket of one request until its producer takes it over; released by the request if
    no producer started (a refusal, a failed retrieval)."""

    ticket: Ticket | None = None

    def release(self) -> None:
        if self.ticket is not None:
            self.ticket.release()
            self.ticket = None


async def hold_ticket() -> AsyncIterator[TicketHolder]:
    holder = TicketHolder()
    try:
        yield holder
    finally:
        holder.release()


# `scope="request"`: the exit runs after the whole response has been sent (or the client left), never when
# the endpoint function returns; tests/test_app_inprocess.py fails if FastAPI moves that point.
HolderDep = Annotated[TicketHolder, Depends(hold_ticket, scope="request")]


async def open_stream(
    request: Request,
    services: ServicesDep,
    admission: AdmissionDep,
    holder: HolderDep,
    ask: Annotated[Asked, Depends(asked)],
) -> Opened:
    received = time.monotonic()
    try:
        return await _open(request, services, admission, holder, ask, received)
    except (NoContent, ReplayElsewhere):
        raise
    except Exception as exc:
        holder.release()
        if isinstance(exc, ZantaraError):
            error = exc
            if exc.__cause__ is not None:
                log.error("retrieval failed (%s)", type(exc.__cause__).__name__)
        else:  # a bug: the client still gets one terminal event (or a JSON 500), never the exception's text
            log.error("opening a stream failed (%s)", type(exc).__name__)
            error = ZantaraError()
        if ask.in_band:
            return _rejected(services, error, received, _log_fields(request, services))
        raise error from None


async def _open(
    request: Request,
    services: Services,
    admission: Admission,
    holder: TicketHolder,
    ask: Asked,
    received: float,
) -> Opened:
    """The steps, in order: URL, token, resume or question, admission, retrieval, the producer."""
    settings = services.settings
    raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
    check_request_target(raw_path, request.scope["query_string"], settings.max_url_bytes)
    resumed = EventId.parse(ask.last_event_id)
    if resumed is not None and resumed.refusal:
        # Always, even before the token: the client already has the refusal's only event (an
        # `unauthorized` one included, which would otherwise bring the same reconnect back forever).
        raise NoContent()
    principal = authenticate(settings, ask.authorization, ask.access_token)
    # The subject as every other part keys it (a keyed hash; e-mail subjects compared case-insensitively).
    subject = services.hashes(principal.subject) if principal is not None else None
    client = ClientKey.of(request.scope, settings.trust_proxy_headers, subject)
    # Who may follow the stream: a keyed hash of the subject, or of the address without authentication.
    owner = services.hashes.of("owner", client.rate)
    if ask.last_event_id is not None and ask.last_event_id.strip():
        return await _resume(services, admission, request, ask.last_event_id, client, owner)
    if services.draining:
        raise ShuttingDown()
    chat = parse_chat(ask.query, ask.user_email, ask.conversation_history, settings)
    if principal is not None:
        chat = replace(chat, user_email=principal.subject)  # the token, not a parameter, says who asks
    validated = time.monotonic()
    holder.ticket = ticket = await admission.admit(client)
    if not services.hub.has_room():
        raise admission.full()
    admitted = time.monotonic()
    access = services.conversations.access(chat.user_email, enforced=principal is not None)
    retrieval, thread = await retrieve_in_thread(services, chat.query, ask.conversation_id, access)
    if thread.history is not None:  # the stored turns win over the client's copy (docs/api.md)
        chat = replace(chat, history=keep_recent(thread.history, settings))
    services.metrics.retrieved(retrieval.embed_ms, retrieval.search_ms)
    headers = {}
    if settings.timing_headers:
        headers["Server-Timing"] = server_timing(
            validate=(validated - received) * 1000,
            admit=(admitted - validated) * 1000,
            embed=retrieval.embed_ms,
            search=retrieval.search_ms,
            retrieve=(time.monotonic() - admitted) * 1000,
        )
    member = services.team.find(principal.subject) if principal is not None else None
    try:
        stream = _start(
            request,
            services,
            chat,
            retrieval,
            member,
            ticket,
            owner=owner,
            received=received,
            conversation_id=thread.id,
        )
    except RateLimited:  # the hub filled up while this request was retrieving
        raise admission.full() from None
    _when_done(admission, stream, ticket, client)
    holder.ticket = None  # the producer holds the slot now, until it ends
    services.conversations.expect(stream.tag, thread.id, access, chat.query)
    return Opened(stream, 0, headers)


def _when_done(admission: Admission, stream: Stream, ticket: Ticket, client: ClientKey) -> None:
    """When the answer ends (done, error, or cancelled after the grace window), its slot comes back and its
    tokens count against the daily budgets."""

    def done(_: object) -> None:
        ticket.release()
        if stream.meta is not None:
            admission.spend_soon(client.budget, stream.meta.tokens)

    assert stream.task is not None
    stream.task.add_done_callback(done)


def _start(
    request: Request,
    services: Services,
    chat: ChatRequest,
    retrieval: Retrieval,
    member: Member | None,
    ticket: Ticket,
    *,
    owner: str,
    received: float,
    conversation_id: str | None = None,
) -> Stream:
    """The answer's producer task, writing into a new stream."""
    settings = services.settings
    answerer = OverBudgetAnswerer(settings) if ticket.over_budget else services.answerer
    return services.hub.create(
        lambda s: produce(
            s,
            answerer,
            chat,
            retrieval.passages,
            member,
            metrics=services.metrics,
            conversation_id=conversation_id,
        ),
        owner=owner,
        received=received,
        log_fields=_log_fields(request, services, chat),
    )


async def _resume(
    services: Services, admission: Admission, request: Request, raw: str, client: ClientKey, owner: str
) -> Opened:
    """Follow the stream named by `Last-Event-ID` from that event, if this client owns it; a stream of
    someone else answers exactly as an unknown one does."""
    event_id = EventId.parse(raw)
    if event_id is None:
        raise StreamExpired()
    hub = services.hub
    if event_id.machine != hub.machine_id:
        on_fly = services.settings.fly_machine_id is not None
        if on_fly and "fly-preferred-instance-unavailable" not in request.headers:
            raise ReplayElsewhere(event_id.machine)
        raise StreamExpired()
    await admission.admit_resume(client)
    stream = hub.find(event_id.stream, owner)
    if stream is None or event_id.position > stream.last_position:
        raise StreamExpired()
    if stream.finished and event_id.position >= stream.last_position:
        raise NoContent()
    if not stream.can_replay_from(event_id.position):
        raise StreamExpired()
    stream.resumes += 1
    services.metrics.stream_resumes_total.inc()
    return Opened(stream, event_id.position)


def _rejected(services: Services, error: ZantaraError, received: float, fields: dict[str, object]) -> Opened:
    """A one-event stream, not kept: its id is the refusal id, so a reconnect gets 204, not a retry loop."""
    data = ErrorEvent.of(error, 0, retry_after=error.retry_after).to_json()
    retry_ms = error.retry_after * 1000 if error.retry_after is not None else None
    stream = services.hub.refusal(
        data, outcome=error.code, retry_ms=retry_ms, received=received, log_fields=fields
    )
    return Opened(stream, 0)


def server_timing(**stages: float) -> str:
    """The `Server-Timing` value (TIMING_HEADERS=true only): milliseconds per stage before the first byte."""
    return ", ".join(f"{name};dur={ms:.3f}" for name, ms in stages.items())


def _log_fields(request: Request, services: Services, chat: ChatRequest | None = None) -> dict[str, object]:
    """For the end-of-stream log line: a keyed hash of the e-mail (never the address); the text if asked."""
    fields: dict[str, object] = {"request_id": getattr(request.state, "request_id", None)}
    if chat is not None and chat.user_email:
        fields["user"] = services.hashes(chat.user_email)
    if chat is not None and services.settings.log_query_text:
        fields["query"] = chat.query
    return fields


@dataclass
class Following:
    opened: Opened
    reader: Reader


async def follow_stream(
    opened: Annotated[Opened, Depends(open_stream)], services: ServicesDep
) -> AsyncIterator[Following]:
    """The response's place among the stream's readers, for exactly as long as the response lives.

    Its exit runs when `StreamRelay` returns: after the last event, or as soon as the client has left, so
    that the upstream request is cancelled on time (or the grace window starts).
    """
    hub = services.hub
    reader = hub.attach(opened.stream, opened.after)
    services.metrics.stream_readers.inc()
    try:
        yield Following(opened, reader)
    finally:
        services.metrics.stream_readers.dec()
        hub.detach(opened.stream, reader)


@router.get(
    "/bali-zero/chat-stream",
    response_class=StreamRelay,
    status_code=200,
    summary="Ask Zantara; the answer streams as Server-Sent Events",
    responses={
        200: {"content": {"text/event-stream": {"itemSchema": SSE_ITEM_SCHEMA}}},
        204: {"description": "Reconnect to a stream whose terminal event the client already has."},
        400: {"description": "Invalid input (non-SSE clients only; SSE clients get an in-band error)."},
        401: {"description": "Authentication required and the token is missing, invalid or expired."},
        403: {"description": "Origin not allowed."},
        413: {"description": "Query too long (non-SSE clients)."},
        414: {"description": "URL longer than MAX_URL_BYTES (non-SSE clients)."},
        429: {"description": "Rate limited or daily budget spent; `Retry-After` says when to ask again."},
        503: {"description": "Retrieval unavailable or shutting down (non-SSE clients)."},
    },
)
async def chat_stream(
    following: Annotated[Following, Depends(follow_stream, scope="request")], services: ServicesDep
) -> StreamRelay:
    return StreamRelay(
        following.opened.stream,
        following.reader,
        heartbeat_seconds=services.settings.heartbeat_seconds,
        headers=following.opened.headers,
    )
