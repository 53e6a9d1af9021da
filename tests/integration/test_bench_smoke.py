"""scripts/bench.py cannot rot: its proxy (latency, request and method counts) in front of the
real devnet, and its cheapest row (reads per tick at 5 accounts) end to end."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench
from bench_support.proxy import RpcProxy

pytestmark = pytest.mark.integration


async def _post(url: str, body: Any) -> Any:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        return await r.json()


def test_proxy_adds_the_round_trip_and_counts_requests_and_methods(devnet_url: str) -> None:
    with RpcProxy(devnet_url, latency_ms=50) as proxy:
        t0 = time.perf_counter()
        one = asyncio.run(_post(proxy.url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}))
        elapsed = time.perf_counter() - t0
        assert one["result"] == hex(31337)
        assert elapsed >= 0.05
        batch = [
            {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber"},
            {"jsonrpc": "2.0", "id": 3, "method": "eth_chainId"},
        ]
        out = asyncio.run(_post(proxy.url, batch))
        assert sorted(r["id"] for r in out) == [2, 3]
        c = proxy.counts()
        # a JSON-RPC batch is one upstream request carrying two calls
        assert c.requests == 2
        assert dict(c.methods) == {"eth_chainId": 2, "eth_blockNumber": 1}
        before = proxy.counts()
        asyncio.run(_post(proxy.url, {"jsonrpc": "2.0", "id": 4, "method": "eth_chainId"}))
        d = proxy.counts().minus(before)
        assert (d.requests, dict(d.methods)) == (1, {"eth_chainId": 1})


def test_reads_row_one_request_against_one_per_read(
    devnet: dict[str, Any], devnet_url: str
) -> None:
    with RpcProxy(devnet_url, latency_ms=5) as proxy:
        rows = asyncio.run(bench.row_reads(bench.Bench(devnet, devnet_url, proxy), (5,), reps=1))
    req = next(r for r in rows if r.metric == "upstream requests")
    assert req.project == 1 and req.met is True
    # the baseline sends every read of the snapshot on its own: 3 block/time/chain-id reads,
    # 4 per reserve, per account 1 + 2 per reserve, one per feed and per perp
    n_res = len(devnet["tokens"])
    extra = len(devnet["chainlink"]) + len(devnet["perps"])
    assert req.baseline == 3 + 4 * n_res + 5 * (1 + 2 * n_res) + extra
    assert "| 1 reads/tick" in bench.table(rows)
