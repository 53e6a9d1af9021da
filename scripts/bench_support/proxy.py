"""A JSON-RPC proxy that adds a round-trip delay to every HTTP request and counts them.

It stands in for a hosted RPC in front of a local devnet: each HTTP request (a single call or
a JSON-RPC batch) waits ``latency_ms`` before it is forwarded, and the proxy records one
upstream request per HTTP request and every JSON-RPC method it carried. It runs its own event
loop in a daemon thread, so synchronous code (anvil forking through it) can use it too.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web


@dataclass
class Counts:
    requests: int = 0  # HTTP requests (what a hosted RPC bills and what costs a round trip)
    methods: Counter[str] = field(default_factory=Counter)  # JSON-RPC calls, batches unpacked

    def copy(self) -> Counts:
        return Counts(self.requests, Counter(self.methods))

    def minus(self, before: Counts) -> Counts:
        m = Counter(self.methods)
        m.subtract(before.methods)
        return Counts(self.requests - before.requests, +m)


class RpcProxy:
    def __init__(self, upstream: str, latency_ms: float = 30.0) -> None:
        self.upstream = upstream
        self.latency_s = latency_ms / 1000
        self._counts = Counts()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def counts(self) -> Counts:
        with self._lock:
            return self._counts.copy()

    def _record(self, body: Any) -> None:
        calls = body if isinstance(body, list) else [body]
        with self._lock:
            self._counts.requests += 1
            for c in calls:
                method = c.get("method") if isinstance(c, dict) else None
                self._counts.methods[str(method)] += 1

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            self._record(json.loads(raw))
        except ValueError:
            self._record({"method": "<not json>"})
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        assert self._session is not None
        async with self._session.post(
            self.upstream, data=raw, headers={"Content-Type": "application/json"}
        ) as resp:
            out = await resp.read()
            return web.Response(body=out, status=resp.status, content_type="application/json")

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=120),
        )
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def start(self) -> RpcProxy:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> RpcProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
