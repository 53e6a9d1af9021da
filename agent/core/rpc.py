"""Async JSON-RPC client with middleware layers.

The shape follows web3.py's middleware: a request passes through a stack of small layers, each
wrapping the next ``send`` callable (retries, metrics, then the transport). The retry layer and
the redaction are the ones the HTTP client uses (:mod:`agent.core.retry`,
:mod:`agent.core.redact`). Library errors (aiohttp, JSON) are translated into
``agent.core.errors`` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from agent.core.errors import (
    ExecutionReverted,
    HttpStatusError,
    MalformedResponse,
    RateLimited,
    RpcError,
    TransportError,
    WrongChain,
)
from agent.core.metrics import METRICS
from agent.core.redact import redact_url, snippet
from agent.core.retry import RetryPolicy, Sleep, parse_retry_after, truncated_json, with_retries

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "RpcClient", "redact_url", "send_client"]

# A node answers in milliseconds or is down: fewer, shorter retries than for HTTP APIs.
DEFAULT_RETRY = RetryPolicy(attempts=3, base_delay_s=0.25, max_delay_s=5.0, max_retry_after_s=30.0)

Send = Callable[[str, Sequence[Any]], Awaitable[Any]]
Layer = Callable[[Send], Send]

# JSON-RPC error codes providers use for capacity limits (see samples: 429 / -32005 / 403).
_RATE_LIMIT_CODES = {-32005, 429}
_TOO_MANY_RESULTS = re.compile(r"more than \d+ results|block range")


def metrics_layer(source: str) -> Layer:
    def wrap(send: Send) -> Send:
        async def layer(method: str, params: Sequence[Any]) -> Any:
            t0 = time.perf_counter()
            try:
                result = await send(method, params)
            except Exception:
                METRICS.record(source, method, time.perf_counter() - t0, error=True)
                raise
            METRICS.record(source, method, time.perf_counter() - t0)
            return result

        return layer

    return wrap


def retry_layer(
    policy: RetryPolicy,
    source: str,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> Layer:
    """The shared retry layer (:mod:`agent.core.retry`) around a JSON-RPC send. JSON-RPC
    errors (reverts, bad params) are answers, not failures, and are never retried."""
    rand = rng or random.Random()

    def wrap(send: Send) -> Send:
        async def layer(method: str, params: Sequence[Any]) -> Any:
            return await with_retries(
                lambda _: send(method, params),
                policy,
                source=source,
                what=method,
                sleep=sleep,
                rng=rand,
            )

        return layer

    return wrap


class RpcClient:
    """One endpoint. ``source`` names it in errors and metrics (e.g. ``rpc:devnet``)."""

    def __init__(
        self,
        url: str,
        *,
        source: str = "rpc",
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        layers: Sequence[Layer] = (),
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.source = source
        self._own_session = session is None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._ids = itertools.count(1)
        send: Send = self._transport
        # Innermost first: metrics wraps the transport, so every attempt a retry makes is counted.
        retried = retry_layer(retry or DEFAULT_RETRY, source, sleep=sleep, rng=rng)
        for layer in (metrics_layer(source), retried, *layers):
            send = layer(send)
        self._send = send

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def request(self, method: str, params: Sequence[Any] = ()) -> Any:
        return await self._send(method, params)

    async def _transport(self, method: str, params: Sequence[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        where = f"{self.source} ({redact_url(self.url)})"
        try:
            async with self._get_session().post(self.url, json=body, timeout=self._timeout) as resp:
                text = await resp.text()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError as exc:
            raise TransportError(where, f"{method} timed out") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(
                where, f"{method}: cannot connect ({exc.__class__.__name__})"
            ) from exc
        truncated = False
        try:
            payload = json.loads(text)
        except ValueError as exc:
            payload = None
            truncated = truncated_json(text, exc)
        if status == 429 or (isinstance(payload, dict) and _is_rate_limit(payload)):
            raise RateLimited(
                where, f"{method}: rate limited (HTTP {status})", parse_retry_after(retry_after)
            )
        if not isinstance(payload, dict):
            snip = snippet(text)
            if status >= 400:
                # A gateway's error page (HTML 502/503/504): a failure to retry, as over HTTP.
                raise HttpStatusError(where, f"{method}: HTTP {status}: {snip}", status, snip)
            raise MalformedResponse(
                where,
                f"{method}: HTTP {status}, "
                + ("JSON cut short" if truncated else "not a JSON-RPC object")
                + f": {snip!r}",
                truncated=truncated,
            )
        if "error" in payload and payload["error"] is not None:
            err = payload["error"]
            if not isinstance(err, dict):
                raise MalformedResponse(where, f"{method}: error is not an object: {err!r}")
            code = int(err.get("code", 0))
            msg = str(err.get("message", ""))
            data = err.get("data")
            if "revert" in msg.lower():
                raise ExecutionReverted(where, code, msg, data)
            raise RpcError(where, code, msg, data)
        if status >= 400:
            raise HttpStatusError(where, f"{method}: HTTP {status}", status, snippet(text))
        if "result" not in payload:
            raise MalformedResponse(where, f"{method}: response has neither result nor error")
        return payload["result"]

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """``calls`` in one JSON-RPC batch request (one HTTP round trip instead of one each),
        not retried. Returns, in order, each call's result or the ``RpcError`` it was answered
        with (a failed call is an answer: the caller decides); a transport failure, an HTTP
        error or an answer that is not a batch raises, as for one request."""
        if not calls:
            return []
        where = f"{self.source} ({redact_url(self.url)})"
        body = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)}
            for i, (m, p) in enumerate(calls)
        ]
        t0 = time.perf_counter()
        try:
            async with self._get_session().post(self.url, json=body, timeout=self._timeout) as resp:
                text, status = await resp.text(), resp.status
        except TimeoutError as exc:
            METRICS.record(self.source, "batch", time.perf_counter() - t0, error=True)
            raise TransportError(where, f"batch of {len(calls)} timed out") from exc
        except aiohttp.ClientError as exc:
            METRICS.record(self.source, "batch", time.perf_counter() - t0, error=True)
            raise TransportError(
                where, f"batch of {len(calls)}: cannot connect ({exc.__class__.__name__})"
            ) from exc
        METRICS.record(self.source, "batch", time.perf_counter() - t0)
        if status >= 400:
            raise HttpStatusError(where, f"batch: HTTP {status}", status, snippet(text))
        try:
            answers = json.loads(text)
        except ValueError:
            answers = None
        listed = answers if isinstance(answers, list) else []
        by_id = {a.get("id"): a for a in listed if isinstance(a, dict)}
        if len(by_id) != len(calls):
            raise MalformedResponse(where, f"batch of {len(calls)}: {snippet(text)!r}")
        out: list[Any] = []
        for i, (method, _) in enumerate(calls):
            a = by_id.get(i)
            if a is None:
                raise MalformedResponse(where, f"batch: no answer to {method} (id {i})")
            err = a.get("error")
            if err is not None:
                e = err if isinstance(err, dict) else {"message": str(err)}
                msg, code, data = str(e.get("message", "")), int(e.get("code", 0)), e.get("data")
                kind = ExecutionReverted if "revert" in msg.lower() else RpcError
                out.append(kind(where, code, msg, data))
            elif "result" not in a:
                raise MalformedResponse(where, f"{method}: answer has neither result nor error")
            else:
                out.append(a["result"])
        return out

    # Convenience wrappers ---------------------------------------------------------------

    async def chain_id(self) -> int:
        return int(await self.request("eth_chainId"), 16)

    async def block_number(self) -> int:
        return int(await self.request("eth_blockNumber"), 16)

    async def get_block(self, number: int | str = "latest") -> dict[str, Any]:
        tag = hex(number) if isinstance(number, int) else number
        block = await self.request("eth_getBlockByNumber", [tag, False])
        if not isinstance(block, dict):
            raise MalformedResponse(self.source, f"block {number} not found")
        return block

    async def eth_call(self, to: str, data: str, block: int | str = "latest") -> bytes:
        tag = hex(block) if isinstance(block, int) else block
        result = await self.request("eth_call", [{"to": to, "data": data}, tag])
        if not isinstance(result, str) or not result.startswith("0x"):
            raise MalformedResponse(self.source, f"eth_call returned {result!r}")
        return bytes.fromhex(result[2:])

    async def ensure_chain(self, expected: int) -> None:
        actual = await self.chain_id()
        if actual != expected:
            raise self.wrong_chain(actual, expected)

    def wrong_chain(self, actual: int, expected: int) -> WrongChain:
        """The one message for an RPC on another chain (``eth_chainId``, or the chain id the
        tick's Multicall3 batch read)."""
        return WrongChain(
            self.source,
            f"RPC {redact_url(self.url)} is on chain {actual}, configuration expects {expected}",
        )


def send_client(url: str, *, source: str = "private-rpc") -> RpcClient:
    """The client of a private send URL (``private_rpc_url`` of ``sinks.live`` and
    ``sinks.autonomous``), built by ``App``: one attempt, never retried. A timeout after the
    node took the transaction must not look like a failure that is sent again (with a new
    nonce); the sender re-reads state and reconciles by hash and nonce instead."""
    return RpcClient(url, source=source, retry=RetryPolicy(attempts=1))


def _is_rate_limit(payload: dict[str, Any]) -> bool:
    err = payload.get("error")
    if not isinstance(err, dict):
        return False
    msg = str(err.get("message", "")).lower()
    if _TOO_MANY_RESULTS.search(msg):
        # Infura reuses -32005 for "query returned more than 10000 results": an answer about
        # the request (narrow the range), not a capacity problem to wait out.
        return False
    return err.get("code") in _RATE_LIMIT_CODES or "rate limit" in msg or "capacity" in msg
