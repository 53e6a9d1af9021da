"""Comet rate math and the liquidation collector's pure parts, on hand-computed values.

Comet: no registry package ships Comet bytecode (npm has no ``@compound-finance/comet``;
``@compound-finance/comet-extension`` ships neither ABI nor bytecode), so there is no real Comet
to run here. These tests check the hand-written ABI's selectors, the decoding of the calls'
return data, and the rate formula and unit conversions against values computed by hand from
Comet's ``getSupplyRate``/``getBorrowRate`` (integer ``mulFactor`` truncation included). The
liquidation collector itself runs against real Aave events in
``tests/integration/test_liquidations.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from eth_abi.abi import encode

from agent.collectors.comet import (
    CometRates,
    RateModel,
    comet_calls,
    comet_observations,
    comet_rate_calls,
    comet_rates,
)
from agent.collectors.liquidations import (
    HOUR,
    BlockClock,
    Liquidation,
    PricedLiquidation,
    decode_liquidations,
    get_logs,
    hourly_volume,
    is_range_error,
    liquidation_topic,
)
from agent.core.errors import ExecutionReverted, RpcError, SourceError
from agent.core.rpc import RpcClient

COMET = "0xc3d688B66703497DAA19211EEdff47f25384cdc3"
E18 = 10**18

# A cUSDCv3-like rate model (per second, 1e18-scaled): supply 5%/yr below an 80% kink,
# +300%/yr above; borrow 1.5%/yr base + 5.5%/yr below the kink, +320%/yr above.
PARAMS = {
    "supplyKink": 800000000000000000,
    "supplyPerSecondInterestRateSlopeLow": 1585489599,
    "supplyPerSecondInterestRateSlopeHigh": 95129375951,
    "supplyPerSecondInterestRateBase": 0,
    "borrowKink": 800000000000000000,
    "borrowPerSecondInterestRateSlopeLow": 1744038559,
    "borrowPerSecondInterestRateSlopeHigh": 101471334348,
    "borrowPerSecondInterestRateBase": 475646879,
}


def outputs(utilization: int, prefix: str = "c0") -> dict[str, tuple[Any, ...]]:
    """What ``multicall`` returns for ``comet_calls``: decoded from real ABI-encoded words."""
    out: dict[str, tuple[Any, ...]] = {}
    for call in comet_calls(COMET, prefix):
        value = utilization if call.fn == "getUtilization" else PARAMS[call.fn]
        out[call.tag] = call.abi.decode_output(call.fn, encode(["uint256"], [value]))
    return out


def test_comet_calls_are_the_interface_selectors() -> None:
    calls = comet_calls(COMET, "c0")
    assert [c.fn for c in calls] == ["getUtilization", *PARAMS]
    assert all(c.target == COMET and c.tag == f"c0:{c.fn}" for c in calls)
    assert calls[0].abi.encode("getUtilization").hex() == "7eb71131"
    assert calls[1].abi.encode("supplyKink").hex() == "a5b4ff79"
    rate_calls = comet_rate_calls(COMET, "c0", 9 * 10**17)
    assert rate_calls[0].abi.encode(rate_calls[0].fn, *rate_calls[0].args).hex() == (
        "d955759d" + (9 * 10**17).to_bytes(32, "big").hex()
    )
    assert rate_calls[1].abi.encode(rate_calls[1].fn, *rate_calls[1].args)[:4].hex() == "9fa83b5a"
    # getSupplyRate returns uint64 in a 32-byte word
    assert rate_calls[0].abi.decode_output("getSupplyRate", encode(["uint64"], [7])) == (7,)


def test_rates_above_the_kink_by_hand() -> None:
    # u = 90% > kink 80%:
    #   supply = 0 + 1585489599 * 0.8e18 // 1e18 + 95129375951 * 0.1e18 // 1e18
    #          = 1268391679 + 9512937595 = 10781329274 (truncations: .2 and .1 dropped)
    #   borrow = 475646879 + 1744038559 * 0.8 (=1395230847) + 101471334348 * 0.1 (=10147133434)
    #          = 12018011160
    r = comet_rates(outputs(900000000000000000), "c0")
    assert r == CometRates(900000000000000000, 10781329274, 12018011160)
    # APR = rate * 31,536,000 / 1e18; APY = (1 + rate/1e18)^31,536,000 - 1
    assert r.supply_apr == pytest.approx(0.339999999984864, rel=1e-15)
    assert r.supply_apy == pytest.approx(0.40494758796730407, rel=1e-12)
    assert r.borrow_apr == pytest.approx(12018011160 * 31_536_000 / 1e18, rel=1e-15)


def test_rates_at_and_below_the_kink() -> None:
    # u = 50%: supply = 1585489599 * 0.5 = 792744799 (.5 truncated)
    assert comet_rates(outputs(5 * 10**17), "c0").supply_rate == 792744799
    # exactly at the kink Comet takes the low branch
    at = comet_rates(outputs(8 * 10**17), "c0")
    assert at.supply_rate == 1268391679 and at.borrow_rate == 475646879 + 1395230847
    assert comet_rates(outputs(0), "c0") == CometRates(0, 0, 475646879)


def test_rate_overflowing_uint64_is_refused() -> None:
    with pytest.raises(ValueError, match="uint64"):
        RateModel(kink=E18, slope_low=2**64, slope_high=0, base=0).rate(E18)


def test_comet_observations_keys_units_values() -> None:
    obs = comet_observations(
        outputs(900000000000000000),
        "c0",
        chain="ethereum",
        asset="USDC",
        ts=1700000000,
        source="onchain:ethereum:block=1",
    )
    got = {o.key: (o.value, o.unit) for o in obs}
    assert set(got) == {
        "rate.compound-v3.ethereum.usdc.supply_apy",
        "rate.compound-v3.ethereum.usdc.borrow_apy",
        "rate.compound-v3.ethereum.usdc.utilization",
    }
    assert got["rate.compound-v3.ethereum.usdc.utilization"] == (0.9, "ratio")
    v, unit = got["rate.compound-v3.ethereum.usdc.supply_apy"]
    assert unit == "apy" and v == pytest.approx(0.40494758796730407, rel=1e-12)
    r = Decimal(12018011160) / Decimal(E18)
    assert got["rate.compound-v3.ethereum.usdc.borrow_apy"][0] == pytest.approx(
        float((1 + r) ** 31_536_000 - 1), rel=1e-12
    )
    assert all(o.ts == 1700000000 and o.source == "onchain:ethereum:block=1" for o in obs)


def test_comet_prefers_the_contracts_own_answers_and_reports_missing_reads() -> None:
    out = outputs(900000000000000000)
    out["c0:getSupplyRate"] = (123,)
    out["c0:getBorrowRate"] = (456,)
    assert comet_rates(out, "c0") == CometRates(900000000000000000, 123, 456)
    partial = outputs(900000000000000000)
    del partial["c0:borrowKink"]
    with pytest.raises(KeyError):
        comet_rates(partial, "c0")


# -- liquidations ---------------------------------------------------------------------------

POOL = "0x87870Bca3F3fD6335C3F4ce8392D69350B4fA4E2"
WETH = "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
USER = "0x000000000000000000000000000000000000dEaD"
LIQUIDATOR = "0x00000000000000000000000000000000000000AA"


def topic_addr(a: str) -> str:
    return "0x" + "00" * 12 + a[2:].lower()


def raw_log(block: int, index: int, debt: int, *, removed: bool = False) -> dict[str, Any]:
    data = encode(["uint256", "uint256", "address", "bool"], [debt, 5 * E18, LIQUIDATOR, False])
    return {
        "address": POOL.lower(),
        "topics": [liquidation_topic(), topic_addr(WETH), topic_addr(USDC), topic_addr(USER)],
        "data": "0x" + data.hex(),
        "blockNumber": hex(block),
        "transactionHash": "0x" + f"{block:02x}{index:02x}" * 16,
        "logIndex": hex(index),
        "removed": removed,
    }


def test_topic_is_the_aave_event_signature() -> None:
    from eth_utils.crypto import keccak

    sig = "LiquidationCall(address,address,address,uint256,uint256,address,bool)"
    assert liquidation_topic() == "0x" + keccak(text=sig).hex()


def test_decode_liquidations() -> None:
    logs = [raw_log(12, 3, 2_000 * 10**6), raw_log(11, 0, 7), raw_log(11, 1, 9, removed=True)]
    bad = raw_log(13, 0, 1)
    bad["data"] = "0x1234"
    events, problems = decode_liquidations([*logs, bad], POOL)
    assert [(e.block_number, e.log_index) for e in events] == [(11, 0), (12, 3)]
    e = events[1]
    assert (e.collateral_asset, e.debt_asset, e.user, e.liquidator) == (
        WETH,
        USDC,
        USER,
        LIQUIDATOR,
    )
    assert e.debt_to_cover == 2_000 * 10**6 and e.liquidated_collateral_amount == 5 * E18
    assert e.receive_a_token is False
    assert len(problems) == 1 and "LiquidationCall log 3" in problems[0]
    _, other = decode_liquidations([{**logs[0], "address": WETH}], POOL)
    assert "not the pool" in other[0]


def _priced(ts: int, debt: int, price: int, decimals: int = 6) -> PricedLiquidation:
    ev = Liquidation(1, "0x", 0, WETH, USDC, USER, debt, 1, LIQUIDATOR, False)
    return PricedLiquidation(ev, ts, price, decimals, 10**8)


def test_hourly_volume_sums_exactly_and_fills_zeros() -> None:
    h0 = 1_700_000_000 // HOUR * HOUR
    priced = [
        _priced(h0 + 10, 1_234_567_891, 99_990_000),  # 1234.567891 USDC at $0.9999
        _priced(h0 + 3599, 5 * 10**6, 100_000_000),  # $5, last second of the hour
        _priced(h0 + 2 * HOUR, 10**18, 300_000_000_000, decimals=18),  # 1 WETH-debt at $3000
    ]
    obs = hourly_volume(
        priced, protocol="aave-v3", chain="ethereum", start_hour=h0, end_hour=h0 + 3 * HOUR
    )
    assert [(o.ts, o.known_at) for o in obs] == [
        (h0 + i * HOUR, h0 + (i + 1) * HOUR) for i in range(3)
    ]
    # 1234.567891 * 0.9999 + 5 = 1234.4444342109 + 5
    assert obs[0].value == float(Decimal("1234.567891") * Decimal("0.9999") + 5)
    assert obs[1].value == 0.0 and obs[2].value == 3000.0
    assert {o.key for o in obs} == {"liquidations.aave-v3.ethereum"} and {o.unit for o in obs} == {
        "usd"
    }
    assert {o.source for o in obs} == {"onchain:ethereum:LiquidationCall"}
    skipped = hourly_volume(
        priced,
        protocol="aave-v3",
        chain="ethereum",
        start_hour=h0,
        end_hour=h0 + 3 * HOUR,
        skip_hours=frozenset({h0}),
    )
    assert [o.ts for o in skipped] == [h0 + HOUR, h0 + 2 * HOUR]


@pytest.mark.parametrize(
    "message",
    [
        "query returned more than 10000 results",
        "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range",
        "eth_getLogs is limited to a 10,000 range",
        "exceed maximum block range: 5000",
        "block range is too wide",
        "Block range limit exceeded.",
        "eth_getLogs range is too large, max is 1k blocks",
    ],
)
def test_range_errors_are_recognised(message: str) -> None:
    assert is_range_error(RpcError("rpc", -32602, message))


def test_other_errors_are_not_range_errors() -> None:
    assert not is_range_error(RpcError("rpc", -32601, "the method eth_getLogs does not exist"))
    assert not is_range_error(ExecutionReverted("rpc", 3, "execution reverted"))
    assert not is_range_error(SourceError("rpc", "eth_getLogs: cannot connect"))
    assert not is_range_error(ValueError("block range"))


class FakeChain:
    """JSON-RPC: eth_getLogs over synthetic logs with a block-range limit; block headers."""

    def __init__(self, stamps: list[int], logs: list[dict[str, Any]], max_range: int) -> None:
        self.stamps = stamps
        self.logs = logs
        self.max_range = max_range
        self.calls: list[tuple[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        method, params = body["method"], body["params"]
        self.calls.append((method, params))
        if method == "eth_getLogs":
            lo, hi = int(params[0]["fromBlock"], 16), int(params[0]["toBlock"], 16)
            if hi - lo + 1 > self.max_range:
                err = {"code": -32000, "message": f"block range too large, max {self.max_range}"}
                return web.json_response({"jsonrpc": "2.0", "id": body["id"], "error": err})
            rows = [x for x in self.logs if lo <= int(x["blockNumber"], 16) <= hi]
            return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": rows})
        if method == "eth_getBlockByNumber":
            n = int(params[0], 16)
            block = {"number": hex(n), "timestamp": hex(self.stamps[n])}
            return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": block})
        return web.json_response(
            {"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32601, "message": "no"}}
        )


@pytest.fixture
async def fake_chain() -> AsyncIterator[tuple[FakeChain, str]]:
    # Irregular block times, as on a devnet with evm_increaseTime jumps.
    stamps = [1000 + 12 * i for i in range(50)] + [50_000 + 7 * i for i in range(50)]
    stamps += [200_000 + 12 * i for i in range(100)]
    chain = FakeChain(stamps, [raw_log(b, 0, b) for b in (3, 40, 41, 120, 199)], max_range=10)
    app = web.Application()
    app.router.add_post("/", chain.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield chain, str(server.make_url("/"))
    await server.close()


async def test_get_logs_halves_on_range_errors(fake_chain: tuple[FakeChain, str]) -> None:
    chain, url = fake_chain
    async with RpcClient(url) as rpc:
        got = await get_logs(rpc, POOL, [liquidation_topic()], 0, 199, chunk_blocks=64)
    assert [int(x["blockNumber"], 16) for x in got.logs] == [3, 40, 41, 120, 199]
    assert got.chunk_blocks == 8  # 64 -> 32 -> 16 -> 8
    ranges = [(int(p[0]["fromBlock"], 16), int(p[0]["toBlock"], 16)) for m, p in chain.calls]
    served = [r for r in ranges if r[1] - r[0] < 10]
    assert served[0][0] == 0 and served[-1][1] == 199
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(served))
    chain.max_range = 0  # even one block is refused: the error surfaces
    async with RpcClient(url) as rpc:
        with pytest.raises(RpcError, match="block range too large"):
            await get_logs(rpc, POOL, [liquidation_topic()], 5, 5, chunk_blocks=4)


async def test_block_clock_finds_first_block_at_or_after(fake_chain: tuple[FakeChain, str]) -> None:
    chain, url = fake_chain
    async with RpcClient(url) as rpc:
        clock = BlockClock(rpc)
        for t in (0, 1000, 1001, 1588, 1589, 2000, 49_999, 50_000, 50_345, 199_999, 201_188):
            expect = next((i for i, s in enumerate(chain.stamps) if s >= t), len(chain.stamps))
            assert await clock.first_at_or_after(t, 0, len(chain.stamps) - 1) == expect, t
        assert await clock.first_at_or_after(10**9, 0, 199) == 200
        reads = sum(1 for m, _ in chain.calls if m == "eth_getBlockByNumber")
    assert reads < 80  # cached and logarithmic, not a scan of 200 headers per query
