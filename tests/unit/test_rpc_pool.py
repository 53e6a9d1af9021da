"""Several RPC URLs per chain, against real local HTTP servers that fail the way providers do:
429, 502 (HTML body), a hang past the timeout, a refused connection. Each failure moves to the
next URL and is counted by reason; a JSON-RPC error is an answer and never rotates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.core.anvil import free_port
from agent.core.errors import RpcError, SourceError, TransportError
from agent.core.metrics import METRICS
from agent.core.rpc import RetryPolicy
from agent.core.rpc_pool import RpcPool, rotation_reason


@dataclass
class Node:
    """Answers ``eth_chainId`` with ``mode``: ok, 429, 502, hang, rpc_error."""

    mode: str = "ok"
    calls: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.json()
        if self.mode == "429":
            return web.Response(status=429, text="slow down", headers={"Retry-After": "0"})
        if self.mode == "502":
            return web.Response(status=502, text="<html>bad gateway</html>")
        if self.mode == "hang":
            await asyncio.sleep(5)
        if self.mode == "rpc_error":
            return web.json_response(
                {"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32602, "message": "bad"}}
            )
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": "0x7a69"})


@dataclass
class Nodes:
    nodes: list[Node] = field(default_factory=list)
    servers: list[TestServer] = field(default_factory=list)

    async def add(self, mode: str) -> Node:
        node = Node(mode)
        app = web.Application()
        app.router.add_post("/", node.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        node.url = f"http://127.0.0.1:{server.port}/"
        self.nodes.append(node)
        self.servers.append(server)
        return node


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    n = Nodes()
    try:
        yield n
    finally:
        for s in n.servers:
            await s.close()


def _pool(urls: list[str], rotations: list[str]) -> RpcPool:
    return RpcPool(
        urls,
        source="rpc:test",
        timeout_s=0.5,
        retry=RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02),
        on_rotate=rotations.append,
    )


@pytest.mark.parametrize("mode,reason", [("429", "429"), ("502", "5xx"), ("hang", "timeout")])
async def test_a_failing_url_hands_over_to_the_next(nodes: Nodes, mode: str, reason: str) -> None:
    bad, good = await nodes.add(mode), await nodes.add("ok")
    rotations: list[str] = []
    pool = _pool([bad.url, good.url], rotations)
    METRICS.reset()
    try:
        assert await pool.chain_id() == 31337
        assert rotations == [reason] and pool.active_url == good.url
        assert await pool.chain_id() == 31337  # stays on the healthy one
        assert (bad.calls, good.calls) == (1, 2)
    finally:
        await pool.close()
    stats = METRICS.snapshot()
    assert stats["rpc:test"]["errors"] == 1 and stats["rpc:test#2"]["requests"] == 2


async def test_a_refused_connection_rotates_and_wraps_around(nodes: Nodes) -> None:
    good = await nodes.add("ok")
    dead = f"http://127.0.0.1:{free_port()}/"
    rotations: list[str] = []
    pool = _pool([good.url, dead], rotations)
    try:
        pool.current = 1
        assert await pool.chain_id() == 31337
        assert rotations == ["unreachable"] and pool.active_url == good.url
    finally:
        await pool.close()


async def test_a_json_rpc_error_is_an_answer_not_a_rotation(nodes: Nodes) -> None:
    first, second = await nodes.add("rpc_error"), await nodes.add("ok")
    rotations: list[str] = []
    pool = _pool([first.url, second.url], rotations)
    try:
        with pytest.raises(RpcError):
            await pool.chain_id()
        assert rotations == [] and second.calls == 0
    finally:
        await pool.close()


async def test_every_url_failing_raises_after_the_attempts(nodes: Nodes) -> None:
    a, b = await nodes.add("502"), await nodes.add("429")
    rotations: list[str] = []
    pool = _pool([a.url, b.url], rotations)
    try:
        with pytest.raises(SourceError, match=r"HTTP 502"):
            await pool.chain_id()
        assert a.calls + b.calls == 3  # max(attempts, urls)
        assert rotations == ["5xx", "429"]
    finally:
        await pool.close()


def test_reasons() -> None:
    from agent.core.errors import MalformedResponse, RateLimited

    cases: list[tuple[Callable[[], Exception], str | None]] = [
        (lambda: RateLimited("s", "m"), "429"),
        (lambda: TransportError("s", "eth_call: HTTP 503"), "5xx"),
        (lambda: MalformedResponse("s", "eth_call: HTTP 502, not a JSON-RPC object"), "5xx"),
        (lambda: TransportError("s", "eth_call timed out"), "timeout"),
        (lambda: MalformedResponse("s", "eth_call returned 1"), None),
    ]
    got: list[Any] = [rotation_reason(make()) for make, _ in cases]
    assert got == [r for _, r in cases]
