"""Top-up sizing against hand-computed values (Aave units: base 1e8 USD, bps, wad)."""

from agent.core.market import AccountState
from agent.core.units import WAD
from agent.planner.topup import (
    base_to_token_amount,
    expected_health_factor,
    required_collateral_base,
)


def account(c_usd: int, d_usd: int, lt_bps: int) -> AccountState:
    c, d = c_usd * 10**8, d_usd * 10**8
    return AccountState(c, d, 0, lt_bps, 8000, c * lt_bps * WAD // (d * 10_000), {}, {})


def test_design_formula_single_collateral() -> None:
    # C = 20000, D = 10000, LT = 82.5%: HF = 1.65. Target 1.9 → add D*H*/LT - C = 10000*1.9/0.825 - 20000
    acct = account(20_000, 10_000, 8250)
    needed = required_collateral_base(acct, 8250, 19 * WAD // 10)
    hand = 10_000 * 1.9 / 0.825 - 20_000  # = 3030.30...
    assert abs(needed / 1e8 - hand) < 1e-7
    # and it actually reaches the target after adding it
    assert expected_health_factor(acct, 8250, needed) >= 19 * WAD // 10


def test_no_topup_needed_above_target() -> None:
    acct = account(20_000, 10_000, 8250)  # HF 1.65
    assert required_collateral_base(acct, 8250, 16 * WAD // 10) == 0


def test_mixed_threshold_uses_asset_threshold() -> None:
    # Weighted LT of the position is 80%, the added asset's is 70%: more value is needed.
    acct = account(10_000, 5_000, 8000)  # HF 1.6
    target = 2 * WAD
    needed = required_collateral_base(acct, 7000, target)
    # (2*5000 - 10000*0.8)/0.7 = 2857.142857...
    assert abs(needed / 1e8 - 2000 / 0.7) < 1e-7
    assert expected_health_factor(acct, 7000, needed) >= target
    assert expected_health_factor(acct, 7000, needed - 1) < target


def test_base_to_token_amount_rounds_up() -> None:
    # $3000.00000001 of WETH at $2000 → 1.500000000005 WETH, rounded up to the wei
    assert base_to_token_amount(300_000_000_001, 200_000_000_000, 18) == 1_500_000_000_005_000_000
    assert base_to_token_amount(1, 3 * 10**8, 6) == 1  # never rounds a positive need down to zero


def _plan(max_spend_base: int | None, wallet: int = 10**24):
    from agent.core.market import MarketLayout, ReserveMeta, ReserveState
    from agent.planner.topup import plan_topup

    weth = ReserveMeta("0x" + "11" * 20, "WETH", 18, "0x" + "22" * 20, "0x" + "33" * 20, 8250, 8000)
    layout = MarketLayout(
        "t",
        "aave-v3",
        "0x" + "44" * 20,
        "0x" + "55" * 20,
        "0x" + "66" * 20,
        (weth,),
        (),
        {},
        {},
        {},
    )
    acct = account(20_000, 10_000, 8250)
    acct = AccountState(**{**acct.__dict__, "wallet_balances": {"WETH": wallet}})
    return plan_topup(
        layout=layout,
        account_addr="0x" + "77" * 20,
        account=acct,
        asset=weth,
        reserve=ReserveState(0, 0, 0, 0, 2000 * 10**8),
        target_hf_wad=19 * WAD // 10,
        max_spend_base=max_spend_base,
    )


def test_cap_equal_to_the_exact_need_is_not_a_cap() -> None:
    exact = required_collateral_base(account(20_000, 10_000, 8250), 8250, 19 * WAD // 10)
    plan = _plan(exact)
    assert plan.capped_by is None
    assert plan.hf_expected_wad >= 19 * WAD // 10 * 10_010 // 10_000 - 10**9  # aims 10 bps above
    assert [t.decoded.method for t in plan.transactions] == ["approve", "supply"]


def test_smaller_cap_and_wallet_cap_the_amount() -> None:
    plan = _plan(100_000 * 10**8 // 100)  # $1,000 cap vs ~$3,030 needed
    assert plan.capped_by == "session_cap" and plan.value_base <= 1_000 * 10**8
    assert plan.hf_expected_wad < 19 * WAD // 10
    plan = _plan(None, wallet=10**17)  # 0.1 WETH in the wallet
    assert plan.capped_by == "wallet" and plan.amount == 10**17


def test_caps_round_the_spend_down_and_the_wallet_binds_at_its_edge() -> None:
    """The spend cap converts to token units rounded DOWN (never a wei above the cap), and a
    need one unit above the wallet is cut to the wallet (mutation audit)."""
    from agent.planner.topup import apply_caps

    price, cap = 3_000 * 10**8, 1_000 * 10**8 + 1  # $3000 WETH, a $1000.00000001 cap
    amount, by = apply_caps(
        10**18, wallet=10**24, max_spend_base=cap, price_base=price, decimals=18
    )
    assert by == "session_cap"
    assert amount == cap * 10**18 // price == 333_333_333_336_666_666  # floor, by hand
    assert amount * price <= cap * 10**18 < (amount + 1) * price  # at the cap, not one wei past
    w = 5 * 10**17
    assert apply_caps(w + 1, wallet=w, max_spend_base=None, price_base=price, decimals=18) == (
        w,
        "wallet",
    )
    assert apply_caps(w, wallet=w, max_spend_base=None, price_base=price, decimals=18) == (w, None)


def test_supply_is_on_behalf_of_the_account_with_the_planned_amount() -> None:
    from eth_utils.address import to_checksum_address

    plan = _plan(None)
    approve, supply = plan.transactions
    assert supply.to == "0x" + "44" * 20 and supply.decoded.method == "supply"
    # supply(asset, amount, onBehalfOf, referralCode): the collateral is credited to the account
    assert list(supply.decoded.args.values()) == [
        to_checksum_address("0x" + "11" * 20),
        plan.amount,
        to_checksum_address("0x" + "77" * 20),
        0,
    ]
    assert list(approve.decoded.args.values())[1] == plan.amount
