"""The guardian's protective transactions (issue 23 item 1): the Safe's own top-up and repay.

A top-up is ``ERC20.approve(Pool, amount)`` + ``Pool.supply(asset, amount, onBehalfOf=Safe, 0)``
and a repay ``ERC20.approve(Pool, amount)`` + ``Pool.repay(asset, amount, 2, onBehalfOf=Safe)``,
both sent by the guardian EOA from its own balance: Aave credits the collateral to, or takes the
debt off, the Safe without its signature. There is one sizing path: ``plan_topup`` /
``plan_repay`` (``agent.planner.draft``) on the Safe's position with the guardian's wallet as
the funding source (:func:`with_guardian_wallet`), so the amount, the caps and the expected
health factor are the same math as the Safe's.

``guard_action_base`` prices one guard action at its trigger (lifting HF from ``trigger`` to
``target`` at the current debt) with that same sizing, and ``actions_covered`` says how many of
those the guardian's balance still pays for: what ``hedge-agent check`` shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Literal

from agent.core.market import AccountState
from agent.core.units import BPS, WAD
from agent.planner.repay import repay_for_target_base
from agent.planner.topup import collateral_for_target_base


def with_guardian_wallet(
    account: AccountState, balances: Mapping[str, int], allowances: Mapping[str, int]
) -> AccountState:
    """The Safe's position (collateral, debt, thresholds) paid from the guardian's wallet."""
    return replace(account, wallet_balances=dict(balances), pool_allowances=dict(allowances))


def guard_action_base(
    debt_base: int,
    trigger_hf_wad: int,
    target_hf_wad: int,
    kind: Literal["repay", "top_up"],
    lt_asset_bps: int = 0,
) -> int:
    """Value (oracle base units, 1e8 = 1 USD) one guard action takes at the trigger, at the
    current debt ``D``: the position at HF = trigger (collateral x LT = trigger x D), sized by
    the planners' own math to the target: a repay ``D - trigger x D / target`` (the debt that
    takes HF from trigger to target), a top-up ``D x (target - trigger) / LT_asset``."""
    if debt_base <= 0 or target_hf_wad <= trigger_hf_wad:
        return 0
    weighted_bps = trigger_hf_wad * debt_base * BPS // WAD  # collateral x LT at the trigger
    if kind == "repay":
        return repay_for_target_base(weighted_bps // BPS, debt_base, target_hf_wad)
    if lt_asset_bps <= 0:
        raise ValueError("a top-up needs the asset's liquidation threshold (bps)")
    return collateral_for_target_base(weighted_bps, debt_base, lt_asset_bps, target_hf_wad)


def actions_covered(balance_base: int, action_base: int) -> int | None:
    """Whole guard actions ``balance_base`` pays for; None when an action costs nothing (no
    debt: nothing to protect)."""
    if action_base <= 0:
        return None
    return max(0, balance_base) // action_base
