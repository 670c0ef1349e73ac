"""Who is asking, and whether to serve them: rate and stream limits per client, a cap on all open streams,
and daily token budgets.

Clients are keyed by `client.ClientKey`: the token's subject with authentication on, else the address (the
TCP peer, or `Fly-Client-IP` when `TRUST_PROXY_HEADERS` is on; an IPv6 client by its /64, its budget by
its /48).

A stream slot is the life of an answer's producer, not of a response: the ticket `admit` hands out is
released when the producer ends (done, failed, or cancelled after the grace window), so an answer still
generating for a client that left counts against that client and the machine until it stops. A resume
takes no slot (its answer already holds one) but is a hit in the per-minute window, like a question:
reconnecting to keep an answer alive is not free.

Time windows (questions per minute, tokens per day) are kept by the `limits` library: in this process by
default, in Redis when `RATE_LIMIT_STORAGE_URI` names one, so that several machines share them. Open
streams are counted in this process: a stream lives on the machine that serves it. If the window store
fails, requests are let through (and the failure logged): an outage of Redis must not stop every answer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from ..errors import BudgetExhausted, RateLimited, ZantaraError
from ..settings import Settings
from ..streaming.hub import HUB_FULL, STREAM_RETRY_AFTER
from .client import ClientKey

log = logging.getLogger(__name__)

_ALL = "*"  # the key of the global budget: not an address, so no client can share it


@dataclass
class Ticket:
    """An admitted answer: holds a slot until released; `over_budget` means answer without Claude."""

    client: str
    over_budget: bool = False
    _admission: Admission | None = field(default=None, repr=False)

    def release(self) -> None:
        """Give the slot back (once; later calls do nothing)."""
        if self._admission is not None:
            self._admission.leave(self.client)
            self._admission = None


class Admission:
    """The limits of one process: `admit` before a stream opens, `spend` once an answer's tokens are known."""

    def __init__(
        self, settings: Settings, storage: Storage, on_refusal: Callable[[str], None] | None = None
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.on_refusal = on_refusal  # e.g. the zantara_rate_limited_total{reason} counter
        self._moving = MovingWindowRateLimiter(storage)
        self._fixed = FixedWindowRateLimiter(storage)
        # Questions use a moving window (no double burst at a window's edge). Budgets use a fixed window,
        # because its hit counts an answer's tokens even when they cross the line; a moving window refuses,
        # and so forgets, a hit that does not fit.
        self._per_minute = _item(RateLimitItemPerMinute, settings.rate_limit_per_minute)
        self._budget = _item(RateLimitItemPerDay, settings.daily_token_budget)
        self._client_budget = _item(RateLimitItemPerDay, settings.daily_token_budget_per_client)
        self._open: Counter[str] = Counter()  # open streams per client
        self._spending: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings, on_refusal: Callable[[str], None] | None = None) -> Admission:
        secret = settings.rate_limit_storage_uri
        uri = secret.get_secret_value() if secret is not None else "memory://"
        try:
            storage = storage_from_string(uri if uri.startswith("async+") else f"async+{uri}")
        except ConfigurationError:
            # The message would repeat the URI, which may hold a password.
            raise ZantaraError(
                "RATE_LIMIT_STORAGE_URI cannot be used: for redis:// install the `redis` extra "
                "(limits[async-redis]); see docs/security.md"
            ) from None
        assert isinstance(storage, Storage)
        return cls(settings, storage, on_refusal)

    async def admit(self, client: ClientKey) -> Ticket:
        """A slot for a new answer of `client`, a place in its per-minute window, and the budget verdict.

        Raises `RateLimited` (too many live answers, of this client or in all; too many questions this
        minute) or, with `BUDGET_EXHAUSTED_MODE=error`, `BudgetExhausted`. A refused request counts nowhere.
        """
        s = self.settings
        over_budget = await self._over_budget(client.budget)
        if over_budget and s.budget_exhausted_mode == "error":
            self._refuse("budget")
            raise BudgetExhausted(retry_after=await self._budget_reset(client.budget))
        if s.max_concurrent_streams and self.open_streams() >= s.max_concurrent_streams:
            raise self.full()
        if s.max_streams_per_client and self._open[client.rate] >= s.max_streams_per_client:
            self._refuse("client_streams")
            raise RateLimited(
                "You already have answers in progress. Please wait for one to finish, then ask again.",
                retry_after=STREAM_RETRY_AFTER,
            )
        # The slot is taken before the window is awaited, so concurrent requests cannot all pass the caps.
        ticket = self._enter(client.rate, over_budget)
        try:
            await self._hit(client)
        except RateLimited:
            ticket.release()
            raise
        return ticket

    async def admit_resume(self, client: ClientKey) -> None:
        """A reconnect to an answer: a hit in the per-minute window (`RateLimited` past it)."""
        await self._hit(client)

    def full(self) -> RateLimited:
        """The refusal when the machine holds as many live answers as it may (counted as `server_streams`)."""
        self._refuse("server_streams")
        return RateLimited(HUB_FULL, retry_after=STREAM_RETRY_AFTER)

    async def _hit(self, client: ClientKey) -> None:
        if self._per_minute is None:
            return
        try:
            allowed = await self._moving.hit(self._per_minute, "questions", client.rate)
            if not allowed:
                stats = await self._moving.get_window_stats(self._per_minute, "questions", client.rate)
        except Exception as exc:  # fail open, see the module docstring
            log.warning("could not read the question rate window (%s)", type(exc).__name__)
            return
        if not allowed:
            self._refuse("client_rate")
            raise RateLimited(retry_after=_seconds_until(stats.reset_time))

    async def spend(self, client: str, tokens: int) -> None:
        """Count an answer's tokens against the daily budgets; past them, questions do not reach Claude."""
        if tokens <= 0:
            return
        try:
            for item, key in self._budgets(client):
                await self._fixed.hit(item, "tokens", key, cost=tokens)
        except Exception as exc:  # fail open, see the module docstring
            log.warning("could not count %d tokens against the budget (%s)", tokens, type(exc).__name__)

    def spend_soon(self, client: str, tokens: int) -> None:
        """`spend` from synchronous code (a task's done callback); the task is kept until it ends."""
        task = asyncio.get_running_loop().create_task(self.spend(client, tokens))
        self._spending.add(task)
        task.add_done_callback(self._spending.discard)

    def _budgets(self, client: str) -> list[tuple[RateLimitItem, str]]:
        pairs = ((self._budget, _ALL), (self._client_budget, client))
        return [(item, key) for item, key in pairs if item is not None]

    async def _over_budget(self, client: str) -> bool:
        try:
            for item, key in self._budgets(client):
                if not await self._fixed.test(item, "tokens", key):
                    return True
        except Exception as exc:  # fail open, see the module docstring
            log.warning("could not read the token budget (%s)", type(exc).__name__)
        return False

    async def _budget_reset(self, client: str) -> int:
        """Seconds until every spent budget of this client has a new window."""
        try:
            resets = [
                (await self._fixed.get_window_stats(item, "tokens", key)).reset_time
                for item, key in self._budgets(client)
                if not await self._fixed.test(item, "tokens", key)
            ]
        except Exception as exc:  # the window is unknown, not the verdict: say "later today"
            log.warning("could not read the token budget window (%s)", type(exc).__name__)
            return 3600
        return _seconds_until(max(resets, default=time.time()))

    def open_streams(self) -> int:
        """Live answers admitted by this process (held until their producers end)."""
        return self._open.total()

    def leave(self, client: str) -> None:
        """A ticket of `client` was released."""
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]

    def _enter(self, client: str, over_budget: bool) -> Ticket:
        self._open[client] += 1
        return Ticket(client, over_budget, self)

    def _refuse(self, reason: str) -> None:
        if self.on_refusal is not None:
            self.on_refusal(reason)
        log.info("refused a request (%s)", reason)


def _item(kind: type[RateLimitItem], amount: int) -> RateLimitItem | None:
    """A window of `amount` per `kind`; 0 turns the limit off."""
    return kind(amount) if amount else None


def _seconds_until(timestamp: float) -> int:
    return max(1, math.ceil(timestamp - time.time()))
