"""Several RPC URLs for one chain, rotated on 429, 5xx and timeouts (as OpenZeppelin Monitor
does): an ``RpcClient`` whose requests go to the current member; a failure that another provider
might not have moves to the next URL and tries again there. JSON-RPC errors (a revert, bad
params) are answers, not failures: they are raised at once, never rotated on.

Retries follow the one policy of :mod:`agent.core.retry`: a request makes rounds, each round
tries every URL once from the current one (a fresh URL at once), and a failed round backs off
as the policy says before the next. The whole request, every round and wait included, has one
deadline (``deadline_s``): a hung provider costs at most that, not attempts x timeout x URLs.

Providers can also be up and wrong: one that lags behind the others answers old blocks without
any error. ``check_heads`` (once per tick) asks every URL for its head; when the one in use is
more than ``max_lag_blocks`` behind the best head, the pool moves to the first URL within the
bound, and it moves back to an earlier URL (the configured preference) once that one answers
within the bound again. ``HeadWatch`` is the other half: a chain is never ticked at a block, or
a chain time, older than the last one ticked.

Each member is an ordinary ``RpcClient`` with one attempt, so its requests and errors are counted
per URL (``rpc:<chain>``, ``rpc:<chain>#2``, ...); ``on_rotate(reason)`` counts the switches.
The fork's relay (``agent.simulator.relay``) reads through the same pool: ``active_url`` and
``failed`` let it rotate with the reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.core.errors import (
    HttpStatusError,
    MalformedResponse,
    RateLimited,
    RpcError,
    SourceError,
    TransportError,
)
from agent.core.retry import with_retries
from agent.core.rpc import DEFAULT_RETRY, RetryPolicy, RpcClient

DEFAULT_MAX_LAG_BLOCKS = 10


def rotation_reason(exc: Exception) -> str | None:
    """Why a failure should move to the next URL: "429", "5xx", "timeout", "unreachable",
    "truncated"; None when another URL would answer the same (an RPC error, a malformed 2xx
    answer)."""
    if isinstance(exc, RateLimited):
        return "429"
    if isinstance(exc, HttpStatusError) and exc.status == 408:
        return "timeout"
    if isinstance(exc, SourceError) and "HTTP 5" in exc.message:
        return "5xx"
    if isinstance(exc, TransportError):
        return "timeout" if "timed out" in exc.message else "unreachable"
    if isinstance(exc, MalformedResponse) and exc.truncated:
        return "truncated"
    return None


@dataclass(frozen=True)
class ProviderHead:
    """One URL's answer to a head check (named by its source, never its URL: keys)."""

    source: str
    head: int | None  # None: it did not answer
    lag_blocks: int = 0  # behind the best head of the same check
    error: str | None = None


@dataclass(frozen=True)
class HeadCheck:
    heads: tuple[ProviderHead, ...]
    best: int | None  # the highest head any URL answered
    active: str  # the source in use after the check
    moved: str | None = None  # "lagging" or "recovered" when the check changed the URL
    lagging: tuple[str, ...] = ()  # sources more than max_lag_blocks behind

    def describe(self) -> dict[str, Any]:
        """For /readyz and the log: each provider's head and lag, and which one is used."""
        return {
            h.source: {
                "head": h.head,
                "lag_blocks": h.lag_blocks,
                "active": h.source == self.active,
            }
            | ({"error": h.error} if h.error else {})
            for h in self.heads
        }


class ChainWentBack(SourceError):
    """A read older than the last tick: a lower block, or an earlier chain time."""


@dataclass
class HeadWatch:
    """The block and chain time a chain was last ticked at. A tick never goes back: a lower
    block (a lagging provider, a reorg deeper than one tick) or an earlier chain time (a node
    whose clock was reset: the session day would move back and Aave's interest index reads
    revert) is refused with an error that names both, and the last good head is kept."""

    source: str
    block: int | None = None
    timestamp: int | None = None

    def accept(self, block: int, timestamp: int) -> None:
        if self.block is not None and block < self.block:
            raise ChainWentBack(
                self.source,
                f"block {block} is older than block {self.block} ticked before "
                "(a lagging provider or a reorg): not ticked",
            )
        if self.timestamp is not None and timestamp < self.timestamp:
            raise ChainWentBack(
                self.source,
                f"chain time went back: block {block} has timestamp {timestamp}, "
                f"block {self.block} ticked before had {self.timestamp}: not ticked",
            )
        self.block, self.timestamp = block, timestamp


class RpcPool(RpcClient):
    def __init__(
        self,
        urls: Sequence[str],
        *,
        source: str,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        deadline_s: float | None = None,
        max_lag_blocks: int = DEFAULT_MAX_LAG_BLOCKS,
        on_rotate: Callable[[str], None] | None = None,
        on_heads: Callable[[HeadCheck], None] | None = None,
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
        self.timeout_s = timeout_s
        self.policy = retry or DEFAULT_RETRY
        self.deadline_s = deadline_s
        self.max_lag_blocks = max_lag_blocks
        self.on_rotate = on_rotate or (lambda reason: None)
        self.on_heads = on_heads or (lambda check: None)
        self.current = 0
        self.last_check: HeadCheck | None = None

    @property
    def active_url(self) -> str:
        return self.members[self.current].url

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def active_source(self) -> str:
        return self.members[self.current].source

    async def close(self) -> None:
        for m in self.members:
            await m.close()
        await super().close()

    def _rotate(self, reason: str) -> None:
        self.current = (self.current + 1) % len(self.members)
        self.on_rotate(reason)

    def failed(self, url: str, reason: str) -> None:
        """Someone else (the fork's relay) saw ``url`` fail: move on if it is still the one in
        use (several failures seen at once move once)."""
        if len(self.members) > 1 and self.active_url == url:
            self._rotate(reason)

    async def request(self, method: str, params: Sequence[Any] = ()) -> Any:
        async def one_round(_: int) -> Any:
            # Every URL once, from the current one; the last failure is the round's, and the
            # next round starts at the URL after it.
            for left in range(len(self.members) - 1, -1, -1):
                member = self.members[self.current]
                try:
                    return await member.request(method, params)
                except SourceError as exc:
                    reason = rotation_reason(exc)
                    if reason is None:
                        raise
                    self.failed(member.url, reason)
                    if left == 0:
                        raise
            raise AssertionError("unreachable")

        try:
            async with asyncio.timeout(self.deadline_s):
                return await with_retries(one_round, self.policy, source=self.source, what=method)
        except TimeoutError:
            raise TransportError(
                self.active_source,
                f"{method} timed out: no answer within the request deadline "
                f"({self.deadline_s:g}s, every URL and retry included)",
            ) from None

    async def check_heads(self) -> HeadCheck | None:
        """Ask every URL for its head (concurrently, each within the request timeout) and use
        the first URL within ``max_lag_blocks`` of the best head. None with a single URL
        (nothing to compare with: ``HeadWatch`` still refuses a block going back)."""
        if len(self.members) < 2:
            return None

        async def head(m: RpcClient) -> tuple[int | None, str | None]:
            try:
                async with asyncio.timeout(self.timeout_s):
                    return int(await m.request("eth_blockNumber"), 16), None
            except TimeoutError:
                return None, "eth_blockNumber timed out"
            except (SourceError, RpcError, ValueError, TypeError) as exc:
                return None, str(exc)

        got = await asyncio.gather(*(head(m) for m in self.members))
        answered = [h for h, _ in got if h is not None]
        best = max(answered) if answered else None
        heads = tuple(
            ProviderHead(m.source, h, 0 if h is None or best is None else best - h, err)
            for m, (h, err) in zip(self.members, got, strict=True)
        )
        lagging = tuple(p.source for p in heads if p.lag_blocks > self.max_lag_blocks)
        moved = None
        if best is not None:
            choice = next(
                i
                for i, p in enumerate(heads)
                if p.head is not None and p.lag_blocks <= self.max_lag_blocks
            )
            if choice != self.current:
                moved = "lagging" if self.active_source in lagging else "recovered"
                self.current = choice
                self.on_rotate(moved)
        check = HeadCheck(heads, best, self.active_source, moved, lagging)
        self.last_check = check
        self.on_heads(check)
        return check
