"""The fork's upstream relay against a real JSON-RPC server on loopback (aiohttp) that answers
state reads from a table keyed by block and counts what reaches it: what the relay keeps, what
it forwards, what it fetches in batches when the fork moves, and what it passes through."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.core.anvil import free_port
from agent.core.rpc_pool import RpcPool
from agent.simulator.relay import ForkRelay

SAFE = "0x" + "5a" * 20


class Upstream:
    """Storage slot ``s`` of any account at block ``b`` holds ``b * 1000 + s``."""

    def __init__(self) -> None:
        self.requests = 0
        self.calls: Counter[str] = Counter()
        self.status = 200
        self.batches = True
        self.reorgs = 0  # blocks replaced at their height so far: in their values and hashes

    def answer(self, call: dict[str, Any]) -> dict[str, Any]:
        self.calls[call["method"]] += 1
        p = call.get("params", [])
        if call["method"] == "eth_getStorageAt":
            if p[2] == "latest":
                return {"jsonrpc": "2.0", "id": call["id"], "result": hex(999)}
            value = int(p[2], 16) * 1000 + int(p[1], 16) + 100_000 * self.reorgs
            return {"jsonrpc": "2.0", "id": call["id"], "result": hex(value)}
        if call["method"] == "eth_getBlockByNumber":
            block = {"number": p[0], "hash": _hash(int(p[0], 16), self.reorgs)}
            return {"jsonrpc": "2.0", "id": call["id"], "result": block}
        if call["method"] == "eth_getBalance":
            return {"jsonrpc": "2.0", "id": call["id"], "result": p[1]}
        if call["method"] == "eth_chainId":
            return {"jsonrpc": "2.0", "id": call["id"], "result": "0x1"}
        return {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32601, "message": "no"}}

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        if self.status != 200:
            return web.Response(status=self.status, text="gateway down")
        if isinstance(body, list):
            if not self.batches:
                return web.json_response(
                    {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batch"}}
                )
            return web.json_response([self.answer(c) for c in body])
        return web.json_response(self.answer(body))


def _hash(block: int, reorgs: int) -> str:
    return "0x" + f"{reorgs:02x}{block:062x}"


@contextlib.asynccontextmanager
async def _serve(up: Upstream) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/", up.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    up = Upstream()
    async with _serve(up) as url:
        yield up, url


async def _rpc(url: str, method: str, *params: Any) -> tuple[int, Any]:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        text = await r.text()
        return r.status, json.loads(text) if r.status == 200 else text


async def test_reads_at_the_block_are_kept_and_fetched_in_one_batch_at_the_next(
    upstream: tuple[Upstream, str],
) -> None:
    up, url = upstream
    relay = ForkRelay(url)
    await relay.start()
    try:
        await relay.move_to(0x88)
        # slot 0x88 at block 0x88: only the last parameter is the block
        for _ in range(3):
            _, out = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x88", "0x88")
            assert out == {"jsonrpc": "2.0", "id": 7, "result": hex(0x88 * 1000 + 0x88)}
        _, bal = await _rpc(relay.url, "eth_getBalance", SAFE, "0x88")
        assert bal["result"] == "0x88"
        assert up.requests == 2 and relay.stats.served == 2  # each read once, then kept
        # a read at a tag is never kept: "latest" moves
        for _ in range(2):
            _, out = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x1", "latest")
            assert out["result"] == hex(999)
        assert up.requests == 4

        # The fork moves: what it read at 0x88 is fetched at 0x89 in one batch, values of 0x89.
        await relay.move_to(0x89)
        assert up.requests == 5 and relay.stats.prefetch_requests == 1
        assert up.calls["eth_getStorageAt"] == 4  # the slot (not "latest") once more, batched
        _, out = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x88", "0x89")
        assert out["result"] == hex(0x89 * 1000 + 0x88)  # the new block's value, not the old
        _, bal = await _rpc(relay.url, "eth_getBalance", SAFE, "0x89")
        assert bal["result"] == "0x89"
        assert up.requests == 5  # both from the batch
        # a read at the old block is not the fork's any more: forwarded, not served stale
        _, out = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x88", "0x88")
        assert out["result"] == hex(0x88 * 1000 + 0x88) and up.requests == 6
        assert relay.working_set() == ({SAFE}, {(SAFE, "0x88")})
    finally:
        await relay.stop()


async def test_errors_pass_through_and_are_not_kept(upstream: tuple[Upstream, str]) -> None:
    up, url = upstream
    relay = ForkRelay(url)
    await relay.start()
    try:
        await relay.move_to(5)
        up.status = 502
        status, text = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x1", "0x5")
        assert (status, text) == (502, "gateway down")  # as the upstream said it
        up.status = 200
        _, out = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x1", "0x5")
        assert out["result"] == hex(5001)  # asked again, not an error kept
        _, err = await _rpc(relay.url, "eth_getCode", SAFE, "0x5")
        _, err2 = await _rpc(relay.url, "eth_getCode", SAFE, "0x5")
        assert "error" in err and "error" in err2 and up.calls["eth_getCode"] == 2
        # A transaction the fork mined itself: its receipt is not the upstream's to give.
        relay.local_tx("0xAB")
        _, rec = await _rpc(relay.url, "eth_getTransactionReceipt", "0xab")
        assert rec == {"jsonrpc": "2.0", "id": 7, "result": None}
        assert "eth_getTransactionReceipt" not in up.calls
        # An upstream without batches: moving costs nothing but the fork's own reads then.
        up.batches = False
        await relay.move_to(6)
        _, out = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x1", "0x6")
        assert out["result"] == hex(6001)
        assert relay.stats.prefetched == 0
    finally:
        await relay.stop()
    # stopped, it still remembers: a fork started again at the block reads nothing again
    await relay.start()
    try:
        before = up.requests
        _, out = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x1", "0x6")
        assert out["result"] == hex(6001) and up.requests == before
    finally:
        await relay.stop()


async def test_the_relay_rotates_with_the_chains_pool() -> None:
    """Issue 24.3: the fork reads through the chain's RPC pool. With the first URL refusing,
    the fork's read goes to the second (and the pool, which the chain's reads share, moves
    there); once the reads have moved, the fork goes straight to the URL they use."""
    second, third = Upstream(), Upstream()
    refusing = f"http://127.0.0.1:{free_port()}/"
    rotations: list[str] = []
    async with _serve(second) as url2, _serve(third) as url3:
        pool = RpcPool([refusing, url2, url3], source="rpc:test", on_rotate=rotations.append)
        relay = ForkRelay(pool, timeout_s=5)
        await relay.start()
        try:
            await relay.move_to(5)
            _, out = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x1", "0x5")
            assert out["result"] == hex(5001)
            assert rotations == ["unreachable"] and pool.active_url == url2
            assert (second.requests, third.requests) == (1, 0)
            second.status = 503  # the second fails too: the pool moves on, and so does the fork
            _, out = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x2", "0x5")
            assert out["result"] == hex(5002)
            assert rotations == ["unreachable", "5xx"] and pool.active_url == url3
            # the chain's reads are where the fork's went
            assert await pool.request("eth_chainId") == "0x1" and third.requests == 2
            # every URL failing (429, refused, 503): the last failure goes to the fork as it came
            third.status = 429
            status, text = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x3", "0x5")
            assert (status, text) == (503, "gateway down")
            assert rotations[-3:] == ["429", "unreachable", "5xx"] and pool.active_url == url3
        finally:
            await relay.stop()
            await pool.close()


async def test_a_block_replaced_at_the_same_height_is_a_new_block(
    upstream: tuple[Upstream, str],
) -> None:
    """Issue 24.5: what the relay keeps belongs to one block hash. A reorg at the fork's height
    (same number, another hash) forgets it; a block answer with another hash than the one the
    fork moved to marks the move replaced and is not kept."""
    up, url = upstream
    relay = ForkRelay(url)
    await relay.start()
    try:
        await relay.move_to(5, _hash(5, 0))
        _, out = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x1", "0x5")
        assert out["result"] == hex(5001)
        _, blk = await _rpc(relay.url, "eth_getBlockByNumber", "0x5", False)
        assert blk["result"]["hash"] == _hash(5, 0) and not relay.replaced
        up.reorgs = 1  # block 5 replaced: same height, other state, other hash
        await relay.move_to(5, _hash(5, 0))  # the same block: nothing to do
        _, out = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x1", "0x5")
        assert out["result"] == hex(5001)  # kept (the relay was told it is the same block)
        await relay.move_to(5, _hash(5, 1))  # the new block at the same height
        _, out = await _rpc(relay.url, "eth_getStorageAt", SAFE, "0x1", "0x5")
        assert out["result"] == hex(105_001)  # the replacing block's state, not the old one
        # Moved to a hash the upstream no longer has at that height (the block was replaced
        # between the simulator asking its hash and the fork reading it):
        _, blk = await _rpc(relay.url, "eth_getBlockByNumber", "0x5", False)  # the fork's read
        assert blk["result"]["hash"] == _hash(5, 1)
        up.reorgs = 2
        await relay.move_to(6, _hash(6, 1))
        assert relay.replaced  # the batch fetched at the move had block 6 with another hash
        asked = up.calls["eth_getBlockByNumber"]
        for _ in range(2):
            _, blk = await _rpc(relay.url, "eth_getBlockByNumber", "0x6", False)
            assert blk["result"]["hash"] == _hash(6, 2)
        assert up.calls["eth_getBlockByNumber"] == asked + 2  # never kept: asked each time
        await relay.move_to(6, _hash(6, 1))  # a replaced move is never "the same block"
        assert relay.replaced
        await relay.move_to(6, _hash(6, 2))
        assert not relay.replaced
    finally:
        await relay.stop()
