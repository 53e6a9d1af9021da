"""The deleverage alternative of ``Proposer.protect`` (composition: config → planner), kept out
of ``propose.py`` so that module only calls it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agent.collectors.onchain import AccountState, ChainSnapshot, MarketLayout
from agent.config import Settings
from agent.core.abi import DecodedCall
from agent.core.errors import PlanningError
from agent.core.rpc import RpcClient
from agent.core.units import AAVE_BASE_UNIT_USD, WAD
from agent.planner.deleverage import DeleveragePlan, plan_deleverage_onchain
from agent.planner.repay import ProtectionPlan
from agent.planner.topup import TopUpPlan
from agent.simulator.fork import SimulationResult


async def plan_deleverage_for(
    settings: Settings,
    layout: MarketLayout,
    reader: RpcClient,
    snap: ChainSnapshot,
    account_addr: str,
    account: AccountState,
    target_hf_wad: int,
    max_cost_base: int | None = None,
) -> DeleveragePlan:
    """Plan a deleverage of the position's collateral (``position.topup_asset``) into its debt
    asset (``position.repay_asset``) through the configured Uniswap V3 venue. Its cost (fee +
    impact + slippage bound) is what the session ledger counts, so it must fit
    ``max_cost_base``."""
    venue = settings.uniswap.venue()
    if venue is None:
        raise PlanningError("no DEX configured ([uniswap] in the config)")
    if not settings.position.repay_asset:
        raise PlanningError("no debt asset configured (position.repay_asset)")
    collateral = layout.reserve(settings.position.topup_asset)
    debt = layout.reserve(settings.position.repay_asset)
    try:
        c_state, d_state = snap.reserves[collateral.symbol], snap.reserves[debt.symbol]
    except KeyError as exc:
        raise PlanningError(f"no reserve data for {exc} in this tick") from None
    plan = await plan_deleverage_onchain(
        reader,
        layout=layout,
        venue=venue,
        account_addr=account_addr,
        account=account,
        collateral=collateral,
        collateral_reserve=c_state,
        debt=debt,
        debt_reserve=d_state,
        target_hf_wad=target_hf_wad,
        hf_floor_wad=int(settings.uniswap.hf_floor * WAD),
        slippage_bps=settings.uniswap.slippage_bps,
    )
    if max_cost_base is not None and plan.cost_base > max_cost_base:
        raise PlanningError(
            f"its cost ${plan.cost_base / AAVE_BASE_UNIT_USD:,.2f} would exceed the session cap's remaining"
            f" ${max_cost_base / AAVE_BASE_UNIT_USD:,.2f}"
        )
    return plan


def spend_base(plan: ProtectionPlan) -> int:
    """What the session ledger counts: the capital of a top-up or repay, the most a deleverage
    can lose (fee + impact + slippage bound) — it commits no new capital."""
    if isinstance(plan, DeleveragePlan):
        return plan.cost_base
    if isinstance(plan, TopUpPlan):
        return plan.value_base
    return int(getattr(plan, "value_base", 0))


def deleverage_outcome(plan: DeleveragePlan, events: Sequence[DecodedCall]) -> dict[str, Any]:
    """What the swaps did on the fork, from the pools' own ``Swap`` events: the amount received
    against amountOutMinimum, and the realised price and its distance from the oracle."""
    received = 0
    for ev in events:
        if (
            getattr(ev, "method", None) == "Swap"
            and getattr(ev, "contract", None) == "UniswapV3Pool"
        ):
            a0, a1 = int(ev.args["amount0"]), int(ev.args["amount1"])
            received += -min(a0, a1)  # the pool pays out the negative side
    if received == 0 or plan.amount == 0:
        return {}
    dd, dc = plan.debt_asset.decimals, plan.asset.decimals
    price = received * 10**dc / (plan.amount * 10**dd)
    oracle = plan.oracle_price_wad / WAD
    return {
        "swap_amount_out": str(received),
        "swap_amount_out_human": received / 10**dd,
        "swap_amount_out_minimum": str(plan.min_out),
        "swap_amount_out_minimum_human": plan.min_out / 10**dd,
        "swap_price": price,
        "swap_price_vs_oracle_bps": (1 - price / oracle) * 10_000 if oracle else None,
        "left_in_wallet": str(received - plan.min_out),
    }


def deleverage_evidence(
    plan: ProtectionPlan,
) -> tuple[dict[str, Any] | None, Callable[[SimulationResult], dict[str, Any]] | None]:
    """For a deleverage: the swap summary for the record and the simulation outcome reader."""
    if not isinstance(plan, DeleveragePlan):
        return None, None

    def outcome(sim: SimulationResult) -> dict[str, Any]:
        return deleverage_outcome(plan, [e for t in sim.transactions for e in t.events])

    return plan.swap_summary(), outcome
