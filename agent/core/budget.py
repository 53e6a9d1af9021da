"""The daemon's error budget and tick deadline.

The budget is spent only when ticks have failed ``ticks`` times in a row AND for at least
``seconds``: at a 1 s tick interval, five quick failures (a provider's brief 5xx burst) are not
an outage, while a chain that stays away for minutes still halts the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import TypeVar

from agent.core.errors import AgentError, TransportError

T = TypeVar("T")


class ErrorBudget:
    def __init__(self, ticks: int, seconds: float) -> None:
        self.ticks = ticks
        self.seconds = seconds
        self.failures = 0
        self._since: float | None = None

    def ok(self) -> None:
        self.failures = 0
        self._since = None

    def failed(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.failures += 1
        if self._since is None:
            self._since = now

    def failing_for_s(self, now: float | None = None) -> float:
        if self._since is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self._since

    def spent(self, now: float | None = None) -> bool:
        return self.failures >= self.ticks and self.failing_for_s(now) >= self.seconds


class TickTimeout(TransportError):
    """The whole tick ran past its deadline (a source that accepts and never answers)."""


async def within(seconds: float, work: Awaitable[T]) -> T:
    """``work`` under a deadline; ``TickTimeout`` (a failed tick) when it is passed."""
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise TickTimeout("tick", f"did not finish within {seconds:g}s (tick_timeout_s)") from None


class Interrupted(AgentError):
    """A stop signal arrived while the tick was running; the tick was cancelled."""


async def unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T:
    """Run ``work`` until it finishes or ``stop`` is set (SIGTERM/SIGINT mid-tick): then it is
    cancelled and ``Interrupted`` is raised. Cancelling is safe at any await: a proposal and
    its spend commit in one store transaction, and an interrupted live send is reconciled by
    hash and nonce at the next start."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise Interrupted("tick interrupted by a stop signal")
    return task.result()
