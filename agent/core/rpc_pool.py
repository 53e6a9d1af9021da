"""Several RPC URLs for one chain, rotated on 429, 5xx and timeouts (as OpenZeppelin Monitor
does): an ``RpcClient`` whose requests go to the current member; a failure that another provider
might not have moves to the next URL and tries again there. JSON-RPC errors (a revert, bad
params) are answers, not failures: they are raised at once, never rotated on.

Each member is an ordinary ``RpcClient`` with one attempt, so its requests and errors are counted
per URL (``rpc:<chain>``, ``rpc:<chain>#2``, ...); ``on_rotate(reason)`` counts the switches.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

from agent.core.errors import (
    HttpStatusError,
    MalformedResponse,
    RateLimited,
    SourceError,
    TransportError,
)
from agent.core.rpc import RetryPolicy, RpcClient


def rotation_reason(exc: Exception) -> str | None:
    """Why a failure should move to the next URL: "429", "5xx", "timeout", "unreachable";
    None when another URL would answer the same (an RPC error, a malformed 2xx answer)."""
    if isinstance(exc, RateLimited):
        return "429"
    if isinstance(exc, SourceError) and "HTTP 5" in exc.message:
        return "5xx"
    if isinstance(exc, TransportError):
        return "timeout" if "timed out" in exc.message else "unreachable"
    return None


class RpcPool(RpcClient):
    def __init__(
        self,
        urls: Sequence[str],
        *,
        source: str,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        on_rotate: Callable[[str], None] | None = None,
    ) -> None:
        if not urls:
            raise ValueError("RpcPool needs at least one URL")
        super().__init__(urls[0], source=source, timeout_s=timeout_s)
        once = RetryPolicy(attempts=1)
        self.members = [
            RpcClient(
                u, source=source if i == 0 else f"{source}#{i + 1}", timeout_s=timeout_s, retry=once
            )
            for i, u in enumerate(urls)
        ]
        self.policy = retry or RetryPolicy()
        self.on_rotate = on_rotate or (lambda reason: None)
        self.current = 0

    @property
    def active_url(self) -> str:
        return self.members[self.current].url

    async def close(self) -> None:
        for m in self.members:
            await m.close()
        await super().close()

    def _rotate(self, reason: str) -> None:
        self.current = (self.current + 1) % len(self.members)
        self.on_rotate(reason)

    async def request(self, method: str, params: Sequence[Any] = ()) -> Any:
        # Every URL gets a turn, and at least the retry policy's attempts.
        attempts = max(self.policy.attempts, len(self.members))
        for attempt in range(1, attempts + 1):
            try:
                return await self.members[self.current].request(method, params)
            except (TransportError, MalformedResponse, HttpStatusError) as exc:
                reason = rotation_reason(exc)
                if reason is None or attempt == attempts:
                    raise
                if len(self.members) > 1:
                    self._rotate(reason)
                    # A fresh URL is tried at once; a full round of failures backs off.
                    if self.current != 0:
                        continue
                delay = min(self.policy.max_delay_s, self.policy.base_delay_s * 2 ** (attempt - 1))
                if isinstance(exc, RateLimited) and exc.retry_after is not None:
                    delay = min(self.policy.max_delay_s, exc.retry_after)
                await asyncio.sleep(random.uniform(0, delay))
        raise AssertionError("unreachable")
