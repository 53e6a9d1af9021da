"""The daemon loop (``agent.pipeline.runner.tick_loop``): any exception a tick raises spends the error
budget and is logged with its traceback; the budget resets on a good tick; ``Halt`` stops at
once. The ticks here are plain coroutines: the loop's policy needs no chain."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from agent.core.errors import Halt, SourceError
from agent.pipeline.runner import tick_loop


class Ticks:
    """Ticks that fail as scripted (an exception to raise, or None for a good tick); the
    loop is stopped after the script runs out."""

    def __init__(self, script: list[BaseException | None], stop: asyncio.Event) -> None:
        self.script = script
        self.stop = stop
        self.seen: list[int] = []

    async def __call__(self, tick_id: int) -> None:
        self.seen.append(tick_id)
        step = self.script[len(self.seen) - 1]
        if len(self.seen) == len(self.script):
            self.stop.set()
        if step is not None:
            raise step


async def test_a_non_project_exception_spends_the_budget_instead_of_killing_the_daemon() -> None:
    stop = asyncio.Event()
    ticks = Ticks([ZeroDivisionError("division by zero"), None, KeyError("x"), None], stop)
    with structlog.testing.capture_logs() as logs:
        done = await tick_loop(ticks, stop=stop, interval_s=0, error_budget=2)
    assert ticks.seen == [1, 2, 3, 4] and done == 2
    failed = [e for e in logs if e["event"] == "tick.failed"]
    assert [e["failures"] for e in failed] == [1, 1]  # a good tick in between resets it
    assert [e["error_type"] for e in failed] == ["ZeroDivisionError", "KeyError"]
    # logged with the traceback (the exception itself, rendered by the log processors)
    assert isinstance(failed[0]["exc_info"], ZeroDivisionError)
    assert failed[0]["exc_info"].__traceback__ is not None


async def test_consecutive_failures_of_any_kind_halt_at_the_budget() -> None:
    stop = asyncio.Event()
    boom = [RuntimeError("a"), SourceError("rpc", "b"), ValueError("c"), None]
    ticks = Ticks(boom, stop)
    with pytest.raises(Halt, match=r"3 consecutive failed ticks \(error budget 3\); last: c"):
        await tick_loop(ticks, stop=stop, interval_s=0, error_budget=3)
    assert ticks.seen == [1, 2, 3]


async def test_halt_stops_at_once() -> None:
    stop = asyncio.Event()
    ticks = Ticks([Halt("live sending refused"), None], stop)
    with pytest.raises(Halt, match="live sending refused"):
        await tick_loop(ticks, stop=stop, interval_s=0, error_budget=5)
    assert ticks.seen == [1]


async def test_once_runs_one_tick_and_raises_its_error() -> None:
    stop = asyncio.Event()
    ticks = Ticks([ValueError("bad"), None], stop)
    with pytest.raises(ValueError, match="bad"):
        await tick_loop(ticks, stop=stop, interval_s=0, error_budget=5, once=True)
    assert ticks.seen == [1]


async def test_the_stop_event_ends_the_wait_between_ticks() -> None:
    stop = asyncio.Event()
    calls: list[int] = []

    async def tick(tick_id: int) -> None:
        calls.append(tick_id)
        asyncio.get_running_loop().call_later(0.05, stop.set)

    done = await asyncio.wait_for(
        tick_loop(tick, stop=stop, interval_s=3600, error_budget=1), timeout=5
    )
    assert calls == [1] and done == 1
