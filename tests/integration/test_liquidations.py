"""Liquidation volume from real Aave V3 ``LiquidationCall`` events on the devnet: drop the ETH/USD
feed until the Safe's position is liquidatable, liquidate it for real, and check the collector's
hourly USD volume against the event, valued by hand."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from web3.logs import DISCARD

from agent.collectors.liquidations import (
    HOUR,
    collect_liquidations,
    liquidation_volume,
)
from agent.collectors.onchain import discover
from agent.config import chain_config_from_deployment
from agent.core.market import MarketLayout
from agent.core.rpc import RpcClient
from agent.core.units import MAX_UINT256
from agent.devnet.artifacts import forge_artifact, npm_artifact
from agent.devnet.chain import Chain
from agent.devnet.deploy import health_factor

pytestmark = pytest.mark.integration


chain_config = chain_config_from_deployment


def liquidate_safe(c: Chain, dep: dict[str, Any]) -> dict[str, Any]:
    """Drop ETH/USD (the Aave oracle reads the same feed) until HF < 1, then liquidate the Safe's
    USDC debt against its WETH with the devnet's liquidator. Returns the decoded event + block."""
    safe = dep["safe"]["address"]
    feed = c.at(dep["chainlink"]["ETH/USD"], forge_artifact("MockV3Aggregator"))
    price = 3000
    while health_factor(c, dep, safe) >= 1:
        price -= 100
        c.send(feed, "updateAnswer", price * 10**8, sender=dep["accounts"]["deployer"])
    pool = c.at(dep["aave"]["pool"], npm_artifact("Pool"))
    t = dep["tokens"]
    receipt = c.send(
        pool,
        "liquidationCall",
        t["WETH"]["address"],
        t["USDC"]["address"],
        safe,
        MAX_UINT256,
        False,
        sender=c.accounts()[9],
    )
    events = pool.events.LiquidationCall().process_receipt(receipt, errors=DISCARD)
    assert len(events) == 1
    return {"args": dict(events[0]["args"]), "block": int(receipt["blockNumber"])}


def usd_by_hand(c: Chain, dep: dict[str, Any], event: dict[str, Any]) -> Decimal:
    """debtToCover (USDC, 6 decimals) x the oracle's USDC price at the event's block / 1e8."""
    oracle = c.at(dep["aave"]["oracle"], npm_artifact("AaveOracle"))
    debt_asset = event["args"]["debtAsset"]
    assert debt_asset == dep["tokens"]["USDC"]["address"]
    price = c.call(oracle, "getAssetPrice", debt_asset, block=event["block"])
    assert c.call(oracle, "BASE_CURRENCY_UNIT") == 10**8
    return Decimal(event["args"]["debtToCover"]) * Decimal(price) / Decimal(10**6) / Decimal(10**8)


async def _layout(rpc: RpcClient, dep: dict[str, Any]) -> MarketLayout:
    return await discover(rpc, chain_config(dep))


async def test_liquidation_volume_is_the_debt_covered_in_usd(
    devnet: dict[str, Any], devnet_chain: Chain, devnet_url: str
) -> None:
    c = devnet_chain
    event = liquidate_safe(c, devnet)
    expected = usd_by_hand(c, devnet, event)
    assert expected > 1000  # a real liquidation: half of a ~$1M+ debt at most, thousands at least
    hour = c.timestamp(event["block"]) // HOUR * HOUR
    # The event's hour is not complete yet: nothing is reported for it.
    async with RpcClient(devnet_url, source="rpc:t") as rpc:
        layout = await _layout(rpc, devnet)
        early = await collect_liquidations(rpc, layout, lookback_blocks=10_000, chunk_blocks=50)
    assert hour not in {o.ts for o in early.observations}
    c.mine(HOUR)  # close the hour
    async with RpcClient(devnet_url, source="rpc:t") as rpc:
        scan = await collect_liquidations(rpc, layout, lookback_blocks=10_000, chunk_blocks=50)
    assert scan.problems == []
    by_ts = {o.ts: o for o in scan.observations}
    o = by_ts[hour]
    assert o.key == "liquidations.aave-v3.devnet" and o.unit == "usd"
    assert o.source == "onchain:devnet:LiquidationCall" and o.known_at == hour + HOUR
    assert o.value == float(expected)
    assert [p.event.debt_to_cover for p in scan.events] == [event["args"]["debtToCover"]]
    assert scan.events[0].event.user == devnet["safe"]["address"]
    # Every other complete hour of the scan is present, as zero; hours are contiguous.
    others = [x for x in scan.observations if x.ts != hour]
    assert all(x.value == 0.0 for x in others)
    stamps = sorted(by_ts)
    assert stamps == list(range(stamps[0], stamps[-1] + HOUR, HOUR)) and stamps[-1] >= hour


class RangeLimitedProxy:
    """A JSON-RPC proxy in front of the devnet that refuses ``eth_getLogs`` over more than
    ``max_blocks`` blocks with Alchemy's error, as a hosted provider does."""

    def __init__(self, upstream: str, max_blocks: int) -> None:
        self.upstream = upstream
        self.max_blocks = max_blocks
        self.ranges: list[tuple[int, int, bool]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("method") == "eth_getLogs":
            f = body["params"][0]
            lo, hi = int(f["fromBlock"], 16), int(f["toBlock"], 16)
            ok = hi - lo + 1 <= self.max_blocks
            self.ranges.append((lo, hi, ok))
            if not ok:
                return web.json_response(
                    {
                        "jsonrpc": "2.0",
                        "id": body["id"],
                        "error": {
                            "code": -32602,
                            "message": "Log response size exceeded. You can make eth_getLogs "
                            "requests with up to a 2K block range and no limit on the response "
                            "size, or you can request any block range with a cap of 10K logs in "
                            "the response.",
                        },
                    }
                )
        async with aiohttp.ClientSession() as s, s.post(self.upstream, json=body) as r:
            return web.json_response(await r.json())


@pytest.fixture
async def limited(devnet_url: str) -> AsyncIterator[tuple[RangeLimitedProxy, str]]:
    proxy = RangeLimitedProxy(devnet_url, max_blocks=7)
    app = web.Application()
    app.router.add_post("/", proxy.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield proxy, str(server.make_url("/"))
    await server.close()


async def test_range_error_halves_the_chunk_and_loses_nothing(
    devnet: dict[str, Any],
    devnet_chain: Chain,
    devnet_url: str,
    limited: tuple[RangeLimitedProxy, str],
) -> None:
    c = devnet_chain
    event = liquidate_safe(c, devnet)
    c.mine(HOUR)
    proxy, url = limited
    head = c.block_number()
    async with RpcClient(devnet_url) as direct:
        layout = await _layout(direct, devnet)
        start = c.timestamp(0) // HOUR * HOUR
        end = c.timestamp(head) // HOUR * HOUR
        reference = await liquidation_volume(
            direct, layout, start_hour=start, end_hour=end, head=head, chunk_blocks=100_000
        )
    async with RpcClient(url, source="rpc:limited") as rpc:
        scan = await liquidation_volume(
            rpc, layout, start_hour=start, end_hour=end, head=head, chunk_blocks=60
        )
    assert scan.observations == reference.observations
    assert scan.chunk_blocks == 7  # 60 -> 30 -> 15 -> 7
    assert [r[2] for r in proxy.ranges[:4]] == [False, False, False, True]
    served = sorted((lo, hi) for lo, hi, ok in proxy.ranges if ok)
    assert served[0][0] == scan.from_block and served[-1][1] == scan.to_block
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(served))  # no gap
    hour = c.timestamp(event["block"]) // HOUR * HOUR
    assert {o.ts: o.value for o in scan.observations}[hour] == float(usd_by_hand(c, devnet, event))
