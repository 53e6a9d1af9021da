"""The one retry layer both transports use (``agent.core.http`` and ``agent.core.rpc``).

What is retried: transport failures (connection, timeout), rate limits, HTTP 5xx and 408 (a
gateway's HTML error page included), and a body cut short (JSON that ends mid-value). What is
not: answers (4xx, JSON-RPC errors such as reverts, well-formed but wrong JSON), and requests
that are not idempotent.

Delays: exponential backoff with "equal jitter" (``d/2 + U(0, d/2)``: never 0, never in
lockstep). A server's ``Retry-After`` is honoured as given: the wait is at least that long, and
when it is longer than ``max_retry_after_s`` the error is raised at once rather than retried
early.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from typing import TypeVar

import structlog

from agent.core.errors import (
    HttpStatusError,
    MalformedResponse,
    RateLimited,
    SourceError,
    TransportError,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # total tries, first included
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 120.0  # a longer Retry-After is not waited out


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, TransportError):  # includes RateLimited
        return True
    if isinstance(exc, HttpStatusError):
        return exc.status >= 500 or exc.status == 408
    return isinstance(exc, MalformedResponse) and exc.truncated


def retry_delay(
    policy: RetryPolicy, attempt: int, exc: BaseException, rng: random.Random
) -> float | None:
    """Seconds to wait before try ``attempt + 1`` (``attempt`` >= 1 tries failed so far), or
    None when the error must be raised now."""
    d = min(policy.max_delay_s, policy.base_delay_s * 2.0 ** (attempt - 1))
    delay = d / 2 + rng.uniform(0, d / 2)
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        if exc.retry_after > policy.max_retry_after_s:
            return None  # waiting less than asked would only be refused again
        delay = max(float(exc.retry_after), delay)
    return delay


async def with_retries(
    attempt: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    source: str,
    what: str,
    idempotent: bool = True,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Call ``attempt(n)`` (n = 0, 1, ...) until it returns, retrying as the module says."""
    rand = rng or random.Random()
    n = 0
    while True:
        try:
            return await attempt(n)
        except SourceError as exc:
            n += 1
            if not idempotent or not retryable(exc) or n >= policy.attempts:
                raise
            delay = retry_delay(policy, n, exc, rand)
            if delay is None:
                raise
            # Debug: the metrics count retries (``tick.done``), and a final failure is reported
            # once, as one line, by whoever handles it.
            log.debug(
                "retry",
                source=source,
                what=what,
                attempt=n,
                delay_s=round(delay, 3),
                error=str(exc),
            )
            await sleep(delay)


def truncated_json(text: str, exc: ValueError) -> bool:
    """Whether a body that failed to parse is JSON cut short (rather than not JSON at all):
    it starts like JSON and the parser ran out of input."""
    if not isinstance(exc, json.JSONDecodeError):
        return False
    body = text.rstrip()
    if not body or body[0] not in '{["':
        return False
    return exc.msg.startswith("Unterminated string") or exc.pos >= len(body)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After is delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None or not value.strip():
        return None
    v = value.strip()
    try:
        secs = float(v)
    except ValueError:
        try:
            dt = email.utils.parsedate_to_datetime(v)
        except (TypeError, ValueError, IndexError):
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        secs = dt.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(secs):
        return None
    return max(0.0, secs)
