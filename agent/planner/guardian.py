"""The guardian's protective transactions (issue 23 item 1), drafted, not sent.

A top-up is ``ERC20.approve(Pool, amount)`` + ``Pool.supply(asset, amount, onBehalfOf=Safe, 0)``
and a repay ``ERC20.approve(Pool, amount)`` + ``Pool.repay(asset, amount, 2, onBehalfOf=Safe)``,
both sent by the guardian EOA from its own balance: Aave credits the collateral to, or takes the
debt off, the Safe without its signature. The sizing is the Safe's own top-up and repay
(``plan_topup`` / ``plan_repay``) with the guardian's wallet and allowances in place of the Safe's,
so the amount, the caps and the expected health factor are the same math.

``guard_action_base`` prices one guard action at its trigger (lifting HF from ``trigger`` to
``target`` at the current debt), and ``actions_covered`` says how many of those the guardian's
balance still pays for: what ``hedge-agent check`` shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from agent.core.market import AccountState, MarketLayout, ReserveMeta, ReserveState
from agent.core.units import BPS, WAD
from agent.planner.repay import RepayPlan, plan_repay
from agent.planner.topup import TopUpPlan, plan_topup
from agent.planner.tx import PlannedTx

GuardianAction = Literal["guardian_top_up", "guardian_repay"]


@dataclass(frozen=True)
class GuardianDraft:
    action: GuardianAction
    sender: str  # the guardian EOA: signs and pays
    on_behalf_of: str  # the Safe whose position changes
    plan: TopUpPlan | RepayPlan  # amount, value, expected HF (the Safe's)

    @property
    def transactions(self) -> tuple[PlannedTx, ...]:
        return self.plan.transactions


def with_guardian_wallet(
    account: AccountState, balances: Mapping[str, int], allowances: Mapping[str, int]
) -> AccountState:
    """The Safe's position (collateral, debt, thresholds) paid from the guardian's wallet."""
    return replace(account, wallet_balances=dict(balances), pool_allowances=dict(allowances))


def guardian_topup(
    *,
    layout: MarketLayout,
    safe: str,
    safe_account: AccountState,
    guardian: str,
    guardian_balances: Mapping[str, int],
    guardian_allowances: Mapping[str, int],
    asset: ReserveMeta,
    reserve: ReserveState,
    target_hf_wad: int,
    max_spend_base: int | None,
) -> GuardianDraft:
    plan = plan_topup(
        layout=layout,
        account_addr=safe,
        account=with_guardian_wallet(safe_account, guardian_balances, guardian_allowances),
        asset=asset,
        reserve=reserve,
        target_hf_wad=target_hf_wad,
        max_spend_base=max_spend_base,
        allowance=guardian_allowances.get(asset.symbol, 0),
    )
    return GuardianDraft("guardian_top_up", guardian, safe, plan)


def guardian_repay(
    *,
    layout: MarketLayout,
    safe: str,
    safe_account: AccountState,
    guardian: str,
    guardian_balances: Mapping[str, int],
    guardian_allowances: Mapping[str, int],
    asset: ReserveMeta,
    reserve: ReserveState,
    target_hf_wad: int,
    max_spend_base: int | None = None,
    debt_balance: int | None = None,
) -> GuardianDraft:
    plan = plan_repay(
        layout=layout,
        account_addr=safe,
        account=with_guardian_wallet(safe_account, guardian_balances, guardian_allowances),
        asset=asset,
        reserve=reserve,
        target_hf_wad=target_hf_wad,
        max_spend_base=max_spend_base,
        allowance=guardian_allowances.get(asset.symbol, 0),
        debt_balance=debt_balance,
    )
    return GuardianDraft("guardian_repay", guardian, safe, plan)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def guard_action_base(
    debt_base: int,
    trigger_hf_wad: int,
    target_hf_wad: int,
    kind: Literal["repay", "top_up"],
    lt_asset_bps: int = 0,
) -> int:
    """Value (oracle base units, 1e8 = 1 USD) one guard action takes at the trigger, at the
    current debt ``D``: a repay ``D * (1 - trigger/target)`` (the debt that takes HF from trigger
    to target), a top-up ``D * (target - trigger) / LT_asset`` (the collateral that does)."""
    if debt_base <= 0 or target_hf_wad <= trigger_hf_wad:
        return 0
    if kind == "repay":
        return debt_base - debt_base * trigger_hf_wad // target_hf_wad
    if lt_asset_bps <= 0:
        raise ValueError("a top-up needs the asset's liquidation threshold (bps)")
    return _ceil_div(debt_base * (target_hf_wad - trigger_hf_wad) * BPS, WAD * lt_asset_bps)


def actions_covered(balance_base: int, action_base: int) -> int | None:
    """Whole guard actions ``balance_base`` pays for; None when an action costs nothing (no
    debt: nothing to protect)."""
    if action_base <= 0:
        return None
    return max(0, balance_base) // action_base
