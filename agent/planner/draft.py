"""The plan stage of a proposal: one policy action becomes a frozen ``Draft``.

A draft holds everything decided before anything runs: the record's header (who, what, why),
the transactions as they will be signed (and the Safe transaction wrapping them), the sizing
against the session cap, the protection comparison (top-up, repay, deleverage) or the put's
terms, and what the simulation must read afterwards. A draft that could not be planned carries the reason instead of
transactions; it is still a proposal (the reviewer sees why nothing was proposed).

The session's spend cap is applied here, in :class:`SpendCap`, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, Decimal
from typing import Any, Literal

from agent.core.abi import load_abi
from agent.core.errors import AgentError, PlanningError
from agent.core.market import AccountState, ChainSnapshot, MarketLayout
from agent.core.multicall import Call, multicall
from agent.core.rpc import RpcClient
from agent.core.units import AAVE_BASE_UNIT_USD, WAD
from agent.planner.deleverage import (
    DeleveragePlan,
    Execution,
    plan_deleverage_onchain,
    plan_wallet_part,
)
from agent.planner.guardian import with_guardian_wallet
from agent.planner.options import OptionsPlannerConfig, PremiaV3Venue, plan_option_action
from agent.planner.repay import ProtectionPlan, RepayPlan, choose_protection, plan_repay
from agent.planner.safe import SafeTx, build_safe_tx
from agent.planner.topup import TopUpPlan, plan_topup
from agent.planner.tx import PlannedTx
from agent.planner.uniswap import UniswapVenue
from agent.policy import OptionAction, TopUpAction

ActionKind = Literal["collateral_top_up", "repay_debt", "deleverage", "option_put"]


def hf_float(v: int | None) -> float | None:
    """A health factor (wad) for the record; Aave's ``uint256.max`` (no debt) reads as None."""
    return None if v is None or v >= 2**255 else v / WAD


@dataclass(frozen=True)
class ProposalHeader:
    """What every proposal record starts with, known before planning."""

    id: str
    idempotency_key: str
    created_at: str  # ISO 8601, chain time of the tick
    chain: str
    chain_id: int
    block_number: int
    account: str
    explanation: tuple[str, ...]
    evidence: Mapping[str, Any]
    policy: Mapping[str, Any]
    warnings: tuple[str, ...] = ()  # data problems of the tick (a stale oracle feed)
    position: str = ""  # the configured position's name, when it has one


@dataclass(frozen=True)
class LayerBudget:
    """The open-layer budget B as the decision saw it: B, the open layers, the room left, and
    ``action_room_usd``, the share of that room the decision left for this action."""

    budget_usd: Decimal
    open_usd: Decimal
    room_usd: Decimal
    action_room_usd: Decimal
    frees_next: str = ""


@dataclass(frozen=True)
class SpendCap:
    """The session's hard cap, as the persisted ledger stands at this proposal (earlier
    proposals of the same tick included), and the open-layer budget's room for this action.
    Every spend a draft proposes passes through here."""

    session_id: str
    cap_usd: Decimal
    spent_usd: Decimal
    priority: str | None = None
    size_fraction: Decimal = Decimal(1)
    budget: LayerBudget | None = None

    @property
    def remaining_usd(self) -> Decimal:
        return max(Decimal(0), self.cap_usd - self.spent_usd)

    def limit(self, requested_usd: Decimal) -> Decimal:
        """Never past what the session still allows, whatever the action asked for."""
        return min(Decimal(requested_usd), self.remaining_usd)

    def refusal(self, spend_usd: Decimal) -> str | None:
        """Why ``spend_usd`` cannot be proposed (a plan's safety margin can pass what the
        decision sized), or None when it fits both the session cap and the open-layer room."""
        if spend_usd > self.remaining_usd:
            return "would exceed the session cap"
        if self.budget is not None and spend_usd > self.budget.action_room_usd:
            return f"would exceed the open-layer budget (room ${self.budget.action_room_usd:,})"
        return None

    def admits(self, spend_usd: Decimal) -> bool:
        return self.refusal(spend_usd) is None

    def sizing(self, spend_usd: float) -> dict[str, Any]:
        before = float(self.spent_usd)
        cap = float(self.cap_usd)
        out: dict[str, Any] = {
            "spend_usd": spend_usd,
            "session_id": self.session_id,
            "session_cap_usd": cap,
            "session_spent_before_usd": before,
            "session_remaining_after_usd": max(0.0, cap - before - spend_usd),
            "priority": self.priority,
            "size_fraction": str(self.size_fraction),
        }
        if self.budget is not None:
            out |= {
                "defined_risk_budget_usd": float(self.budget.budget_usd),
                "open_layers_usd": float(self.budget.open_usd),
                "budget_room_usd": float(self.budget.room_usd),
                "budget_frees_next": self.budget.frees_next,
            }
        return out


@dataclass(frozen=True)
class PutCheck:
    """What the simulation reports for a put: planned size against the position held after."""

    planned_size: int
    quote_decimals: int


@dataclass(frozen=True)
class SwapCheck:
    """What the simulation reports for a deleverage: the swaps' planned input and minimum
    output, against what the pools' ``Swap`` events say they paid."""

    amount_in: int  # collateral token units sold, all steps
    min_out: int  # amountOutMinimum summed over the steps (what the batch repays)
    collateral_decimals: int
    debt_decimals: int
    oracle_price_wad: int  # collateral price in the debt asset (oracle), whole tokens


@dataclass(frozen=True)
class Draft:
    header: ProposalHeader
    action: ActionKind
    transactions: tuple[PlannedTx, ...] = ()
    error: str | None = None  # set when planning failed (then there are no transactions)
    sizing: Mapping[str, Any] | None = None
    comparison: Mapping[str, Any] | None = None  # every protection alternative, why it lost
    deleverage: Mapping[str, Any] | None = None  # the swap: quote, minimum out, price, impact
    option: Mapping[str, Any] | None = None  # the put's pool, strike, size, premium, limit
    safe_tx: SafeTx | None = None
    spend_usd: Decimal = Decimal(0)  # what the ledger records if the proposal stands
    target_hf_wad: int | None = None
    label: str = ""  # names the simulated execution
    reads: tuple[Call, ...] = ()  # read on the fork after execution
    put: PutCheck | None = None
    swap: SwapCheck | None = None
    # who sends ``transactions``: None the account itself (or its Safe, as a batch); else the
    # guardian, from its own wallet, onBehalfOf the account
    sender: str | None = None

    @property
    def planned(self) -> bool:
        return self.error is None


def failed(header: ProposalHeader, action: ActionKind, reason: str, **extra: Any) -> Draft:
    return Draft(header=header, action=action, error=reason, **extra)


def as_safe_batch(draft: Draft, multisend_call_only: str) -> Draft:
    """The Safe transaction the owners sign: the draft's calls in one ``MultiSendCallOnly``
    batch (or the single call itself)."""
    if not draft.planned:
        return draft
    st = build_safe_tx(draft.header.account, multisend_call_only, draft.transactions)
    return replace(draft, safe_tx=st)


# -- protection: a collateral top-up, a debt repay or a deleverage -----------------------------


@dataclass(frozen=True)
class DeleverageConfig:
    """The DEX a deleverage swaps through and its bounds (``[uniswap]`` in the config)."""

    venue: UniswapVenue
    hf_floor_wad: int  # no step may take the health factor below this before its repay
    slippage_bps: int  # amountOutMinimum = quote x (1 - bps / 1e4), a batch waiting for signers
    # A batch executed at once (autonomous execution) lands within a block or two: its bound
    # only has to cover that, and every bp of it sells about 2 bps more collateral.
    immediate_slippage_bps: int = 3
    execution: Execution = "signers"

    @property
    def bound_bps(self) -> int:
        """The slippage bound for how soon the batch executes."""
        return self.immediate_slippage_bps if self.execution == "immediate" else self.slippage_bps


@dataclass(frozen=True)
class ProtectionConfig:
    topup_asset: str  # also the collateral a deleverage sells
    repay_asset: str | None  # also the debt a deleverage repays
    deleverage: DeleverageConfig | None = None  # None: no DEX configured
    # An autonomous position with [guardian]: its top-up and repay are the guardian's, sized
    # from the guardian's wallet (the Safe's own wallet usually holds nothing)
    guardian: str | None = None


def spend_base(plan: ProtectionPlan) -> int:
    """What the session ledger counts: the capital of a top-up or a repay; for a deleverage,
    which commits no new capital, the most it can lose (fee + impact + slippage bound); for a
    combined plan, the wallet's capital plus its deleverage's cost."""
    if isinstance(plan, DeleveragePlan):
        return plan.capital_base + plan.cost_base
    return plan.value_base


def _action(plan: ProtectionPlan) -> ActionKind:
    if isinstance(plan, RepayPlan):
        return "repay_debt"
    if isinstance(plan, TopUpPlan):
        return "collateral_top_up"
    return "deleverage"


async def _plan_deleverage(
    header: ProposalHeader,
    snap: ChainSnapshot,
    layout: MarketLayout,
    target_hf_wad: int,
    cfg: ProtectionConfig,
    reader: RpcClient | None,
    *,
    wallet_first: bool = False,
    max_spend_base: int | None = None,
) -> DeleveragePlan:
    """Sell the position's collateral (``topup_asset``) for its debt (``repay_asset``) through
    the configured Uniswap V3 venue, quoted on ``reader`` (the fork while a sequence runs).
    ``wallet_first`` plans the combined plan: the wallet's repay and top-up first (within
    ``max_spend_base``), the deleverage for the rest."""
    d = cfg.deleverage
    if d is None:
        raise PlanningError("no DEX configured ([uniswap] in the config)")
    if not cfg.repay_asset:
        raise PlanningError("no debt asset configured (position.repay_asset)")
    if reader is None:
        raise PlanningError("no chain to quote the swap on")
    collateral = layout.reserve(cfg.topup_asset)
    debt = layout.reserve(cfg.repay_asset)
    try:
        c_state, d_state = snap.reserves[collateral.symbol], snap.reserves[debt.symbol]
    except KeyError as exc:
        raise PlanningError(f"no reserve data for {exc} in this tick") from None
    account = snap.accounts[header.account]
    wallet = None
    if wallet_first:
        wallet = plan_wallet_part(
            layout=layout, account_addr=header.account, account=account,
            collateral=collateral, collateral_reserve=c_state, debt=debt, debt_reserve=d_state,
            target_hf_wad=target_hf_wad, max_spend_base=max_spend_base,
        )  # fmt: skip
    return await plan_deleverage_onchain(
        reader,
        layout=layout,
        venue=d.venue,
        account_addr=header.account,
        account=account,
        collateral=collateral,
        collateral_reserve=c_state,
        debt=debt,
        debt_reserve=d_state,
        target_hf_wad=target_hf_wad,
        hf_floor_wad=d.hf_floor_wad,
        slippage_bps=d.bound_bps,
        execution=d.execution,
        wallet=wallet,
    )


def _fits(
    plan: DeleveragePlan | None, name: str, max_spend_base: int, cap: SpendCap, errors: list[str]
) -> DeleveragePlan | None:
    """The plan when its ledger spend (what a deleverage can lose, plus a combined plan's
    wallet capital) fits the session cap and the open-layer room like any other spend."""
    if plan is None:
        return None
    spend = spend_base(plan)
    if spend > max_spend_base:
        errors.append(
            f"{name}: its cost ${spend / AAVE_BASE_UNIT_USD:,.2f} would exceed"
            f" the ${max_spend_base / AAVE_BASE_UNIT_USD:,.2f} the session cap still allows"
        )
        return None
    if why := cap.refusal(Decimal(spend) / AAVE_BASE_UNIT_USD):
        errors.append(f"{name}: {why}")
        return None
    return plan


async def plan_protection(
    header: ProposalHeader,
    snap: ChainSnapshot,
    layout: MarketLayout,
    action: TopUpAction,
    cap: SpendCap,
    cfg: ProtectionConfig,
    reader: RpcClient | None = None,
) -> Draft:
    """Plan every protection the Safe can pay for (a top-up, a repay, a deleverage through the
    DEX, and when the wallet holds part of what is needed, the wallet's repay or top-up first
    with a deleverage for the rest, in one batch), each sized to the action's target health
    factor within the cap, and draft the one :func:`choose_protection` picks. ``reader`` is where the deleverage's swap is quoted (the
    fork while a sequence runs). What could not be planned, and why, is listed in the
    comparison's ``not_planned``."""
    kind: ActionKind = "collateral_top_up"
    account = snap.accounts.get(header.account)
    if account is None:
        return failed(header, kind, f"no account data for {header.account} in this tick")
    target = int(action.target_health_factor_wad)
    max_spend_base = int(cap.limit(Decimal(action.max_spend_usd)) * AAVE_BASE_UNIT_USD)
    errors: list[str] = []
    topup: TopUpPlan | None = None
    repay: RepayPlan | None = None
    deleverage: DeleveragePlan | None = None
    combined: DeleveragePlan | None = None
    wallet: AccountState | None = account
    if cfg.guardian is not None:
        try:
            wallet = await _guardian_wallet(snap, layout, account, cfg, reader)
        except AgentError as exc:
            errors.append(f"guardian: {exc}")
            wallet = None
    try:
        asset = layout.reserve(cfg.topup_asset)
        if wallet is None:
            raise PlanningError("the guardian's wallet could not be read")
        topup = plan_topup(
            layout=layout,
            account_addr=header.account,
            account=wallet,
            asset=asset,
            reserve=snap.reserves[asset.symbol],
            target_hf_wad=target,
            max_spend_base=max_spend_base,
            allowance=wallet.pool_allowances.get(asset.symbol, 0),
        )
    except (PlanningError, KeyError) as exc:
        errors.append(f"top-up: {exc}")
    if cfg.repay_asset:
        try:
            debt = layout.reserve(cfg.repay_asset)
            if wallet is None:
                raise PlanningError("the guardian's wallet could not be read")
            repay = plan_repay(
                layout=layout,
                account_addr=header.account,
                account=wallet,
                asset=debt,
                reserve=snap.reserves[debt.symbol],
                target_hf_wad=target,
                max_spend_base=max_spend_base,
            )
        except (PlanningError, KeyError) as exc:
            errors.append(f"repay: {exc}")
    try:
        deleverage = await _plan_deleverage(header, snap, layout, target, cfg, reader)
    except AgentError as exc:
        errors.append(f"deleverage: {exc}")
    # The wallet first, a deleverage for the rest: when the wallet holds some of the debt asset
    # or the collateral, and neither the repay nor the top-up reaches the target on its own
    # (one of them is then the plan, at no loss to the market).
    holds = any(
        account.wallet_balances.get(sym, 0) > 0 for sym in (cfg.repay_asset, cfg.topup_asset) if sym
    )
    if (
        holds
        and cfg.deleverage is not None
        and not any(p is not None and p.capped_by is None for p in (topup, repay))
    ):
        try:
            combined = await _plan_deleverage(
                header, snap, layout, target, cfg, reader,
                wallet_first=True, max_spend_base=max_spend_base,
            )  # fmt: skip
            if spend_base(combined) > max_spend_base and combined.capital_base > 0:
                # The cap binds: leave room for the deleverage's cost under it (twice the cost
                # planned with the whole cap: the larger deleverage costs a little more).
                room = max_spend_base - 2 * combined.cost_base
                if room > 0:
                    combined = await _plan_deleverage(
                        header, snap, layout, target, cfg, reader,
                        wallet_first=True, max_spend_base=room,
                    )  # fmt: skip
        except AgentError as exc:
            errors.append(f"wallet first, then deleverage: {exc}")
    # A plan's safety margin can pass what the decision sized: each candidate's ledger spend
    # must fit the session cap and the open-layer room (a deleverage is a protective layer too).
    if topup is not None and (why := cap.refusal(Decimal(spend_base(topup)) / AAVE_BASE_UNIT_USD)):
        topup = None
        errors.append(f"top-up: {why}")
    if repay is not None and (why := cap.refusal(Decimal(spend_base(repay)) / AAVE_BASE_UNIT_USD)):
        repay = None
        errors.append(f"repay: {why}")
    deleverage = _fits(deleverage, "deleverage", max_spend_base, cap, errors)
    combined = _fits(combined, "wallet first, then deleverage", max_spend_base, cap, errors)
    plan, comparison = choose_protection(
        topup, repay, deleverage=deleverage, target_hf_wad=target, combined=combined
    )
    comparison = comparison | {"not_planned": errors}
    if plan is None:
        return failed(
            header, kind, "; ".join(errors) or "no protection plan", comparison=comparison
        )
    chosen = _action(plan)
    spend_usd = Decimal(spend_base(plan)) / AAVE_BASE_UNIT_USD
    sizing = cap.sizing(float(spend_usd)) | {
        "amount": str(plan.amount),
        "asset": plan.asset.symbol,
        "capped_by": plan.capped_by,
        "needed_value_usd": plan.needed_value_base / AAVE_BASE_UNIT_USD,
        "expected_health_factor": hf_float(plan.hf_expected_wad),
    }
    swap: SwapCheck | None = None
    if isinstance(plan, DeleveragePlan):
        swap = SwapCheck(
            amount_in=plan.amount,
            min_out=plan.min_out,
            collateral_decimals=plan.asset.decimals,
            debt_decimals=plan.debt_asset.decimals,
            oracle_price_wad=plan.oracle_price_wad,
        )
    return Draft(
        header=header,
        action=chosen,
        transactions=tuple(plan.transactions),
        sizing=sizing,
        comparison=comparison,
        deleverage=plan.swap_summary() if isinstance(plan, DeleveragePlan) else None,
        spend_usd=spend_usd,
        target_hf_wad=target,
        label=f"{plan.action if isinstance(plan, DeleveragePlan) else chosen} {plan.asset.symbol}",
        swap=swap,
        sender=None if isinstance(plan, DeleveragePlan) else cfg.guardian,
    )


async def _guardian_wallet(
    snap: ChainSnapshot,
    layout: MarketLayout,
    account: AccountState,
    cfg: ProtectionConfig,
    reader: RpcClient | None,
) -> AccountState:
    """The Safe's position paid from the guardian's wallet: its balances and Pool allowances of
    the top-up and repay assets, in one Multicall3 read (on the fork while a sequence runs, so
    an earlier action of the tick is seen)."""
    assert cfg.guardian is not None
    if reader is None:
        raise PlanningError("no RPC to read the guardian's wallet")
    erc20 = load_abi("ERC20")
    calls: list[Call] = []
    for sym in dict.fromkeys(s for s in (cfg.topup_asset, cfg.repay_asset) if s):
        if sym not in snap.reserves:
            continue
        token = layout.reserve(sym).asset
        calls.append(Call(f"bal:{sym}", token, erc20, "balanceOf", (cfg.guardian,)))
        calls.append(Call(f"allow:{sym}", token, erc20, "allowance", (cfg.guardian, layout.pool)))
    out, failures = await multicall(reader, calls, address=layout.multicall3)
    if failures:
        raise PlanningError("; ".join(f.reason for f in failures))
    bal = {t[4:]: int(v[0]) for t, v in out.items() if t.startswith("bal:")}
    allow = {t[6:]: int(v[0]) for t, v in out.items() if t.startswith("allow:")}
    return with_guardian_wallet(account, bal, allow)


# -- deeper out-of-the-money puts -------------------------------------------------------------


@dataclass(frozen=True)
class PutConfig:
    venue: PremiaV3Venue | None  # None: no venue configured
    slippage_bps: int
    lot_wad: int
    underlying: str  # the reserve whose collateral bounds the put size


def exposure_contracts(
    snap: ChainSnapshot,
    layout: MarketLayout,
    account: str,
    underlying: str,
    collateral_base: int | None = None,
) -> int | None:
    """The position's collateral in units of the put's underlying (18 decimals): puts beyond
    it would be speculation, not protection. ``collateral_base`` replaces the account's own
    collateral when the puts hedge several positions (every chain's, in the same USD base)."""
    acct = snap.accounts.get(account)
    try:
        under = layout.reserve(underlying)
    except AgentError:
        return None
    price = snap.reserves.get(under.symbol)
    if price is None or price.price_base <= 0:
        return None
    if collateral_base is None:
        if acct is None:
            return None
        collateral_base = acct.total_collateral_base
    return collateral_base * WAD // price.price_base


async def plan_put(
    header: ProposalHeader,
    snap: ChainSnapshot,
    layout: MarketLayout,
    action: OptionAction,
    cap: SpendCap,
    cfg: PutConfig,
    reader: RpcClient,
    *,
    exposure_base: int | None = None,
) -> Draft:
    """Quote and draft a put purchase within the cap. ``reader`` is where the venue is read:
    the fork while a sequence of proposals runs, so each sees the ones before it."""
    kind: ActionKind = "option_put"
    venue = cfg.venue
    if venue is None:
        return failed(header, kind, "no options venue configured ([options] in the config)")
    budget = cap.limit(action.spend_usd)
    if budget < action.spend_usd:
        # Cents, rounded down: rounding must never take the budget past the cap.
        budget = budget.quantize(Decimal("0.01"), rounding=ROUND_DOWN)
        action = replace(action, spend_usd=budget)
    try:
        plan = await plan_option_action(
            reader,
            venue,
            action,
            account=header.account,
            now=snap.timestamp,
            config=OptionsPlannerConfig(slippage_bps=cfg.slippage_bps, lot=cfg.lot_wad),
            max_size=exposure_contracts(
                snap, layout, header.account, cfg.underlying, exposure_base
            ),
        )
    except PlanningError as exc:
        return failed(header, kind, f"put {action.horizon}: {exc}")
    scale = Decimal(10) ** venue.quote_decimals
    premium_usd = Decimal(plan.premium_quote) / scale  # premiumNet already includes the fee
    sizing = cap.sizing(float(premium_usd)) | {
        "horizon": action.horizon,
        "budget_usd": str(action.spend_usd),
        "premium_limit_usd": str(Decimal(plan.premium_limit) / scale),
    }
    reads = (
        Call("long", plan.pool.address, load_abi("PremiaPool"), "balanceOf", (header.account, 1)),
        Call("quote_balance", venue.quote, load_abi("ERC20"), "balanceOf", (header.account,)),
    )
    return Draft(
        header=header,
        action=kind,
        transactions=tuple(plan.transactions),
        sizing=sizing,
        option={k: v for k, v in plan.as_dict().items() if k != "transactions"},
        spend_usd=premium_usd,
        label=f"put {action.horizon}",
        reads=reads,
        put=PutCheck(planned_size=plan.size, quote_decimals=venue.quote_decimals),
    )
