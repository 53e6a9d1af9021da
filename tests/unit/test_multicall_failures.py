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
