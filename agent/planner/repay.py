"""Debt repayment on Aave V3: ``approve`` (when the allowance is short) + ``repay(asset, amount,
2, onBehalfOf)``, the alternative to a collateral top-up, and the choice between the two.

Sizing is exact integer math on Aave's own units. ``HF = C * LT_avg / D`` (``LT_avg`` is the
collateral-weighted threshold ``getUserAccountData`` returns), so repaying debt worth ``y``
(base currency) gives ``HF' = C * LT_avg / (D - y)``; solving ``HF' = H*``:
``y = D - C * LT_avg / H*``.

Rounding so the target is met on chain: Aave computes ``HF = percentMul(C, LT_avg) wadDiv D``
with half-up rounding, which is never below ``floor(floor(C * LT_avg / BPS) * WAD / D)``. We keep
the remaining debt at ``R = floor(floor(C * LT_avg / BPS) * WAD / H*)``, so ``y = D - R`` and the
token amount is rounded up; Aave's per-reserve debt value is floored, which only helps.

Variable debt grows between the snapshot and execution. ``accrual_margin_s`` projects the debt
forward at the debt asset's current variable borrow rate (rounded up) so the repay still reaches
the target when it lands that many seconds later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from agent.core.errors import PlanningError
from agent.core.market import AccountState, MarketLayout, ReserveMeta, ReserveState
from agent.core.units import (
    AAVE_BASE_UNIT_USD,
    BPS,
    MAX_UINT256,
    RAY,
    SECONDS_PER_YEAR,
    WAD,
    token_to_float,
)
from agent.planner.topup import TopUpPlan, apply_caps, base_to_token_amount
from agent.planner.tx import PlannedTx, approve_if_short, call_tx

VARIABLE_RATE_MODE = 2  # stable (1) is deprecated since Aave v3.2.0
DEFAULT_ACCRUAL_MARGIN_S = 600


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def projected_debt_base(debt_base: int, variable_borrow_rate_ray: int, seconds: int) -> int:
    """Debt after ``seconds`` of linear accrual at ``variable_borrow_rate_ray`` (APR, ray),
    rounded up. Over minutes, compounding adds far less than one base unit per million."""
    if seconds <= 0 or debt_base == 0:
        return debt_base
    growth = _ceil_div(debt_base * variable_borrow_rate_ray * seconds, RAY * SECONDS_PER_YEAR)
    # +1 absorbs the compounding term and Aave's rayMul rounding.
    return debt_base + growth + (1 if growth else 0)


def max_debt_at(weighted_base: int, target_hf_wad: int) -> int:
    """The largest debt (base units) at HF >= target for ``weighted_base`` = collateral x LT
    (base units, floored as Aave's percentMul leaves it)."""
    if target_hf_wad <= 0:
        raise PlanningError(f"target health factor {target_hf_wad} (wad) is not positive")
    return weighted_base * WAD // target_hf_wad


def repay_for_target_base(weighted_base: int, debt_base: int, target_hf_wad: int) -> int:
    """Debt value (oracle base units) to repay so a position with ``weighted_base`` and
    ``debt_base`` reaches ``target_hf_wad``; 0 if it is already there. The one repay sizing
    (the Safe's, the guardian's, the guard's reserve count)."""
    if debt_base == 0:
        return 0
    return max(0, debt_base - max_debt_at(weighted_base, target_hf_wad))


def required_repay_base(
    account: AccountState, target_hf_wad: int, debt_base: int | None = None
) -> int:
    """Debt value (oracle base units) to repay so HF reaches ``target_hf_wad``; 0 if it is
    already there. ``debt_base`` overrides the account's debt (e.g. projected for accrual)."""
    d = account.total_debt_base if debt_base is None else debt_base
    weighted = account.total_collateral_base * account.liquidation_threshold_bps // BPS
    return repay_for_target_base(weighted, d, target_hf_wad)


def expected_health_factor_after_repay(account: AccountState, repaid_base: int) -> int:
    remaining = account.total_debt_base - repaid_base
    if remaining <= 0:
        return MAX_UINT256
    weighted = account.total_collateral_base * account.liquidation_threshold_bps // BPS
    return weighted * WAD // remaining


@dataclass(frozen=True)
class RepayPlan:
    account: str
    asset: ReserveMeta  # the debt asset repaid
    amount: int  # token units
    value_base: int  # oracle base units (1e8 = 1 USD)
    needed_value_base: int
    capped_by: str | None  # "wallet" | "session_cap" | "debt" | None
    hf_before_wad: int
    hf_expected_wad: int
    target_hf_wad: int
    transactions: tuple[PlannedTx, ...]

    @property
    def value_usd(self) -> float:
        return self.value_base / AAVE_BASE_UNIT_USD

    @property
    def reaches_target(self) -> bool:
        return self.capped_by is None and self.hf_expected_wad >= self.target_hf_wad


def plan_repay(
    *,
    layout: MarketLayout,
    account_addr: str,
    account: AccountState,
    asset: ReserveMeta,
    reserve: ReserveState,
    target_hf_wad: int,
    max_spend_base: int | None = None,
    allowance: int | None = None,
    debt_balance: int | None = None,
    accrual_margin_s: int = DEFAULT_ACCRUAL_MARGIN_S,
) -> RepayPlan:
    """Plan ``approve`` + ``repay`` of ``asset`` (the debt asset) for ``account_addr``.

    Inputs are the same as ``plan_topup``'s; ``reserve`` is the debt asset's state (price and
    variable borrow rate). ``allowance`` defaults to ``account.pool_allowances[asset.symbol]``.
    ``debt_balance`` (token units of this asset's variable debt, when known) caps the amount:
    Aave never pulls more than the debt, so repaying past it cannot raise HF further.
    """
    if account.total_debt_base == 0:
        raise PlanningError(f"{account_addr} has no debt to repay")
    debt_now = projected_debt_base(
        account.total_debt_base, reserve.variable_borrow_rate_ray, accrual_margin_s
    )
    needed = required_repay_base(account, target_hf_wad, debt_now)
    if needed == 0:
        raise PlanningError(
            f"{account_addr} already at health factor {account.health_factor_wad / WAD:.3f} >= target"
        )
    amount = base_to_token_amount(needed, reserve.price_base, asset.decimals)
    capped_by = None
    wallet = account.wallet_balances.get(asset.symbol, 0)
    if debt_balance is not None and amount > debt_balance:
        amount, capped_by = debt_balance, "debt"
    amount, cap = apply_caps(
        amount,
        wallet=wallet,
        max_spend_base=max_spend_base,
        price_base=reserve.price_base,
        decimals=asset.decimals,
    )
    capped_by = cap or capped_by
    if amount <= 0:
        raise PlanningError(
            f"{account_addr} holds no {asset.symbol} to repay with (wallet balance 0)"
            if wallet == 0
            else f"no spend left under the session cap for a {asset.symbol} repayment"
        )
    value_base = amount * reserve.price_base // 10**asset.decimals
    human_amt = f"{token_to_float(amount, asset.decimals):.6f} {asset.symbol}"
    allowance = account.pool_allowances.get(asset.symbol, 0) if allowance is None else allowance
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
            "repay",
            asset.asset,
            amount,
            VARIABLE_RATE_MODE,
            account_addr,
            human=f"repay {human_amt} (~${value_base / AAVE_BASE_UNIT_USD:,.2f}) of variable debt for {account_addr}",
        )
    )
    return RepayPlan(
        account=account_addr,
        asset=asset,
        amount=amount,
        value_base=value_base,
        needed_value_base=needed,
        capped_by=capped_by,
        hf_before_wad=account.health_factor_wad,
        hf_expected_wad=expected_health_factor_after_repay(account, value_base),
        target_hf_wad=target_hf_wad,
        transactions=tuple(txs),
    )


# -- choosing the protection ----------------------------------------------------------------
#
# Every action the Safe can pay for is planned; the choice ranks those that reach the target by
# the value they lose to the market first (0 for a top-up or a repay: the capital stays the
# treasury's; fee + price impact + slippage bound for a deleverage), then by the capital they
# commit (top-up and repay), so a wallet that holds the debt asset repays rather than sells
# collateral. A combined plan (the wallet's repay or top-up first, a deleverage for the rest)
# loses only its smaller deleverage's cost, so it beats the full deleverage when the wallet
# holds part of what the target needs. ``cost_usd`` in the comparison is what the issue defines: capital committed for a
# top-up or repay, fee + impact + slippage bound for a deleverage.


class _Deleverage(Protocol):
    """What the choice reads from a deleverage plan (``agent.planner.deleverage``), which
    imports this module."""

    @property
    def asset(self) -> ReserveMeta: ...
    @property
    def amount(self) -> int: ...
    @property
    def value_base(self) -> int: ...
    @property
    def needed_value_base(self) -> int: ...
    @property
    def capped_by(self) -> str | None: ...
    @property
    def hf_expected_wad(self) -> int: ...
    @property
    def cost_base(self) -> int: ...
    @property
    def capital_base(self) -> int: ...
    @property
    def action(self) -> str: ...
    @property
    def transactions(self) -> tuple[PlannedTx, ...]: ...


ProtectionPlan = TopUpPlan | RepayPlan | _Deleverage


def _action(plan: ProtectionPlan) -> str:
    if isinstance(plan, RepayPlan):
        return "repay_debt"
    if isinstance(plan, TopUpPlan):
        return "collateral_top_up"
    return plan.action  # "deleverage", or the wallet first then a deleverage


def _cost(plan: ProtectionPlan) -> int:
    """The issue's cost: capital committed (top-up, repay) or fee + impact + slippage bound
    (a combined plan: the wallet's capital plus its deleverage's)."""
    if isinstance(plan, TopUpPlan | RepayPlan):
        return plan.value_base
    return plan.capital_base + plan.cost_base


def _loss(plan: ProtectionPlan) -> int:
    """Value lost to the market: nothing for a top-up or a repay."""
    return 0 if isinstance(plan, TopUpPlan | RepayPlan) else plan.cost_base


def _reaches(plan: ProtectionPlan, target_hf_wad: int | None) -> bool:
    if plan.capped_by is not None:
        return False
    return target_hf_wad is None or plan.hf_expected_wad >= target_hf_wad


def _hf(v: int) -> float | None:
    return None if v >= 2**255 else v / WAD


def _usd(base: int) -> str:
    return f"${base / AAVE_BASE_UNIT_USD:,.2f}"


def _why_not(plan: ProtectionPlan, chosen: ProtectionPlan, target_hf_wad: int | None) -> str:
    if not _reaches(plan, target_hf_wad):
        if plan.capped_by is not None:
            return f"does not reach the target (capped by {plan.capped_by})"
        return f"does not reach the target (health factor {_hf(plan.hf_expected_wad) or 0:.4f})"
    if _loss(plan) > _loss(chosen):
        return (
            f"loses {_usd(_loss(plan))} to the market (fee, price impact, slippage bound)"
            f" where {_action(chosen)} loses {_usd(_loss(chosen))}"
        )
    return f"commits {_usd(_cost(plan))} vs {_usd(_cost(chosen))} for {_action(chosen)}"


def choose_protection(
    topup: TopUpPlan | None,
    repay: RepayPlan | None,
    *,
    deleverage: _Deleverage | None = None,
    target_hf_wad: int | None = None,
    combined: _Deleverage | None = None,
) -> tuple[ProtectionPlan | None, dict[str, Any]]:
    """Pick the protection among the plans the Safe can pay for (any may be ``None``).

    A plan reaches the target when it is not capped (wallet, session cap, debt, collateral,
    floor steps) and its expected health factor is at least ``target_hf_wad`` (defaults to the
    repay plan's target). Among those that reach it, the least value lost to the market wins,
    then the least capital committed; ties go to the earlier of top-up, repay, deleverage,
    combined (``combined``: the wallet's part first, then a deleverage for the rest). When
    none reaches it, the one ending at the highest health factor wins (cheaper on a tie).
    Returns ``(chosen, comparison)``; ``comparison`` is JSON-ready for the proposal record and
    says for every alternative what it costs and why it lost.
    """
    if target_hf_wad is None and repay is not None:
        target_hf_wad = repay.target_hf_wad
    options: list[ProtectionPlan] = [
        p for p in (topup, repay, deleverage, combined) if p is not None
    ]
    comparison: dict[str, Any] = {
        "target_health_factor": None if target_hf_wad is None else target_hf_wad / WAD,
        "options": [],
        "chosen": None,
        "reason": "",
    }
    if not options:
        comparison["reason"] = "no plan: no top-up, repayment or deleverage could be planned"
        return None, comparison
    reaching = [p for p in options if _reaches(p, target_hf_wad)]
    if reaching:
        chosen = min(reaching, key=lambda p: (_loss(p), _cost(p)))  # stable on ties
        others = [p for p in options if p is not chosen]
        if not others:
            reason = f"{_action(chosen)} is the only plan and reaches the target"
        elif len(reaching) == 1:
            reason = f"{_action(chosen)} reaches the target; " + "; ".join(
                f"{_action(o)} does not (capped by {o.capped_by or 'nothing'})" for o in others
            )
        else:
            rivals = [o for o in reaching if o is not chosen]
            reason = f"{_action(chosen)} reaches the target for {_usd(_cost(chosen))}" + "".join(
                f" vs {_usd(_cost(o))} for {_action(o)}" for o in rivals
            )
            if any(_loss(o) > _loss(chosen) for o in rivals):
                reason += " (a deleverage loses value to the market; it is the last resort)"
    else:
        chosen = max(options, key=lambda p: (p.hf_expected_wad, -_cost(p)))
        reason = (
            f"no plan reaches the target; {_action(chosen)} ends at the higher health factor"
            f" ({(_hf(chosen.hf_expected_wad) or float('inf')):.4f})"
        )
    comparison["options"] = [
        {
            "action": _action(p),
            "asset": p.asset.symbol,
            "amount": str(p.amount),
            "cost_usd": _cost(p) / AAVE_BASE_UNIT_USD,
            "value_lost_usd": _loss(p) / AAVE_BASE_UNIT_USD,
            "needed_usd": p.needed_value_base / AAVE_BASE_UNIT_USD,
            "health_factor_expected": _hf(p.hf_expected_wad),
            "reaches_target": _reaches(p, target_hf_wad),
            "capped_by": p.capped_by,
            "why_not": None if p is chosen else _why_not(p, chosen, target_hf_wad),
        }
        for p in options
    ]
    comparison["chosen"] = _action(chosen)
    comparison["reason"] = reason
    return chosen, comparison
