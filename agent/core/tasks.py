"""Several awaitables at once, none left behind: the first failure cancels and awaits the
others, then is raised as itself (one line, not an exception group). ``asyncio.gather``
without ``return_exceptions`` would raise the first error and leave the others running
against clients their caller is about to close."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def all_at_once(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Every coroutine's result, in order; on the first error none is still running."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(c) for c in coros]
    except BaseExceptionGroup as eg:
        raise eg.exceptions[0] from None
    return [t.result() for t in tasks]
