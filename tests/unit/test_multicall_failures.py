"""Multicall3 ``aggregate3`` with ``allowFailure``: a sub-call whose ``success`` is false is a
failed read, named, never decoded as data (issue 24.11). Served by a real JSON-RPC server on
loopback that decodes the batch and answers it as Multicall3 does: a list of
``(success, returnData)``, the revert data of a failed call in ``returnData``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

from agent.core.abi import load_abi
from agent.core.multicall import Call, multicall
from agent.core.rpc import RpcClient

POOL = "0x" + "11" * 20
ORACLE = "0x" + "22" * 20
NO_CODE = "0x" + "33" * 20
SAFE = "0x" + "44" * 20
WETH = "0x" + "55" * 20
PRICE = 3_000 * 10**8
# A custom error with six words of arguments: 196 bytes, so read as getUserAccountData's six
# uint256 it would decode without complaint (into a nonsense health factor).
REVERT = bytes.fromhex("deadbeef") + abi_encode(["uint256"] * 6, [1, 2, 3, 4, 5, 6])


async def _answer(request: web.Request) -> web.Response:
    body = await request.json()
    data = bytes.fromhex(body["params"][0]["data"][2:])
    (calls,) = abi_decode(["(address,bool,bytes)[]"], data[4:])
    results: list[tuple[bool, bytes]] = []
    for target, allow_failure, _ in calls:
        assert allow_failure is True  # one broken read must not fail the batch
        if target.lower() == POOL:
            results.append((False, REVERT))
        elif target.lower() == ORACLE:
            results.append((True, abi_encode(["uint256"], [PRICE])))
        else:
            results.append((True, b""))  # no code there: success, nothing returned
    out = abi_encode(["(bool,bytes)[]"], [results])
    return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": "0x" + out.hex()})


@pytest.fixture
async def node() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/", _answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def test_a_failed_sub_call_is_a_failure_not_data(node: str) -> None:
    pool, oracle, erc20 = load_abi("Pool"), load_abi("AaveOracle"), load_abi("ERC20")
    calls = [
        Call("acct", POOL, pool, "getUserAccountData", (SAFE,)),
        Call("price", ORACLE, oracle, "getAssetPrice", (WETH,)),
        Call("bal", NO_CODE, erc20, "balanceOf", (SAFE,)),
    ]
    async with RpcClient(node, source="rpc:test") as rpc:
        out, failures = await multicall(rpc, calls)
    # the one that answered is decoded exactly
    assert out == {"price": (PRICE,)}
    by_tag: dict[str, Any] = {f.tag: f.reason for f in failures}
    assert set(by_tag) == {"acct", "bal"}
    # the failed call: reported as a revert of that call, with its revert data
    assert by_tag["acct"].startswith(f"Pool.getUserAccountData on {POOL} reverted: ")
    assert "deadbeef" in by_tag["acct"]
    # success with nothing returned (no code at the address) is not a zero balance
    assert by_tag["bal"].startswith(f"ERC20.balanceOf on {NO_CODE} returned undecodable data")


# -- the tick's account read: getUserAccountData's six words land in the right fields ----------

ACCOUNT_WORDS = (
    1_234_567_000_000,  # totalCollateralBase ($12,345.67)
    765_432_100_000,  # totalDebtBase ($7,654.321)
    11_111,  # availableBorrowsBase
    8_250,  # currentLiquidationThreshold (bps)
    8_000,  # ltv (bps)
    1_330_714_285_714_285_714,  # healthFactor (wad)
)


async def _answer_snapshot(request: web.Request) -> web.Response:
    """Multicall3 answering a snapshot batch by selector (no reserves, one account, no wallet
    reads): block 77, time 1.7e9, chain id 1, and the account data above."""
    body = await request.json()
    data = bytes.fromhex(body["params"][0]["data"][2:])
    (calls,) = abi_decode(["(address,bool,bytes)[]"], data[4:])
    mc, pool = load_abi("Multicall3"), load_abi("Pool")
    by_selector = {
        mc.selector("getBlockNumber"): abi_encode(["uint256"], [77]),
        mc.selector("getCurrentBlockTimestamp"): abi_encode(["uint256"], [1_700_000_000]),
        mc.selector("getChainId"): abi_encode(["uint256"], [1]),
        pool.selector("getUserAccountData"): abi_encode(["uint256"] * 6, list(ACCOUNT_WORDS)),
    }
    results = [(True, by_selector[bytes(cd[:4])]) for _, _, cd in calls]
    out = abi_encode(["(bool,bytes)[]"], [results])
    return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": "0x" + out.hex()})


async def test_the_account_read_maps_every_word_to_its_field() -> None:
    """The health factor, threshold and LTV the guard and the planners read are the words Aave
    returns in that order (mutation audit: LT and LTV swapped, a stale or wrong HF word)."""
    from agent.collectors.onchain import read_snapshot
    from agent.core.market import MarketLayout

    app = web.Application()
    app.router.add_post("/", _answer_snapshot)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    layout = MarketLayout("t", "aave-v3", POOL, ORACLE, POOL, (), (SAFE,), {}, {}, {})
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        async with RpcClient(url, source="rpc:test") as rpc:
            snap = await read_snapshot(rpc, layout)
    finally:
        await runner.cleanup()
    assert (snap.block_number, snap.timestamp) == (77, 1_700_000_000)
    a = snap.accounts[SAFE]
    assert (a.total_collateral_base, a.total_debt_base, a.available_borrows_base) == (
        ACCOUNT_WORDS[:3]
    )
    assert (a.liquidation_threshold_bps, a.ltv_bps) == (8_250, 8_000)
    assert a.health_factor_wad == ACCOUNT_WORDS[5]
