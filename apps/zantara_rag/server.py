"""Running under uvicorn, with a drain on SIGTERM/SIGINT, a bound on request heads, and the metrics port.

uvicorn alone stops accepting connections at once and, after its graceful timeout, cuts open streams
mid-body (which makes EventSource reconnect into a dead machine). Instead, the first signal starts a
drain: new chat requests get a `shutting_down` event, open streams get `DRAIN_SECONDS` to finish, the
rest end with a terminal `shutting_down` event, and only then does uvicorn shut down. A second signal
exits immediately. Every wait after the drain window is bounded (`worst_case_shutdown_seconds`), so the
whole shutdown fits in fly.toml's `kill_timeout` (tests/test_deploy_config.py).

uvicorn times out idle keep-alive connections but not a request head that arrives slowly: a client that
trickles one header line every few seconds holds a connection (and one of `LIMIT_CONCURRENCY`) for as
long as it likes. `HeadTimeoutH11Protocol` closes a connection whose head is not whole within
`HEAD_TIMEOUT_SECONDS`. With `METRICS_PORT` set, `/metrics` is served by a second listener on that port
only (`app.create_metrics_app`), for Fly's scraper on the private network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from types import FrameType

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import KNOWLEDGE_STOP_SECONDS, create_app, create_metrics_app
from .logs import configure_logging
from .services import CLOSE_WAIT_SECONDS, SERVICES_CLOSE_SECONDS, Services
from .settings import Settings

log = logging.getLogger(__name__)

# After the drain window: producers are cancelled and awaited, readers get their terminal event, uvicorn
# waits for connections, then the lifespan stops the first-start ingestion and the hub, and last the
# metrics listener closes. Each step is bounded by one of these.
FLUSH_SECONDS = 2.0
GRACEFUL_SHUTDOWN_SECONDS = 3
# The metrics listener's own graceful wait (uvicorn's), and the longest the shutdown waits for the listener
# to exit: that wait plus a second for uvicorn's ticks and closing its sockets. The sum counts the latter.
METRICS_GRACEFUL_SECONDS = 1
METRICS_SHUTDOWN_SECONDS = METRICS_GRACEFUL_SECONDS + 1


def worst_case_shutdown_seconds(settings: Settings) -> float:
    """From the first signal to the exit when every step takes as long as it may (a reader that stopped
    reading, a producer slow to cancel, an ingestion or an upload in the middle of a document, a database that
    does not answer)."""
    drain = settings.drain_seconds + CLOSE_WAIT_SECONDS + FLUSH_SECONDS + GRACEFUL_SHUTDOWN_SECONDS
    lifespan = KNOWLEDGE_STOP_SECONDS + SERVICES_CLOSE_SECONDS
    return drain + lifespan + METRICS_SHUTDOWN_SECONDS


class HeadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head takes longer than `head_timeout`
    (from the connection, or from the first byte of the next request on a kept-alive one)."""

    head_timeout = 10.0

    @classmethod
    def with_timeout(cls, seconds: float) -> type[HeadTimeoutH11Protocol]:
        return type(cls.__name__, (cls,), {"head_timeout": seconds})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # part of a head, not yet whole
            self._arm_head_timer()
        else:
            self._disarm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class SignalFreeServer(uvicorn.Server):
    """A uvicorn server run inside another one's loop (the metrics listener): that one owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class DrainingServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, settings: Settings, metrics: uvicorn.Server | None = None
    ) -> None:
        super().__init__(config)
        self.settings = settings
        self.metrics = metrics
        self._metrics_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # After the lifespan: the metrics app reads the services it built.
        if self.metrics is not None and not self.should_exit:
            self._metrics_task = asyncio.create_task(self.metrics.serve(), name="metrics listener")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if self.metrics is not None and self._metrics_task is not None:
            self.metrics.should_exit = True
            await asyncio.wait({self._metrics_task}, timeout=METRICS_SHUTDOWN_SECONDS)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        services = getattr(getattr(self.config.app, "state", None), "services", None)
        if self._draining or services is None or not self.started or self._loop is None:
            super().handle_exit(sig, frame)  # second signal, or not serving yet: exit now
            if self._draining and sig == signal.SIGINT:
                self.force_exit = True
            return
        self._draining = True
        # This runs in a signal handler, between two bytecodes of whatever the loop was doing: hand the
        # drain over to the loop the thread-safe way (it also wakes the loop's selector).
        self._loop.call_soon_threadsafe(self._start_drain, services)

    def _start_drain(self, services: Services) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain(services))

    async def _drain(self, services: Services) -> None:
        hub = services.hub
        services.drain_event.set()
        services.stop_ingestion.set()  # a first-start ingestion stops before its next file
        deadline = asyncio.get_running_loop().time() + self.settings.drain_seconds
        log.info("draining: %d open streams, up to %.0fs", hub.active, self.settings.drain_seconds)
        while hub.active and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 - polls two conditions
            await asyncio.sleep(0.1)
        left = hub.live()
        if left:
            log.info("drain window over: ending %d streams with shutting_down", len(left))
        # Always: a question still being retrieved now must get `shutting_down`, not a producer that
        # uvicorn's own shutdown would cut without a terminal event.
        await hub.close(wait_seconds=CLOSE_WAIT_SECONDS)
        if left:
            # Readers leave once their terminal event is handed to the connection; a client that stopped
            # reading is left to uvicorn's own graceful timeout.
            flushed = asyncio.get_running_loop().time() + FLUSH_SECONDS
            while any(s.readers for s in left) and asyncio.get_running_loop().time() < flushed:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        self.should_exit = True


def run(settings: Settings, *, proxy_headers: bool = False, forwarded_allow_ips: str | None = None) -> None:
    configure_logging(settings)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # Longer than any proxy's idle timeout (Fly's is about 60 s): a keep-alive connection must be
        # closed by the proxy or client, never by us at the instant they reuse it for the next request.
        timeout_keep_alive=75,
        limit_concurrency=settings.limit_concurrency,
        lifespan="on",
        # h11, not httptools (which uvicorn[standard] installs and "auto" would pick): only h11 bounds the
        # request line plus headers, and a bigger head gets a clean 400 instead of buffering without end.
        http=HeadTimeoutH11Protocol.with_timeout(settings.head_timeout_seconds),
        h11_max_incomplete_event_size=settings.max_request_head_bytes,
    )
    DrainingServer(config, settings, metrics_server(settings, app)).run()


def metrics_server(settings: Settings, app: FastAPI) -> uvicorn.Server | None:
    """The `/metrics` listener on `METRICS_PORT`, when one is set."""
    if settings.metrics_port is None:
        return None
    config = uvicorn.Config(
        create_metrics_app(app),
        host=settings.host,
        port=settings.metrics_port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=METRICS_GRACEFUL_SECONDS,
        limit_concurrency=16,  # a scraper or two
        http=HeadTimeoutH11Protocol.with_timeout(settings.head_timeout_seconds),
        h11_max_incomplete_event_size=16_384,
    )
    return SignalFreeServer(config)
