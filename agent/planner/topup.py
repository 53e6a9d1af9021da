"""Collateral top-up on Aave V3: ``approve`` (when the allowance is short) + ``supply``.

Sizing is exact integer math on Aave's own units. Aave's health factor is
``HF = sum(collateral_i * LT_i) / debt``, and ``getUserAccountData`` already returns the
collateral-weighted threshold, so adding collateral worth ``x`` (base currency) of an asset
with threshold ``LT_a`` gives ``HF' = (C * LT_avg + x * LT_a) / D``. Solving ``HF' = H*``:
``x = (H* * D - C * LT_avg) / LT_a``. With a single collateral asset this is the design's
``D * H* / LT - C``.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.core.errors import PlanningError
from agent.core.market import AccountState, MarketLayout, ReserveMeta, ReserveState
from agent.core.units import AAVE_BASE_UNIT_USD, BPS, WAD, token_to_float
from agent.planner.tx import PlannedTx, approve_if_short, call_tx


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def collateral_for_target_base(
    weighted_bps: int, debt_base: int, lt_asset_bps: int, target_hf_wad: int
) -> int:
    """Collateral value (oracle base units) of an asset with threshold ``lt_asset_bps`` that
    takes a position with ``weighted_bps`` = collateral x LT (base*bps) and ``debt_base`` to
    ``target_hf_wad``; 0 if it is already there. Rounded up so the target is met, not missed
    by a unit. The one top-up sizing (the Safe's, the guardian's, the guard's reserve count)."""
    if debt_base == 0:
        return 0
    weighted_needed = _ceil_div(target_hf_wad * debt_base * BPS, WAD)  # base*bps
    if weighted_bps >= weighted_needed:
        return 0
    return _ceil_div(weighted_needed - weighted_bps, lt_asset_bps)


def required_collateral_base(account: AccountState, lt_asset_bps: int, target_hf_wad: int) -> int:
    """Collateral value (oracle base units) to add so the account's HF reaches
    ``target_hf_wad``; 0 if it is already there."""
    weighted_now = account.total_collateral_base * account.liquidation_threshold_bps  # base*bps
    return collateral_for_target_base(
        weighted_now, account.total_debt_base, lt_asset_bps, target_hf_wad
    )


def base_to_token_amount(value_base: int, price_base: int, decimals: int) -> int:
    """Token units worth ``value_base`` at ``price_base`` (rounded up)."""
    if price_base <= 0:
        raise PlanningError(f"oracle price {price_base} is not positive")
    return _ceil_div(value_base * 10**decimals, price_base)


def apply_caps(
    amount: int,
    *,
    wallet: int,
    max_spend_base: int | None,
    price_base: int,
    decimals: int,
    cap_label: str = "session_cap",
) -> tuple[int, str | None]:
    """Cut a token amount to the spend cap (base units), then to the wallet balance; say which
    bound it hit last. Shared by the top-up and repay planners."""
    capped_by = None
    if max_spend_base is not None:
        cap_amount = max_spend_base * 10**decimals // price_base
        if amount > cap_amount:
            amount, capped_by = cap_amount, cap_label
    if amount > wallet:
        amount, capped_by = wallet, "wallet"
    return amount, capped_by


@dataclass(frozen=True)
class TopUpPlan:
    account: str
    asset: ReserveMeta
    amount: int  # token units
    value_base: int  # oracle base units (1e8 = 1 USD)
    needed_value_base: int
    capped_by: str | None  # "wallet" | "session_cap" | None
    hf_before_wad: int
    hf_expected_wad: int
    transactions: tuple[PlannedTx, ...]

    @property
    def value_usd(self) -> float:
        return self.value_base / AAVE_BASE_UNIT_USD


def expected_health_factor(account: AccountState, lt_asset_bps: int, added_base: int) -> int:
    if account.total_debt_base == 0:
        return 2**256 - 1
    weighted = (
        account.total_collateral_base * account.liquidation_threshold_bps
        + added_base * lt_asset_bps
    )
    return weighted * WAD // (account.total_debt_base * BPS)


def plan_topup(
    *,
    layout: MarketLayout,
    account_addr: str,
    account: AccountState,
    asset: ReserveMeta,
    reserve: ReserveState,
    target_hf_wad: int,
    max_spend_base: int | None,
    allowance: int = 0,
    margin_bps: int = 10,
) -> TopUpPlan:
    """``margin_bps`` aims slightly above the target: debt accrues interest between the read and
    execution, and Aave rounds its percentage math, so an exact amount can land a hair short."""
    exact = required_collateral_base(account, asset.liquidation_threshold_bps, target_hf_wad)
    needed = exact
    if needed:
        needed = required_collateral_base(
            account, asset.liquidation_threshold_bps, target_hf_wad * (BPS + margin_bps) // BPS
        )
    if needed == 0:
        raise PlanningError(
            f"{account_addr} already at health factor {account.health_factor_wad / WAD:.3f} >= target"
        )
    amount = base_to_token_amount(needed, reserve.price_base, asset.decimals)
    wallet = account.wallet_balances.get(asset.symbol, 0)
    # A cap that covers the exact need (within the margin) is the policy granting the whole
    # top-up: the margin rides on it rather than turning into a capped, short plan.
    covers = max_spend_base is None or max_spend_base * (BPS + margin_bps) // BPS >= exact
    amount, capped_by = apply_caps(
        amount,
        wallet=wallet,
        max_spend_base=None if covers else max_spend_base,
        price_base=reserve.price_base,
        decimals=asset.decimals,
    )
    if amount <= 0:
        raise PlanningError(
            f"{account_addr} holds no {asset.symbol} to top up with (wallet balance 0)"
            if wallet == 0
            else f"no spend left under the session cap for a {asset.symbol} top-up"
        )
    value_base = amount * reserve.price_base // 10**asset.decimals
    human_amt = f"{token_to_float(amount, asset.decimals):.6f} {asset.symbol}"
    txs = approve_if_short(
        asset.asset,
        layout.pool,
        amount,
        allowance,
        human=f"approve Aave V3 Pool to pull {human_amt}",
    )
    txs.append(
        call_tx(
            "Pool",
            layout.pool,
            "supply",
            asset.asset,
            amount,
            account_addr,
            0,
            human=f"supply {human_amt} (~${value_base / AAVE_BASE_UNIT_USD:,.2f}) as collateral for {account_addr}",
        )
    )
    return TopUpPlan(
        account=account_addr,
        asset=asset,
        amount=amount,
        value_base=value_base,
        needed_value_base=needed,
        capped_by=capped_by,
        hf_before_wad=account.health_factor_wad,
        hf_expected_wad=expected_health_factor(
            account, asset.liquidation_threshold_bps, value_base
        ),
        transactions=tuple(txs),
    )
