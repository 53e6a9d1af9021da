"""The on-chain reader, the top-up planner and the fork simulator against the real devnet
(Aave V3, Safe 1.4.1, Chainlink mocks) on a loopback anvil."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from devnet_rpc import rpc_call_sync

from agent.collectors.onchain import discover, read_snapshot, snapshot_observations
from agent.config import chain_config_from_deployment
from agent.core.abi import load_abi
from agent.core.market import MarketLayout
from agent.core.metrics import METRICS
from agent.core.rpc import RpcClient
from agent.core.rpc_pool import RpcPool
from agent.core.units import WAD
from agent.devnet.chain import Chain
from agent.planner.safe import build_safe_tx
from agent.planner.topup import plan_topup
from agent.simulator.fork import ForkSimulator

pytestmark = pytest.mark.integration


chain_config = chain_config_from_deployment


async def layout_for(rpc: RpcClient, dep: dict[str, Any]) -> MarketLayout:
    return await discover(rpc, chain_config(dep))


def call(url: str, to: str, abi_name: str, fn: str, *args: Any) -> tuple[Any, ...]:
    abi = load_abi(abi_name)
    raw = rpc_call_sync(url, "eth_call", [{"to": to, "data": abi.encode_hex(fn, *args)}, "latest"])
    assert isinstance(raw, str)
    return abi.decode_output(fn, bytes.fromhex(raw[2:]))


async def test_one_tick_is_one_eth_call_and_matches_direct_reads(
    devnet: dict[str, Any], devnet_url: str
) -> None:
    async with RpcClient(devnet_url, source="rpc:t") as rpc:
        layout = await layout_for(rpc, devnet)
        METRICS.reset()
        snap = await read_snapshot(rpc, layout)
        assert METRICS.sources["rpc:t"].methods == {"eth_call": 1}
    safe = devnet["safe"]["address"]
    direct = call(devnet_url, layout.pool, "Pool", "getUserAccountData", safe)
    assert snap.accounts[safe].health_factor_wad == direct[5]
    assert snap.accounts[safe].total_collateral_base == direct[0]
    # TVL by hand: sum of aToken supply x oracle price over reserves, from separate calls
    by_hand = Decimal(0)
    for sym, tok in devnet["tokens"].items():
        supply = call(devnet_url, tok["a_token"], "ERC20", "totalSupply")[0]
        price = call(devnet_url, layout.oracle, "AaveOracle", "getAssetPrice", tok["address"])[0]
        by_hand += (
            Decimal(supply) * Decimal(price) / Decimal(10**8) / Decimal(10 ** tok["decimals"])
        )
        assert snap.reserves[sym].a_token_supply == supply
    obs, problems = snapshot_observations(snap, layout)
    assert problems == []
    tvl = next(o for o in obs if o.key == "tvl.aave-v3.devnet")
    assert tvl.value == pytest.approx(float(by_hand), rel=1e-12)
    assert tvl.ts == snap.timestamp and tvl.unit == "usd"
    hf = next(o for o in obs if o.key == f"position.{safe}.health_factor")
    assert hf.value == pytest.approx(direct[5] / WAD)


async def test_batch_size_does_not_change_the_call_count(
    devnet: dict[str, Any], devnet_url: str
) -> None:
    async with RpcClient(devnet_url, source="rpc:n") as rpc:
        layout = await layout_for(rpc, devnet)
        many = MarketLayout(
            **{**layout.__dict__, "accounts": tuple(devnet["accounts"]["whales"]) + layout.accounts}
        )
        METRICS.reset()
        snap = await read_snapshot(rpc, many)
        assert METRICS.sources["rpc:n"].requests == 1
        assert len(snap.accounts) == len(many.accounts)


async def test_stale_feed_is_a_problem_not_a_price(
    devnet: dict[str, Any], devnet_url: str, devnet_chain: Chain
) -> None:
    devnet_chain.mine(seconds=2 * 3600)  # past the 1h heartbeat without a new round
    async with RpcClient(devnet_url) as rpc:
        layout = await layout_for(rpc, devnet)
        obs, problems = snapshot_observations(await read_snapshot(rpc, layout), layout)
    assert not any(o.key == "price.eth.usd" for o in obs)
    assert any("ETH/USD" in p and "stale" in p for p in problems)


async def test_one_failing_call_does_not_sink_the_batch(
    devnet: dict[str, Any], devnet_url: str
) -> None:
    async with RpcClient(devnet_url) as rpc:
        layout = await layout_for(rpc, devnet)
        broken = MarketLayout(
            **{**layout.__dict__, "perps": {"BAD": devnet["safe"]["address"], **layout.perps}}
        )
        snap = await read_snapshot(rpc, broken)
    assert "BAD" not in snap.funding_per_day_wad and "ETH-PERP" in snap.funding_per_day_wad
    assert any(f.tag == "perp:BAD" for f in snap.failures)
    assert snap.accounts  # the rest decoded


async def test_safe_top_up_simulated_on_a_fork_reaches_target(
    devnet: dict[str, Any], devnet_url: str, fork_upstream: Callable[..., RpcPool]
) -> None:
    safe = devnet["safe"]["address"]
    target = 21 * WAD // 10
    async with RpcClient(devnet_url) as rpc:
        layout = await layout_for(rpc, devnet)
        snap = await read_snapshot(rpc, layout)
    plan = plan_topup(
        layout=layout,
        account_addr=safe,
        account=snap.accounts[safe],
        asset=layout.reserve("WETH"),
        reserve=snap.reserves["WETH"],
        target_hf_wad=target,
        max_spend_base=None,
        allowance=0,
    )
    assert [t.decoded.method for t in plan.transactions] == ["approve", "supply"]
    # The size, by hand from direct reads (account data, the data provider's threshold, the
    # oracle price): x = (H' * D - C * LT) / LT_weth with H' = target + 10 bps of margin, in
    # WETH rounded up. Pinned exactly, so a top-up larger than needed fails here ...
    c_base, d_base, _, lt_avg, _, hf_now = call(
        devnet_url, layout.pool, "Pool", "getUserAccountData", safe
    )
    weth = devnet["tokens"]["WETH"]["address"]
    lt_weth = call(
        devnet_url,
        devnet["aave"]["data_provider"],
        "AaveProtocolDataProvider",
        "getReserveConfigurationData",
        weth,
    )[2]
    price = call(devnet_url, devnet["aave"]["oracle"], "AaveOracle", "getAssetPrice", weth)[0]
    h = Fraction(target * (10_000 + 10) // 10_000, WAD)
    x_base = math.ceil((h * d_base - Fraction(c_base * lt_avg, 10_000)) / Fraction(lt_weth, 10_000))
    amount = math.ceil(Fraction(x_base * 10**18, price))
    supply = plan.transactions[-1].decoded
    assert supply.args["amount"] == amount == plan.amount
    assert hf_now < target
    sim = ForkSimulator(fork_upstream(devnet_url), pool=layout.pool)
    try:
        st = build_safe_tx(safe, devnet["safe"]["multisend_call_only"], plan.transactions)
        assert st.operation == 1  # a MultiSendCallOnly batch
        res = await sim.simulate_safe(snap.block_number, st, safe, "top-up")
        assert res.success, res.error
        assert res.before is not None and res.after is not None
        assert res.before.health_factor_wad == snap.accounts[safe].health_factor_wad
        assert res.after.health_factor_wad >= target > res.before.health_factor_wad
        # ... and on the fork: at or above the target, and not more than the margin above it
        assert res.after.health_factor_wad <= target * (10_000 + 11) // 10_000
        assert any(e.method == "Supply" for e in res.transactions[0].events)
        # the fork was reverted: a second run sees the same "before"
        again = await sim.simulate_safe(snap.block_number, st, safe, "top-up")
        assert again.before == res.before and again.success
    finally:
        await sim.stop()
    # and the devnet itself is untouched
    assert (
        call(devnet_url, layout.pool, "Pool", "getUserAccountData", safe)[5]
        == snap.accounts[safe].health_factor_wad
    )


async def test_reverting_batch_reports_the_decoded_reason(
    devnet: dict[str, Any], devnet_url: str, fork_upstream: Callable[..., RpcPool]
) -> None:
    safe = devnet["safe"]["address"]
    async with RpcClient(devnet_url) as rpc:
        layout = await layout_for(rpc, devnet)
        snap = await read_snapshot(rpc, layout)
    acct = snap.accounts[safe]
    # Pretend the wallet holds far more WETH than it does: supply must fail inside the batch.
    rich = type(acct)(**{**acct.__dict__, "wallet_balances": {"WETH": 10**30}})
    plan = plan_topup(
        layout=layout,
        account_addr=safe,
        account=rich,
        asset=layout.reserve("WETH"),
        reserve=snap.reserves["WETH"],
        target_hf_wad=50 * WAD,
        max_spend_base=None,
        allowance=0,
    )
    sim = ForkSimulator(fork_upstream(devnet_url), pool=layout.pool)
    try:
        st = build_safe_tx(safe, devnet["safe"]["multisend_call_only"], plan.transactions)
        res = await sim.simulate_safe(snap.block_number, st, safe, "top-up")
    finally:
        await sim.stop()
    assert not res.success
    assert res.error is not None and "GS013" in res.error  # Safe: inner call failed


async def test_extra_calls_ride_in_the_same_eth_call(
    devnet: dict[str, Any], devnet_url: str
) -> None:
    from agent.core.multicall import Call

    async with RpcClient(devnet_url, source="rpc:x") as rpc:
        layout = await layout_for(rpc, devnet)
        usdc = devnet["tokens"]["USDC"]["address"]
        extra = [Call("usdc_supply", usdc, load_abi("ERC20"), "totalSupply")]
        METRICS.reset()
        snap = await read_snapshot(rpc, layout, extra=extra)
        assert METRICS.sources["rpc:x"].methods == {"eth_call": 1}
    assert snap.extra["usdc_supply"][0] == call(devnet_url, usdc, "ERC20", "totalSupply")[0]


async def test_a_reverted_call_never_becomes_a_value(
    devnet: dict[str, Any], devnet_url: str
) -> None:
    """A call that reverts inside the batch is a failure, never an output: the oracle adapter's
    ``getPrice`` for an unsupported pair reverts with ``OracleAdapter__PairNotSupported(a, b)``,
    68 bytes that would decode as a uint256 (the selector and the first address) if the success
    flag were ignored. Nothing from it reaches the snapshot or the observations."""
    from agent.collectors.onchain import snapshot_observations
    from agent.core.multicall import Call, multicall

    adapter = devnet["premia"]["oracle_adapter"]
    weth, usdc = devnet["tokens"]["WETH"]["address"], devnet["tokens"]["USDC"]["address"]
    stray = "0x000000000000000000000000000000000000dEaD"
    oracle = load_abi("PremiaOracleAdapter")
    async with RpcClient(devnet_url, source="rpc:x") as rpc:
        out, failures = await multicall(
            rpc,
            [
                Call("good", adapter, oracle, "getPrice", (weth, usdc)),
                Call("bad", adapter, oracle, "getPrice", (stray, usdc)),
            ],
            address=devnet["multicall3"],
        )
        assert (
            out["good"][0]
            == call(devnet_url, adapter, "PremiaOracleAdapter", "getPrice", weth, usdc)[0]
        )
        assert "bad" not in out
        (f,) = failures
        assert f.tag == "bad" and "reverted" in f.reason and "PairNotSupported" in f.reason
        # in a tick: the reverted extra call is listed as a failure and stored as nothing
        layout = await layout_for(rpc, devnet)
        snap = await read_snapshot(
            rpc, layout, extra=[Call("bad", adapter, oracle, "getPrice", (stray, usdc))]
        )
    assert "bad" not in snap.extra
    assert any("PairNotSupported" in x.reason for x in snap.failures)
    _, problems = snapshot_observations(snap, layout)
    assert any("PairNotSupported" in p for p in problems)


async def _simulate_inner(devnet: dict[str, Any], devnet_url: str, txs: list[Any]) -> Any:
    safe = devnet["safe"]["address"]
    async with RpcClient(devnet_url) as rpc:
        layout = await layout_for(rpc, devnet)
        head = await rpc.block_number()
        sim = ForkSimulator(rpc, pool=layout.pool)  # the fork reads the devnet through rpc
        try:
            st = build_safe_tx(safe, devnet["safe"]["multisend_call_only"], txs)
            return await sim.simulate_safe(head, st, safe, "batch", inner=txs)
        finally:
            await sim.stop()


async def test_missing_allowance_is_reported_with_the_reverting_call(
    devnet: dict[str, Any], devnet_url: str
) -> None:
    from agent.planner.tx import call_tx

    weth = devnet["tokens"]["WETH"]["address"]
    safe = devnet["safe"]["address"]
    pool = devnet["aave"]["pool"]
    # supply without the approve in front of it
    supply = call_tx("Pool", pool, "supply", weth, 10**18, safe, 0, human="supply 1 WETH")
    noop = call_tx("ERC20", weth, "balanceOf", safe, human="read balance")
    res = await _simulate_inner(devnet, devnet_url, [noop, supply])
    assert not res.success
    assert "GS013" in res.error  # what the Safe says
    assert "call 2 (supply 1 WETH) reverts" in res.error  # and which call, and why
    assert "allowance" in res.error.lower()


async def test_paused_reserve_is_reported_with_aave_error_code(
    devnet: dict[str, Any], devnet_url: str
) -> None:
    from eth_abi.abi import encode
    from eth_utils.crypto import keccak

    from agent.planner.tx import call_tx

    weth = devnet["tokens"]["WETH"]["address"]
    safe = devnet["safe"]["address"]
    # Pause WETH with the pool admin (the deployer), as an emergency admin would.
    data = keccak(text="setReservePause(address,bool)")[:4] + encode(
        ["address", "bool"], [weth, True]
    )
    tx = {
        "from": devnet["accounts"]["deployer"],
        "to": devnet["aave"]["pool_configurator"],
        "data": "0x" + data.hex(),
    }
    rpc_call_sync(devnet_url, "eth_sendTransaction", [tx])
    rpc_call_sync(devnet_url, "evm_mine")
    txs = [
        call_tx("ERC20", weth, "approve", devnet["aave"]["pool"], 10**18, human="approve"),
        call_tx("Pool", devnet["aave"]["pool"], "supply", weth, 10**18, safe, 0, human="supply"),
    ]
    res = await _simulate_inner(devnet, devnet_url, txs)
    assert not res.success
    # Aave v3.0 Errors.RESERVE_PAUSED = '29'
    assert "call 2 (supply) reverts: Error('29')" in res.error
