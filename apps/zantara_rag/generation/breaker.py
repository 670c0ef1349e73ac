"""A circuit breaker per model: during an outage, questions stop paying for requests that will fail.

After `UPSTREAM_BREAKER_FAILURES` consecutive failures a model's circuit opens: the answer chain skips it
(no request, no wait) for `UPSTREAM_BREAKER_COOLDOWN_SECONDS`. The first question after that is the probe:
its request goes through (the circuit is half-open; other questions still skip the model meanwhile), and
its outcome closes the circuit or opens it for another cool-down. A probe that ends neither way (the user
left) lets the next question probe. Each transition is logged once and exported as
`zantara_upstream_breaker_state{model}` (0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from ..metrics import Metrics
from ..settings import Settings

log = logging.getLogger(__name__)

State = Literal["closed", "half_open", "open"]
STATE_VALUES: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}


class Breaker:
    """One model's circuit: `allow()` before a request, then one of `success`, `failure` or `abandon`."""

    def __init__(
        self,
        model: str,
        threshold: int,
        cooldown: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.model = model
        self.threshold = threshold  # 0: never opens
        self.cooldown = cooldown
        self.clock = clock
        self.metrics = metrics
        self.state: State = "closed"
        self.failures = 0  # consecutive
        self.opened_at = 0.0
        self._export()

    def allow(self) -> bool:
        """Whether to send this request; in a half-open circuit only the probe is let through."""
        if self.state == "closed":
            return True
        if self.state == "open" and self.clock() - self.opened_at >= self.cooldown:
            self._move("half_open", "the cool-down is over, this request probes it")
            return True
        if self.metrics is not None:
            self.metrics.upstream_breaker_skips_total.labels(self.model).inc()
        return False

    def success(self) -> None:
        self.failures = 0
        if self.state != "closed":
            self._move("closed", "it answered again")

    def failure(self, kind: str) -> None:
        self.failures += 1
        if self.state == "half_open":
            self._open(f"the probe failed ({kind})")
        elif self.state == "closed" and self.threshold and self.failures >= self.threshold:
            self._open(f"{self.failures} consecutive failures, the last {kind}")

    def abandon(self) -> None:
        """The request ended with no verdict (the user left): a probe's turn passes to the next question."""
        if self.state == "half_open":
            self.state = "open"
            self.opened_at = self.clock() - self.cooldown
            self._export()

    def _open(self, why: str) -> None:
        self.opened_at = self.clock()
        self._move("open", f"{why}; it is skipped for {self.cooldown:g} s")

    def _move(self, state: State, why: str) -> None:
        self.state = state
        level = logging.WARNING if state == "open" else logging.INFO
        log.log(level, "circuit breaker for %s %s: %s", self.model, state.replace("_", "-"), why)
        self._export()

    def _export(self) -> None:
        if self.metrics is not None:
            self.metrics.upstream_breaker_state.labels(self.model).set(STATE_VALUES[self.state])


class Breakers:
    """The breakers of every model the chain uses, made on first use."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.threshold = settings.upstream_breaker_failures
        self.cooldown = settings.upstream_breaker_cooldown_seconds
        self.metrics = metrics
        self._by_model: dict[str, Breaker] = {}

    def __getitem__(self, model: str) -> Breaker:
        breaker = self._by_model.get(model)
        if breaker is None:
            breaker = Breaker(model, self.threshold, self.cooldown, metrics=self.metrics)
            self._by_model[model] = breaker
        return breaker
