"""Deleverage sizing against an independent model: a constant-product pool (x*y=k, 0.3% fee)
stands in for QuoterV2 (the integration tests use the real Uniswap V3 quoter), and the health
factor after each plan is recomputed here with Decimal arithmetic from the batch's own
calldata amounts."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest

from agent.core.errors import PlanningError
from agent.core.market import AccountState, MarketLayout, ReserveMeta, ReserveState
from agent.core.units import WAD
from agent.planner.deleverage import DeleveragePlan, plan_deleverage
from agent.planner.repay import choose_protection
from agent.planner.uniswap import UniswapVenue

POOL = "0x87870Bca3F3fD6335C3F4ce8392D69350B4fA4E2"
SAFE = "0x00000000000000000000000000000000000000Aa"
ROUTER = "0x68b3465833fb72A70ecDF485E0e4C7bD8665Fc45"
USDC = ReserveMeta("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "USDC", 6,
                   "0x98C23E9d8f34FEFb1B7BD6a91B7FF122F4e16F5c",
                   "0x72E95b8931767C79bA4EeE721354d6E99a61D004", 8000, 7700)  # fmt: skip
WETH = ReserveMeta("0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "WETH", 18,
                   "0x4d5F47FA6A74757f35C14fD3a6Ef8E3C9BC514E8",
                   "0x0000000000000000000000000000000000000001", 8250, 8000)  # fmt: skip
LAYOUT = MarketLayout("t", "aave-v3", POOL, POOL, POOL, (USDC, WETH), (SAFE,), {}, {}, {})
USDC_STATE = ReserveState(0, 0, 0, 0, 10**8)  # $1, no accrual
WETH_STATE = ReserveState(0, 0, 0, 0, 2000 * 10**8)  # $2000
VENUE = UniswapVenue(POOL, ROUTER, POOL, {"WETH": 3000})
FLOOR = 105 * WAD // 100


class CpPool:
    """x*y=k at $2000 with $20M per side; fee 0.3% on the input."""

    def __init__(self) -> None:
        self.x = 10_000 * 10**18  # WETH
        self.y = 20_000_000 * 10**6  # USDC
        self.calls = 0

    async def quote(self, amount_in: int) -> int:
        self.calls += 1
        net = amount_in * 997 // 1000
        return self.y * net // (self.x + net)


def account(weth: int, debt_usd: int) -> AccountState:
    c, d = weth * 2000 * 10**8, debt_usd * 10**8
    return AccountState(c, d, 0, 8250, 8000, c * 8250 * WAD // (d * 10_000), {}, {})


async def plan(acct: AccountState, target: int, pool: CpPool, **kw: int) -> DeleveragePlan:
    return await plan_deleverage(
        pool.quote, layout=LAYOUT, venue=VENUE, account_addr=SAFE, account=acct,
        collateral=WETH, collateral_reserve=WETH_STATE,
        collateral_balance=kw.pop("balance", 10**30), debt=USDC, debt_reserve=USDC_STATE,
        target_hf_wad=target, hf_floor_wad=kw.pop("floor", FLOOR), slippage_bps=50,
        accrual_margin_s=0, **kw,
    )  # fmt: skip


def hf_after(acct: AccountState, steps: list[tuple[int, int]]) -> list[tuple[Decimal, Decimal]]:
    """(mid, after) health factors per step from (withdraw wei, repay USDC units), by Decimal."""
    c = Decimal(acct.total_collateral_base) / 10**8
    d = Decimal(acct.total_debt_base) / 10**8
    out = []
    for w, r in steps:
        c -= Decimal(w) / 10**18 * 2000
        mid = c * Decimal("0.825") / d
        d -= Decimal(r) / 10**6
        out.append((mid, c * Decimal("0.825") / d))
    return out


def batch_steps(p: DeleveragePlan) -> list[tuple[int, int]]:
    w = [int(t.decoded.args["amount"]) for t in p.transactions if t.decoded.method == "withdraw"]
    r = [int(t.decoded.args["amount"]) for t in p.transactions if t.decoded.method == "repay"]
    return list(zip(w, r, strict=True))


async def test_single_step_reaches_target_and_no_more() -> None:
    acct = account(100, 120_000)  # $200k WETH, HF 1.375
    target = 16 * WAD // 10
    pool = CpPool()
    p = await plan(acct, target, pool)
    assert len(p.steps) == 1 and p.reaches_target
    assert [t.decoded.method for t in p.transactions] == [
        "withdraw", "approve", "exactInputSingle", "approve", "repay",
    ]  # fmt: skip
    ((mid, after),) = hf_after(acct, batch_steps(p))
    assert Decimal(target) / WAD <= after < Decimal(target) / WAD * Decimal("1.0001")
    assert mid >= Decimal("1.05")
    # Minimal: selling 1 bp less (with its own quote and minimum) misses the target.
    a = p.amount - p.amount // 10_000
    m = await pool.quote(a) * 9950 // 10_000
    ((_, short),) = hf_after(acct, [(a, m)])
    assert short < Decimal(target) / WAD
    # amountOutMinimum is the quote less 50 bps, and it is what the repay pays.
    swap = p.transactions[2].decoded.args["params"]
    assert int(swap["amountOutMinimum"]) == await pool.quote(p.amount) * 9950 // 10_000
    assert p.cost_base == p.value_base - p.repaid_base
    assert p.fee_base == -(-p.value_base * 3000 // 1_000_000)
    assert pool.calls < 40  # quote, then refine: a handful of quotes


async def test_loop_keeps_every_step_above_the_floor() -> None:
    acct = account(100, 160_000)  # HF 165000/160000 = 1.03125: below the floor
    with pytest.raises(PlanningError, match="at or below the floor"):
        await plan(acct, 16 * WAD // 10, CpPool())
    acct = account(100, 150_000)  # HF 1.10
    target = 16 * WAD // 10
    p = await plan(acct, target, CpPool())
    assert len(p.steps) >= 3 and p.reaches_target
    rows = hf_after(acct, batch_steps(p))
    assert all(mid >= Decimal("1.05") for mid, _ in rows)
    assert all(b[1] > a[1] for a, b in pairwise(rows))  # HF rises each step
    assert Decimal(target) / WAD <= rows[-1][1] < Decimal(target) / WAD * Decimal("1.0001")
    # Every step but the last withdraws to the floor (no smaller steps than needed).
    for mid, _ in rows[:-1]:
        assert mid < Decimal("1.0501")
    methods = [t.decoded.method for t in p.transactions]
    assert methods.count("approve") == 2  # once each, for the whole batch
    assert methods[:5] == ["withdraw", "approve", "exactInputSingle", "approve", "repay"]


async def test_allowances_already_granted_skip_the_approvals() -> None:
    acct = account(100, 120_000)
    acct = AccountState(**{**acct.__dict__, "pool_allowances": {"USDC": 10**30}})
    p = await plan(acct, 16 * WAD // 10, CpPool(), router_allowance=10**30)
    assert [t.decoded.method for t in p.transactions] == ["withdraw", "exactInputSingle", "repay"]


async def test_not_enough_collateral_is_capped_and_loses_the_choice() -> None:
    acct = account(100, 150_000)
    p = await plan(acct, 16 * WAD // 10, CpPool(), balance=5 * 10**18)
    assert p.capped_by == "collateral" and not p.reaches_target
    chosen, cmp = choose_protection(None, None, deleverage=p, target_hf_wad=16 * WAD // 10)
    assert chosen is p and "no plan reaches the target" in cmp["reason"]
    assert cmp["options"][0]["why_not"] is None


async def test_already_at_target_is_an_error() -> None:
    with pytest.raises(PlanningError, match="already at health factor"):
        await plan(account(100, 100_000), 16 * WAD // 10, CpPool())


def test_mainnet_example_names_the_canonical_uniswap_deployment() -> None:
    """Addresses as in shared interfaces.md section 13 (Uniswap V3 canonical Ethereum)."""
    from agent.config import load_settings

    root = Path(__file__).resolve().parents[2]
    s = load_settings(root / "config" / "mainnet.example.toml", resolve_deployment=False)
    assert s.uniswap.factory == "0x1F98431c8aD98523631AE4a59f267346ea31F984"
    assert s.uniswap.swap_router02 == "0x68b3465833fb72A70ecDF485E0e4C7bD8665Fc45"
    assert s.uniswap.quoter_v2 == "0x61fFE014bA17989E743c5F6cB21bF9697530B21e"
    assert s.uniswap.fees == {"WETH": 500, "WBTC": 3000}
    assert s.uniswap.hf_floor == Decimal("1.05")
