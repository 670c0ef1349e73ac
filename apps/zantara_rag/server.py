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
from types import FrameType

import uvicorn

from .app import create_app
from .logs import configure_logging
from .settings import Settings

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        services = getattr(getattr(self.config.app, "state", None), "services", None)
        if self._drain_task is not None or services is None or not self.started:
            super().handle_exit(sig, frame)  # second signal, or not serving yet: exit now
            if self._drain_task is not None and sig == signal.SIGINT:
                self.force_exit = True
            return
        self._drain_task = asyncio.get_event_loop().create_task(self._drain(services))

    async def _drain(self, services: object) -> None:
        from .services import Services

        assert isinstance(services, Services)
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
            await asyncio.sleep(0.3)  # let readers flush the terminal event
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
        lifespan="on",
    )
    DrainingServer(config, settings).run()
