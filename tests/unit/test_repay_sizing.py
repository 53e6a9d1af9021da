"""Repay sizing and the top-up/repay choice against hand-computed values
(Aave units: base 1e8 USD, bps, wad)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from agent.core.abi import load_abi
from agent.core.errors import PlanningError
from agent.core.market import AccountState, MarketLayout, ReserveMeta, ReserveState
from agent.core.units import RAY, WAD
from agent.planner.repay import (
    RepayPlan,
    choose_protection,
    expected_health_factor_after_repay,
    plan_repay,
    projected_debt_base,
    required_repay_base,
)
from agent.planner.topup import plan_topup

POOL = "0x87870Bca3F3fD6335C3F4ce8392D69350B4fA4E2"
SAFE = "0x00000000000000000000000000000000000000Aa"
USDC = ReserveMeta(
    "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
    "USDC",
    6,
    "0x98C23E9d8f34FEFb1B7BD6a91B7FF122F4e16F5c",
    "0x72E95b8931767C79bA4EeE721354d6E99a61D004",
    8000,
    7700,
)
WETH = ReserveMeta(
    "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
    "WETH",
    18,
    "0x4d5F47FA6A74757f35C14fD3a6Ef8E3C9BC514E8",
    "0x0000000000000000000000000000000000000001",
    8250,
    8000,
)
LAYOUT = MarketLayout("t", "aave-v3", POOL, POOL, POOL, (USDC, WETH), (SAFE,), {}, {}, {})
USDC_STATE = ReserveState(0, 5 * RAY // 100, 0, 0, 10**8)  # $1, 5% APR variable
WETH_STATE = ReserveState(0, 0, 0, 0, 2000 * 10**8)  # $2000


def account(c_usd: int, d_usd: int, lt_bps: int, *, usdc: int = 0, weth: int = 0,
            usdc_allow: int = 0) -> AccountState:  # fmt: skip
    c, d = c_usd * 10**8, d_usd * 10**8
    hf = c * lt_bps * WAD // (d * 10_000) if d else 2**256 - 1
    return AccountState(
        c, d, 0, lt_bps, 8000, hf, {"USDC": usdc, "WETH": weth}, {"USDC": usdc_allow}
    )


def repay(acct: AccountState, target: int, **kw: Any) -> RepayPlan:
    return plan_repay(layout=LAYOUT, account_addr=SAFE, account=acct, asset=USDC,
                      reserve=USDC_STATE, target_hf_wad=target, accrual_margin_s=0, **kw)  # fmt: skip


def test_required_repay_hand_computed() -> None:
    # C = 20000, D = 10000, LT 82.5%: HF 1.65. Target 1.8 → y = D - C*LT/H* = 10000 - 16500/1.8
    acct = account(20_000, 10_000, 8250)
    y = required_repay_base(acct, 18 * WAD // 10)
    assert abs(y / 1e8 - (10_000 - 16_500 / 1.8)) < 1e-7  # 833.333...
    # Exact: weighted 1.65e12 base; R = floor(1.65e12 * 1e18 / 1.8e18) = 916_666_666_666
    assert y == 10**12 - 916_666_666_666 == 83_333_333_334
    assert expected_health_factor_after_repay(acct, y) >= 18 * WAD // 10
    assert expected_health_factor_after_repay(acct, y - 1) < 18 * WAD // 10
    assert required_repay_base(acct, 16 * WAD // 10) == 0  # already above 1.6


def test_plan_repay_amount_calldata_and_approve() -> None:
    acct = account(20_000, 10_000, 8250, usdc=5_000 * 10**6)
    plan = repay(acct, 18 * WAD // 10)
    # $833.33333334 of USDC at $1 → 833.33333334 USDC, rounded up to 833.333334
    assert plan.amount == 833_333_334
    assert plan.value_base == 83_333_333_400
    assert plan.capped_by is None and plan.reaches_target
    hf = Decimal(16_500) / (Decimal(10_000) - Decimal("833.333334"))
    assert abs(Decimal(plan.hf_expected_wad) / WAD - hf) < Decimal("1e-15")
    approve, rep = plan.transactions
    assert (approve.to, approve.decoded.method) == (USDC.asset, "approve")
    assert list(approve.decoded.args.values()) == [POOL, 833_333_334]
    assert rep.to == POOL and rep.decoded.method == "repay"
    assert list(rep.decoded.args.values()) == [
        USDC.asset,
        833_333_334,
        2,
        to_checksum_address(SAFE),
    ]
    # the calldata is the real IPool.repay selector
    assert rep.data[:10] == "0x" + load_abi("Pool").selector("repay").hex() == "0x573ade81"


def test_no_approve_when_allowance_suffices() -> None:
    acct = account(20_000, 10_000, 8250, usdc=5_000 * 10**6, usdc_allow=10**12)
    plan = repay(acct, 18 * WAD // 10)
    assert [t.decoded.method for t in plan.transactions] == ["repay"]


def test_capped_by_wallet() -> None:
    acct = account(20_000, 10_000, 8250, usdc=500 * 10**6)
    plan = repay(acct, 18 * WAD // 10)
    assert plan.amount == 500 * 10**6 and plan.capped_by == "wallet"
    assert not plan.reaches_target
    # HF = 16500 / 9500
    assert abs(plan.hf_expected_wad / WAD - 16_500 / 9_500) < 1e-12


def test_errors() -> None:
    with pytest.raises(PlanningError, match="holds no USDC"):
        repay(account(20_000, 10_000, 8250), 18 * WAD // 10)
    with pytest.raises(PlanningError, match="already at health factor"):
        repay(account(20_000, 10_000, 8250, usdc=10**9), 16 * WAD // 10)
    with pytest.raises(PlanningError, match="no debt"):
        repay(account(20_000, 0, 8250, usdc=10**9), 16 * WAD // 10)


def test_accrual_margin_projects_debt_forward() -> None:
    # 5% APR for one year on $10000 → $500 more debt (linear), +1 unit for rounding.
    assert projected_debt_base(10**12, 5 * RAY // 100, 31_536_000) == 10**12 + 5 * 10**10 + 1
    acct = account(20_000, 10_000, 8250, usdc=5_000 * 10**6)
    plain = repay(acct, 18 * WAD // 10)
    margin = plan_repay(layout=LAYOUT, account_addr=SAFE, account=acct, asset=USDC,
                        reserve=USDC_STATE, target_hf_wad=18 * WAD // 10, accrual_margin_s=600)  # fmt: skip
    # 600 s at 5% APR on $10000 = 10000*0.05*600/31536000 = $0.009513 more debt
    extra = margin.amount - plain.amount
    # y grows by ceil(951293.76) + 1 = 951_295 base units: 833_342_846.29 → 833_342_847 micro-USDC
    # vs 833_333_333.34 → 833_333_334 without the margin
    assert extra == 9_513


def test_choose_repay_when_cheaper() -> None:
    # Same position: top-up needs (1.8*10000 - 16500)/0.825 = $1818.18 of WETH (plan_topup aims
    # 0.1% above the target by default: (1.8018*10000 - 16500)/0.825 = $1840); repay $833.33.
    acct = account(20_000, 10_000, 8250, usdc=5_000 * 10**6, weth=10 * 10**18)
    target = 18 * WAD // 10
    top = plan_topup(layout=LAYOUT, account_addr=SAFE, account=acct, asset=WETH,
                     reserve=WETH_STATE, target_hf_wad=target, max_spend_base=None)  # fmt: skip
    rep = repay(acct, target)
    assert 1500 / 0.825 <= top.value_usd <= 1518 / 0.825 + 0.01
    chosen, cmp = choose_protection(top, rep)
    assert chosen is rep
    assert cmp["chosen"] == "repay_debt"
    assert [o["action"] for o in cmp["options"]] == ["collateral_top_up", "repay_debt"]
    assert [round(o["cost_usd"], 2) for o in cmp["options"]] == [round(top.value_usd, 2), 833.33]
    assert all(o["reaches_target"] for o in cmp["options"])
    assert f"repay_debt reaches the target for $833.33 vs ${top.value_usd:,.2f}" in cmp["reason"]


def test_capped_repay_loses_to_topup_that_reaches() -> None:
    acct = account(20_000, 10_000, 8250, usdc=100 * 10**6, weth=10 * 10**18)
    target = 18 * WAD // 10
    top = plan_topup(layout=LAYOUT, account_addr=SAFE, account=acct, asset=WETH,
                     reserve=WETH_STATE, target_hf_wad=target, max_spend_base=None)  # fmt: skip
    rep = repay(acct, target)
    assert rep.value_usd < top.value_usd  # cheaper, but misses
    chosen, cmp = choose_protection(top, rep)
    assert chosen is top and cmp["chosen"] == "collateral_top_up"
    assert [o["reaches_target"] for o in cmp["options"]] == [True, False]
    assert "does not (capped by wallet)" in cmp["reason"]


def test_neither_reaches_picks_higher_hf_and_none() -> None:
    acct = account(20_000, 10_000, 8250, usdc=100 * 10**6, weth=10**17)  # 0.1 WETH = $200
    target = 18 * WAD // 10
    top = plan_topup(layout=LAYOUT, account_addr=SAFE, account=acct, asset=WETH,
                     reserve=WETH_STATE, target_hf_wad=target, max_spend_base=None)  # fmt: skip
    rep = repay(acct, target)
    # top-up $200 → (16500 + 165)/10000 = 1.6665; repay $100 → 16500/9900 = 1.6667: repay wins
    chosen, cmp = choose_protection(top, rep)
    assert chosen is rep and "no plan reaches the target" in cmp["reason"]
    assert choose_protection(None, None)[0] is None
    only, cmp1 = choose_protection(top, None, target_hf_wad=target)
    assert only is top and cmp1["options"][0]["reaches_target"] is False


def test_capped_by_the_debt_balance_at_the_debt_not_above() -> None:
    """Aave never pulls more than the debt: a need above the variable debt balance is cut to
    exactly that balance and flagged (mutation audit: a cap compared against the wrong bound)."""
    acct = account(20_000, 10_000, 8250, usdc=5_000 * 10**6)
    plan = repay(acct, 18 * WAD // 10, debt_balance=500 * 10**6)  # needs 833.333334 USDC
    assert plan.amount == 500 * 10**6 and plan.capped_by == "debt"
    assert plan.value_base == 500 * 10**8 and not plan.reaches_target
    # HF after repaying $500 of $10,000 against C*LT = $16,500: 16500/9500, by hand
    hf = Decimal(16_500) / Decimal(9_500)
    assert abs(Decimal(plan.hf_expected_wad) / WAD - hf) < Decimal("1e-15")
    exact = repay(acct, 18 * WAD // 10, debt_balance=833_333_334)  # the balance covers it
    assert exact.amount == 833_333_334 and exact.capped_by is None


def test_a_plan_landing_exactly_on_the_target_reaches_it() -> None:
    """HF == target is reaching the target (mutation audit: ``>`` for ``>=`` at a threshold)."""
    plan = repay(account(20_000, 10_000, 8250, usdc=5_000 * 10**6), 18 * WAD // 10)
    chosen, cmp = choose_protection(None, plan, target_hf_wad=plan.hf_expected_wad)
    assert chosen is plan and cmp["options"][0]["reaches_target"] is True
    assert cmp["reason"] == "repay_debt is the only plan and reaches the target"
    _, above = choose_protection(None, plan, target_hf_wad=plan.hf_expected_wad + 1)
    assert above["options"][0]["reaches_target"] is False
