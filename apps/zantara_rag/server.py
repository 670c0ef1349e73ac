"""Running under uvicorn, with a drain on SIGTERM/SIGINT.

uvicorn alone stops accepting connections at once and, after its graceful timeout, cuts open streams
mid-body (which makes EventSource reconnect into a dead machine). Instead, the first signal starts a
drain: new chat requests get a `shutting_down` event, open streams get `DRAIN_SECONDS` to finish, the
rest end with a terminal `shutting_down` event, and only then does uvicorn shut down. A second signal
exits immediately.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import uvicorn

from .app import create_app
from .logs import configure_logging
from .services import Services
from .settings import Settings

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

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
        deadline = asyncio.get_running_loop().time() + self.settings.drain_seconds
        log.info("draining: %d open streams, up to %.0fs", hub.active, self.settings.drain_seconds)
        while hub.active and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 - polls two conditions
            await asyncio.sleep(0.1)
        left = hub.live()
        if left:
            log.info("drain window over: ending %d streams with shutting_down", len(left))
            await hub.close(wait_seconds=2.0)
            # Readers leave once their terminal event is handed to the connection; a client that stopped
            # reading is left to uvicorn's own graceful timeout.
            flushed = asyncio.get_running_loop().time() + 2.0
            while any(s.readers for s in left) and asyncio.get_running_loop().time() < flushed:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        self.should_exit = True


def run(settings: Settings, *, proxy_headers: bool = False, forwarded_allow_ips: str | None = None) -> None:
    configure_logging(settings)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=3,
        # Longer than any proxy's idle timeout (Fly's is about 60 s): a keep-alive connection must be
        # closed by the proxy or client, never by us at the instant they reuse it for the next request.
        timeout_keep_alive=75,
        lifespan="on",
        # h11, not httptools (which uvicorn[standard] installs and "auto" would pick): only h11 bounds the
        # request line plus headers, and a bigger head gets a clean 400 instead of buffering without end.
        http="h11",
        h11_max_incomplete_event_size=settings.max_request_head_bytes,
    )
    DrainingServer(config, settings).run()
