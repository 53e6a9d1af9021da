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
from agent.core.rpc_pool import ChainWentBack, HeadWatch, RpcPool, rotation_reason


@dataclass
class Node:
    """Answers ``eth_chainId`` with ``mode``: ok, 429, 502, hang, rpc_error."""

    mode: str = "ok"
    calls: int = 0
    url: str = ""
    head: int = 100  # eth_blockNumber

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.json()
        if self.mode.startswith("429"):
            wait = self.mode.partition(":")[2] or "0"
            return web.Response(status=429, text="slow down", headers={"Retry-After": wait})
        if self.mode == "502":
            return web.Response(status=502, text="<html>bad gateway</html>")
        if self.mode == "hang":
            await asyncio.sleep(5)
        if self.mode == "rpc_error":
            return web.json_response(
                {"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32602, "message": "bad"}}
            )
        result = hex(self.head) if body["method"] == "eth_blockNumber" else "0x7a69"
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": result})


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
        with pytest.raises(SourceError, match=r"HTTP 429"):
            await pool.chain_id()
        # The policy's 3 attempts are 3 rounds over both URLs (core/retry.py backs off
        # between rounds); the last failure is raised.
        assert (a.calls, b.calls) == (3, 3)
        assert rotations == ["5xx", "429"] * 3
    finally:
        await pool.close()


async def test_the_pool_retries_with_the_one_policy(nodes: Nodes) -> None:
    """core/retry.py's policy, not a loop of its own: a Retry-After beyond the policy's
    max_retry_after_s is raised at once instead of being waited out (or cut short)."""
    node = await nodes.add("429:60")
    pool = RpcPool(
        [node.url],
        source="rpc:test",
        timeout_s=0.5,
        retry=RetryPolicy(attempts=5, base_delay_s=0.01, max_delay_s=0.02, max_retry_after_s=0.5),
    )
    try:
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(SourceError, match="rate limited"):
            await pool.chain_id()
        assert node.calls == 1 and asyncio.get_running_loop().time() - t0 < 1
    finally:
        await pool.close()


async def test_a_hung_url_costs_at_most_the_request_deadline(nodes: Nodes) -> None:
    """Per-attempt timeouts times attempts times URLs would be 5 x 0.5 x 2 = 5 s here; the one
    deadline of the request (every URL and retry included) stops it at 1.2 s."""
    a, b = await nodes.add("hang"), await nodes.add("hang")
    pool = RpcPool(
        [a.url, b.url],
        source="rpc:test",
        timeout_s=0.5,
        retry=RetryPolicy(attempts=5, base_delay_s=0.01, max_delay_s=0.02),
        deadline_s=1.2,
    )
    loop = asyncio.get_running_loop()
    try:
        t0 = loop.time()
        with pytest.raises(TransportError, match=r"timed out.*deadline \(1.2s"):
            await pool.chain_id()
        assert 1.1 < loop.time() - t0 < 2.0
        assert a.calls + b.calls == 3  # 0.5 s each: the third was cut by the deadline
    finally:
        await pool.close()


async def test_a_lagging_url_is_left_and_the_first_taken_back_when_it_recovers(
    nodes: Nodes,
) -> None:
    first, second = await nodes.add("ok"), await nodes.add("ok")
    first.head, second.head = 344, 394  # the first 50 blocks behind
    rotations: list[str] = []
    checks: list[Any] = []
    pool = RpcPool(
        [first.url, second.url],
        source="rpc:test",
        timeout_s=0.5,
        max_lag_blocks=10,
        on_rotate=rotations.append,
        on_heads=checks.append,
    )
    try:
        check = await pool.check_heads()
        assert check is not None and check.best == 394 and check.moved == "lagging"
        assert check.lagging == ("rpc:test",) and pool.active_url == second.url
        assert check.describe()["rpc:test"] == {"head": 344, "lag_blocks": 50, "active": False}
        assert await pool.chain_id() == 31337  # the read goes to the second
        assert (first.calls, second.calls) == (1, 2)
        first.head = 390  # 4 behind: within the bound, and the first is preferred
        check = await pool.check_heads()
        assert check is not None and check.moved == "recovered" and pool.active_url == first.url
        assert check.lagging == ()
        assert rotations == ["lagging", "recovered"] and checks[-1] is check
        first.head = 394 - 10  # exactly the bound: stays
        assert (await pool.check_heads()).moved is None  # type: ignore[union-attr]
        first.mode = "502"  # the first does not answer: the second is used, nothing lags
        check = await pool.check_heads()
        assert check is not None and check.moved == "recovered" and check.heads[0].head is None
        assert pool.active_url == second.url
    finally:
        await pool.close()


def test_a_tick_never_goes_back() -> None:
    watch = HeadWatch("rpc:test")
    watch.accept(394, 1_700_000_000)
    watch.accept(394, 1_700_000_000)  # the same block again: no new block yet
    with pytest.raises(ChainWentBack, match=r"block 344 is older than block 394"):
        watch.accept(344, 1_700_000_100)
    with pytest.raises(ChainWentBack, match=r"chain time went back: block 395 has timestamp"):
        watch.accept(395, 1_699_999_000)
    assert (watch.block, watch.timestamp) == (394, 1_700_000_000)  # the last good head kept
    watch.accept(395, 1_700_000_012)
    assert (watch.block, watch.timestamp) == (395, 1_700_000_012)


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
