"""Put purchases on the devnet's Premia-v3-like venue: planned with the real Premia ABIs, executed
through the devnet Safe (one MultiSendCallOnly batch), checked on chain."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from agent.core.abi import decode_revert, load_abi, revert_data_from_rpc
from agent.core.errors import DevnetError, RpcError
from agent.core.rpc import RetryPolicy, RpcClient
from agent.core.units import WAD
from agent.devnet.artifacts import forge_artifact
from agent.devnet.chain import Chain
from agent.devnet.pricing import black_scholes_put
from agent.devnet.safe import Call, exec_batch
from agent.planner.options import (
    DAY,
    OptionsPlannerConfig,
    PremiaV3Venue,
    plan_put,
    premia_venue_from_deployment,
    put_strike,
)
from agent.policy.config import DEFAULT_HORIZONS

pytestmark = pytest.mark.integration

LONG = 1
SHORT = 0
SPEND = {"short": Decimal("2000"), "intermediate": Decimal("1750"), "structural": Decimal("1250")}


def rpc_for(url: str) -> RpcClient:
    return RpcClient(url, source="rpc:test", retry=RetryPolicy(attempts=1))


def erc20_balance(chain: Chain, token: str, who: str) -> int:
    return int(chain.call(chain.contract(token, load_abi("ERC20").abi), "balanceOf", who))


def pool_contract(chain: Chain, address: str) -> Any:
    return chain.contract(address, forge_artifact("PremiaLikePutPool").abi)


async def _plan(devnet: dict[str, Any], url: str, horizon: str, **kw: Any) -> Any:
    venue = premia_venue_from_deployment(devnet)
    h = next(x for x in DEFAULT_HORIZONS if x.name == horizon)
    chain = Chain(url)
    async with rpc_for(url) as rpc:
        return await plan_put(
            rpc,
            venue,
            account=devnet["safe"]["address"],
            horizon=h.name,
            dte_min=h.dte_min,
            dte_max=h.dte_max,
            otm_fraction=h.otm_fraction,
            spend_usd=kw.pop("spend", SPEND[horizon]),
            now=chain.timestamp(),
            **kw,
        )


@pytest.mark.parametrize("horizon", ["short", "intermediate", "structural"])
async def test_plan_and_buy_put_through_the_safe(
    devnet: dict[str, Any], devnet_url: str, devnet_chain: Chain, horizon: str
) -> None:
    chain = devnet_chain
    safe = devnet["safe"]
    plan = await _plan(devnet, devnet_url, horizon)
    h = next(x for x in DEFAULT_HORIZONS if x.name == horizon)

    # What was planned: venue rules, strike depth, size for the spend, decoded calls.
    now = chain.timestamp()
    assert h.dte_min * DAY <= plan.pool.maturity - now <= h.dte_max * DAY
    assert plan.pool.maturity % DAY == 8 * 3600
    assert plan.pool.strike_wad == put_strike(plan.spot, h.otm_fraction)
    assert plan.pool.strike_wad <= plan.spot * (1 - h.otm_fraction) * WAD
    assert plan.spot == Decimal(3000)
    assert plan.size % 10**16 == 0 and plan.size > 0
    assert plan.premium_usd <= SPEND[horizon]
    assert plan.premium_usd > SPEND[horizon] * Decimal("0.97")  # within a lot or so of the spend
    assert plan.premium_limit == -(-plan.premium_quote * 10_100 // 10_000)
    approve, trade = plan.transactions
    assert approve.decoded.method == "approve"
    assert approve.decoded.args["spender"] == devnet["premia"]["erc20_router"]
    assert approve.to == devnet["premia"]["quote"]
    assert trade.decoded.contract == "PremiaPool" and trade.decoded.method == "trade"
    assert trade.decoded.args == {
        "size": plan.size,
        "isBuy": True,
        "premiumLimit": plan.premium_limit,
        "referrer": "0x0000000000000000000000000000000000000000",
    }
    assert trade.to == plan.pool.address

    # Execute it as the Safe will: one execTransaction of a MultiSendCallOnly batch.
    usdc = devnet["premia"]["quote"]
    before = erc20_balance(chain, usdc, safe["address"])
    receipt = exec_batch(
        chain,
        safe["address"],
        safe["owners"][0],
        safe["multisend_call_only"],
        [Call(t.to, bytes.fromhex(t.data[2:]), t.value) for t in plan.transactions],
    )
    paid = before - erc20_balance(chain, usdc, safe["address"])
    pool = pool_contract(chain, plan.pool.address)
    assert chain.call(pool, "balanceOf", safe["address"], LONG) == plan.size
    assert chain.call(pool, "balanceOf", devnet["premia"]["pool_factory"], SHORT) == plan.size
    assert 0 < paid <= plan.premium_limit
    # Chain time moved a few seconds since the quote: the premium barely decays.
    assert paid == pytest.approx(plan.premium_quote, rel=2e-3)
    # Collateral for the sold puts is locked in the pool (strike x size, USDC decimals).
    locked = erc20_balance(chain, usdc, plan.pool.address) - paid
    assert locked == -(-plan.size * plan.pool.strike_wad // WAD // 10**12)

    pool_abi = load_abi("PremiaPool")
    events = [
        pool_abi.decode_event([bytes(t) for t in log["topics"]], bytes(log["data"]))
        for log in receipt["logs"]
        if log["address"] == plan.pool.address
    ]
    trades = [e for e in events if e is not None and e.method == "Trade"]
    assert len(trades) == 1
    ev = trades[0].args
    assert ev["user"] == safe["address"] and ev["isBuy"] is True
    assert ev["contractSize"] == plan.size and ev["delta"]["longs"] == plan.size
    assert -ev["delta"]["collateral"] == paid * 10**12


async def test_pool_premium_is_black_scholes(
    devnet: dict[str, Any], devnet_url: str, devnet_chain: Chain
) -> None:
    plan = await _plan(devnet, devnet_url, "intermediate")
    pool = pool_contract(devnet_chain, plan.pool.address)
    # Pure pricing function against an independent Python Black-Scholes (math.erf).
    for s, k, tau, vol in [
        (3000, 2550, 30 / 365, 0.8),
        (3000, 2400, 120 / 365, 0.8),
        (3000, 2700, 4 / 365, 0.5),
        (3000, 3000, 1.0, 1.2),
        (3000, 1500, 7 / 365, 0.6),  # deep OTM: continued-fraction tail
        (2000, 2500, 60 / 365, 0.9),  # in the money
    ]:
        onchain = devnet_chain.call(
            pool, "blackScholesPut", s * WAD, k * WAD, int(tau * WAD), int(vol * WAD)
        )
        ref = _bs_put_reference(s, k, tau, vol)
        assert onchain / WAD == pytest.approx(ref, rel=1e-9, abs=1e-9), (s, k, tau, vol)
    # The quote: BS at the factory's volatility and the chain's time, plus Premia's taker fee.
    t = devnet_chain.timestamp()
    tau = (plan.pool.maturity - t) / (365 * DAY)
    price = black_scholes_put(3000.0, float(plan.strike), tau, 0.8)
    premium = price * plan.size / WAD
    fee = min(max(0.03 * premium, 0.003 * float(plan.strike) * plan.size / WAD), 0.125 * premium)
    (net, taker_fee) = devnet_chain.call(
        pool, "getQuoteAMM", devnet["safe"]["address"], plan.size, True
    )
    assert taker_fee / 1e6 == pytest.approx(fee, abs=2e-6)
    assert net / 1e6 == pytest.approx(premium + fee, rel=1e-6)


def _bs_put_reference(s: float, k: float, tau: float, vol: float) -> float:
    def n(x: float) -> float:
        return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))

    d1 = (math.log(s / k) + 0.5 * vol * vol * tau) / (vol * math.sqrt(tau))
    d2 = d1 - vol * math.sqrt(tau)
    return k * n(-d2) - s * n(-d1)


async def test_premium_limit_too_low_reverts_with_decoded_premia_error(
    devnet: dict[str, Any], devnet_url: str, devnet_chain: Chain
) -> None:
    plan = await _plan(devnet, devnet_url, "short")
    safe = devnet["safe"]
    pool_abi = load_abi("PremiaPool")
    low = plan.premium_quote // 2
    data = pool_abi.encode_hex("trade", plan.size, True, low, "0x" + "00" * 20)
    # Simulated as the Safe's inner call (what a simulator does to explain a failed batch).
    async with rpc_for(devnet_url) as rpc:
        with pytest.raises(RpcError) as info:
            await rpc.request(
                "eth_call",
                [{"from": safe["address"], "to": plan.pool.address, "data": data}, "latest"],
            )
    raw = revert_data_from_rpc(info.value.data)
    assert raw is not None
    reason = decode_revert(raw, [pool_abi])
    assert reason.startswith("PremiaPool.Pool__AboveMaxSlippage(")
    assert "minimum=0" in reason and f"maximum={low}" in reason
    value = int(reason.split("value=")[1].split(",")[0])
    assert value == pytest.approx(plan.premium_quote, rel=1e-3) and value > low
    # Through the Safe (safeTxGas = 0) the batch reverts as a whole and nothing is bought.
    approve = plan.transactions[0]
    with pytest.raises(DevnetError, match="GS013"):
        exec_batch(
            devnet_chain,
            safe["address"],
            safe["owners"][0],
            safe["multisend_call_only"],
            [
                Call(approve.to, bytes.fromhex(approve.data[2:])),
                Call(plan.pool.address, bytes.fromhex(data[2:])),
            ],
        )
    pool = pool_contract(devnet_chain, plan.pool.address)
    assert devnet_chain.call(pool, "balanceOf", safe["address"], LONG) == 0


async def test_factory_validates_maturity_and_strike_like_premia(
    devnet: dict[str, Any], devnet_url: str, devnet_chain: Chain
) -> None:
    venue = premia_venue_from_deployment(devnet)
    fac = load_abi("PremiaPoolFactory")
    now = devnet_chain.timestamp()
    day0 = now // DAY * DAY
    # 08:00 UTC, 10-20 days out, not a Friday
    not_friday = next(
        day0 + d * DAY + 8 * 3600 for d in range(10, 20) if (day0 // DAY + d) % 7 != 1
    )
    cases = {
        "PoolFactory__OptionMaturityNot8UTC": venue.pool_key(
            2700 * WAD, day0 + 10 * DAY + 9 * 3600
        ),
        "PoolFactory__OptionMaturityNotFriday": venue.pool_key(2700 * WAD, not_friday),
        "PoolFactory__OptionStrikeInvalid": venue.pool_key(2750 * WAD, not_friday),
        "PoolFactory__OptionExpired": venue.pool_key(2700 * WAD, day0 - DAY + 8 * 3600),
    }
    # Strike is checked before maturity, as in Premia.
    async with rpc_for(devnet_url) as rpc:
        for expected, key in cases.items():
            with pytest.raises(RpcError) as info:
                await rpc.request(
                    "eth_call",
                    [
                        {"to": venue.pool_factory, "data": fac.encode_hex("deployPool", key)},
                        "latest",
                    ],
                )
            raw = revert_data_from_rpc(info.value.data)
            assert raw is not None
            assert decode_revert(raw, [fac]).startswith(f"PremiaPoolFactory.{expected}("), expected


async def test_no_deployed_pool_is_a_planning_error(
    devnet: dict[str, Any], devnet_url: str
) -> None:
    from agent.core.errors import PlanningError

    venue = premia_venue_from_deployment(devnet)
    other = PremiaV3Venue(
        pool_factory=venue.pool_factory,
        oracle_adapter=venue.oracle_adapter,
        base=devnet["tokens"]["WBTC"]["address"],  # no WBTC pools listed on the devnet
        quote=venue.quote,
        erc20_router=venue.erc20_router,
    )
    chain = Chain(devnet_url)
    async with rpc_for(devnet_url) as rpc:
        with pytest.raises(PlanningError, match="no deployed premia-v3 put pool"):
            await plan_put(
                rpc,
                other,
                account=devnet["safe"]["address"],
                horizon="short",
                dte_min=0,
                dte_max=7,
                otm_fraction=Decimal("0.1"),
                spend_usd=Decimal(1000),
                now=chain.timestamp(),
                config=OptionsPlannerConfig(),
            )
