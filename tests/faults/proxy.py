"""A fault-injecting JSON-RPC proxy in front of a real anvil: a small aiohttp server on
loopback, run in its own thread so the daemon under test (a subprocess) talks to it like to
any provider. Faults are real HTTP behaviour, chosen per JSON-RPC method:

``down``        the listener is closed (connection refused), ``start`` re-opens the same port
``hang``        the request is accepted and never answered
``http:<n>``    HTTP status n (429 with ``Retry-After``), no JSON-RPC body
``garbage``     HTTP 200 with a body that is not JSON
``rpc_error``   HTTP 200 with a JSON-RPC error object
``chain:<id>``  ``eth_chainId`` answers another chain
``lose``        forwarded to anvil, then answered with HTTP 502 (the answer is lost)
``delay:<s>``   forwarded after s seconds
``lag:<n>``     a provider n blocks behind: ``eth_blockNumber`` answers the head minus n, and a
                read at ``latest`` is made at that block
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web


@dataclass
class Fault:
    kind: str
    methods: frozenset[str] | None = None  # None: every method
    times: int | None = None  # None: until cleared
    after: str | None = None  # active only once this method has reached anvil

    def applies(self, method: str) -> bool:
        return self.methods is None or method in self.methods


@dataclass
class RpcProxy:
    upstream: str
    port: int = 0
    faults: list[Fault] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)  # requests received, per method
    forwarded: Counter[str] = field(default_factory=Counter)  # reached anvil, per method
    injected: Counter[str] = field(default_factory=Counter)  # faults answered, per kind

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lock = threading.Lock()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    # -- control (from the test's thread) ----------------------------------------------------

    def start(self) -> None:
        self._run(self._start())

    def stop(self) -> None:
        """Close the listener: new connections are refused (the RPC is "killed")."""
        self._run(self._stop())

    def close(self) -> None:
        self._run(self._stop())
        if self._session is not None:
            self._run(self._session.close())
        self._run(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def inject(
        self,
        kind: str,
        methods: set[str] | None = None,
        times: int | None = None,
        after: str | None = None,
    ) -> None:
        with self._lock:
            self.faults.append(Fault(kind, frozenset(methods) if methods else None, times, after))

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def wait_for(
        self, method: str, count: int = 1, timeout: float = 60, *, forwarded: bool = True
    ) -> None:
        counter = self.forwarded if forwarded else self.seen
        deadline = time.monotonic() + timeout
        while counter[method] < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} not {count}x within {timeout}s: {dict(counter)}")
            time.sleep(0.05)

    # -- server --------------------------------------------------------------------------------

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _cancel_all(self) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _fault_for(self, method: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.applies(method) and (f.after is None or self.forwarded[f.after] > 0):
                    if f.times is not None:
                        f.times -= 1
                        if f.times <= 0:
                            self.faults.remove(f)
                    return f
        return None

    async def _forward(self, body: Any) -> tuple[int, bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(self.upstream, json=body) as resp:
            return resp.status, await resp.read()

    async def _lagging(self, body: Any, calls: list[Any], behind: int) -> web.Response:
        _, raw = await self._forward({"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber"})
        head = max(0, int(json.loads(raw)["result"], 16) - behind)
        if all(c.get("method") == "eth_blockNumber" for c in calls):
            out = [{"jsonrpc": "2.0", "id": c.get("id"), "result": hex(head)} for c in calls]
            return web.json_response(out if isinstance(body, list) else out[0])
        for c in calls:
            c["params"] = [
                hex(head) if p in ("latest", "pending") else p for p in c.get("params", [])
            ]
        status, payload = await self._forward(body)
        for c in calls:
            self.forwarded[str(c.get("method"))] += 1
        return web.Response(status=status, body=payload, content_type="application/json")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        calls = body if isinstance(body, list) else [body]
        method = ",".join(sorted({str(c.get("method")) for c in calls}))
        for c in calls:
            self.seen[str(c.get("method"))] += 1
        fault = next((f for c in calls if (f := self._fault_for(str(c.get("method"))))), None)
        rid = calls[0].get("id") if calls else None
        if fault is not None:
            self.injected[fault.kind] += 1
            kind = fault.kind
            if kind == "hang":
                await asyncio.sleep(3600)
            if kind.startswith("http:"):
                status = int(kind.split(":")[1])
                headers = {"Retry-After": "1"} if status == 429 else {}
                return web.Response(status=status, text="fault injected", headers=headers)
            if kind == "garbage":
                return web.Response(status=200, text="<html>not json")
            if kind == "rpc_error":
                return web.json_response(
                    {
                        "jsonrpc": "2.0",
                        "id": rid,
                        "error": {"code": -32000, "message": "header not found"},
                    }
                )
            if kind.startswith("chain:") and method == "eth_chainId":
                return web.json_response(
                    {"jsonrpc": "2.0", "id": rid, "result": hex(int(kind.split(":")[1]))}
                )
            if kind.startswith("delay:"):
                await asyncio.sleep(float(kind.split(":")[1]))
            if kind.startswith("lag:"):
                return await self._lagging(body, calls, int(kind.split(":")[1]))
            if kind == "lose":
                await self._forward(body)
                for c in calls:
                    self.forwarded[str(c.get("method"))] += 1
                return web.Response(status=502, text="bad gateway")
        status, payload = await self._forward(body)
        for c in calls:
            self.forwarded[str(c.get("method"))] += 1
        return web.Response(status=status, body=payload, content_type="application/json")


def rpc(url: str, method: str, params: list[Any] | None = None) -> Any:
    """A blocking JSON-RPC call for the test's own checks (straight to anvil)."""
    import urllib.request

    req = urllib.request.Request(
        url,
        data=json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        out = json.loads(resp.read())
    if "error" in out:
        raise AssertionError(f"{method}: {out['error']}")
    return out["result"]
