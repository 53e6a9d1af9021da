"""The fork's upstream relay against a real JSON-RPC server on loopback (aiohttp) that answers
state reads from a table keyed by block and counts what reaches it: what the relay keeps, what
it forwards, what it fetches in batches when the fork moves, and what it passes through."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.simulator.relay import ForkRelay

SAFE = "0x" + "5a" * 20


class Upstream:
    """Storage slot ``s`` of any account at block ``b`` holds ``b * 1000 + s``."""

    def __init__(self) -> None:
        self.requests = 0
        self.calls: Counter[str] = Counter()
        self.status = 200
        self.batches = True

    def answer(self, call: dict[str, Any]) -> dict[str, Any]:
        self.calls[call["method"]] += 1
        p = call.get("params", [])
        if call["method"] == "eth_getStorageAt":
            if p[2] == "latest":
                return {"jsonrpc": "2.0", "id": call["id"], "result": hex(999)}
            value = int(p[2], 16) * 1000 + int(p[1], 16)
            return {"jsonrpc": "2.0", "id": call["id"], "result": hex(value)}
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


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    up = Upstream()
    app = web.Application()
    app.router.add_post("/", up.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield up, f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


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
