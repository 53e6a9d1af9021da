"""The liquidation guard in the tick: every position's guard from the snapshot already read.

No upstream request: the position's account data and its collateral's oracle price come from
the tick's snapshot, the stress reading from the tick's signals, the guard's state from the
journal (its last proposal) and the store (the health factors stored since). The pure rules are
:mod:`agent.policy.guard`; this module only gathers their inputs and words the result.

The guard's spending goes into the same ledger and journal as the layer rule's, under its own
ledger session (``guard:<position key>:<UTC day>``), so the layer's session cap and the
open-layer budget B keep their meaning; a guard proposal's policy entry says ``guard`` and why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from agent.config import Settings
from agent.core.market import ChainSnapshot, MarketLayout
from agent.core.units import AAVE_BASE_UNIT_USD, WAD
from agent.pipeline.parts import Position
from agent.policy import PositionSnapshot, TopUpAction
from agent.policy.guard import (
    GuardConfig,
    GuardPrices,
    GuardState,
    GuardVerdict,
    effective_trigger,
    guard_prices,
    guard_room_usd,
    guard_topup,
    guard_verdict,
    state_since,
)
from agent.signals.base import SignalResult
from agent.store.ledger import ProposalLedger
from agent.store.sqlite import Store

GUARD_PREFIX = "guard:"


def is_guard_key(action_key: str) -> bool:
    return action_key.startswith(GUARD_PREFIX)


def _distance(bps: int) -> str:
    return f"{bps / 100:.2f}% below" if bps >= 0 else f"{-bps / 100:.2f}% above: past it"


def _usd(price_base: int) -> str:
    return f"${price_base / AAVE_BASE_UNIT_USD:,.2f}"


@dataclass(frozen=True)
class GuardView:
    """One position's guard at this tick."""

    position: PositionSnapshot
    asset: str  # the collateral symbol the prices are for
    cfg: GuardConfig
    verdict: GuardVerdict
    prices: GuardPrices | None
    ledger_session: str  # the guard's spend-ledger session of this position today
    spent_usd: Decimal  # what the guard spent in it before this tick
    action: TopUpAction | None
    note: str = ""

    @property
    def label(self) -> str:
        return self.position.label

    def lines(self) -> list[str]:
        p, v = self.position, self.verdict
        who = f"{p.label} ({p.account} on {p.chain})" if p.chain else p.label
        out = [f"{who}: {v.reason}"]
        if self.prices is not None:
            g = self.prices
            out.append(
                f"  {self.asset} {_usd(g.price)}: liquidation price {_usd(g.liquidation_price)} "
                f"({g.liquidation_distance_bps / 100:.2f}% below), guard price "
                f"{_usd(g.guard_price)} at HF {v.trigger.trigger_hf_wad / WAD:g} "
                f"({_distance(g.guard_distance_bps)})"
            )
        out.append(
            f"  guard budget ${self.cfg.budget_usd:,} per day: spent ${self.spent_usd:,} "
            f"(ledger {self.ledger_session})"
        )
        if self.action is not None:
            a = self.action
            out.append(
                f"  guard protection to HF {a.target_health_factor_wad / WAD:g}: needs "
                f"{a.required_collateral_base} base (${a.required_collateral_usd:,}) of top-up or "
                f"the repay/deleverage to the same HF; top-up/repay spend up to "
                f"${a.max_spend_usd:,} [key {a.idempotency_key}]"
            )
        if self.note:
            out.append(f"  {self.note}")
        return out

    def policy(self) -> dict[str, Any]:
        """What the journal keeps about a guard proposal (the state a restart rebuilds)."""
        v = self.verdict
        return {
            "guard": {
                "kind": v.kind,
                "critical": v.critical,
                "health_factor_wad": str(v.health_factor_wad),
                "trigger_hf_wad": str(v.trigger.trigger_hf_wad),
                "stressed": v.trigger.stressed,
                "target_hf_wad": str(self.cfg.target_hf_wad),
                "budget_usd": str(self.cfg.budget_usd),
                "ledger_session": self.ledger_session,
                "spent_before_usd": str(self.spent_usd),
            },
            "reason": v.reason,
        }


@dataclass(frozen=True)
class GuardReport:
    views: tuple[GuardView, ...] = ()

    def actions(self) -> tuple[TopUpAction, ...]:
        return tuple(v.action for v in self.views if v.action is not None)

    def view_of(self, action_key: str) -> GuardView | None:
        return next(
            (v for v in self.views if v.action is not None and v.action.action_key == action_key),
            None,
        )

    def protects(self, account: str, chain: str) -> bool:
        """The guard has this position's protection in hand: it proposes it this tick, or its
        proposal is pending (until HF re-arms it). The layer's top-up would aim at the same
        HF a second time, so it is withheld."""
        return any(
            v.position.account.lower() == account.lower()
            and v.position.chain == chain
            and (v.action is not None or v.verdict.state.pending)
            for v in self.views
        )

    def critical(self) -> tuple[GuardView, ...]:
        return tuple(v for v in self.views if v.verdict.critical)

    def lines(self) -> list[str]:
        if not self.views:
            return []
        out = ["liquidation guard (each position's own health factor, every tick):"]
        for v in self.views:
            out += [f"  {line}" for line in v.lines()]
        return out


def _ledger_session(p: PositionSnapshot, session_id: str) -> str:
    scope = f"{p.key_scope}:" if p.key_scope else ""
    return f"{GUARD_PREFIX}{scope}{p.account.lower()}:{session_id}"


def last_guard_proposals(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """Per guard action key, the HF (wad) and time of its latest proposal in the journal."""
    out: dict[str, tuple[int, int]] = {}
    for r in records:
        pol = r.get("policy")
        if not isinstance(pol, dict) or not is_guard_key(str(pol.get("action_key", ""))):
            continue
        g = pol.get("guard") or {}
        try:
            hf, at = int(g["health_factor_wad"]), int(pol["at"])
        except (KeyError, TypeError, ValueError):
            continue
        key = str(pol["action_key"])
        if key not in out or at >= out[key][1]:
            out[key] = (hf, at)
    return out


def _highest_hf_since(store: Store, account: str, since: int, at: int) -> int | None:
    s = store.series(f"position.{account}.health_factor", since=since + 1, until=at, known_by=at)
    if not len(s):
        return None
    return int(Decimal(repr(float(s.max()))) * WAD)


def _state(
    store: Store,
    cfg: GuardConfig,
    p: PositionSnapshot,
    trigger_hf_wad: int,
    last: tuple[int, int] | None,
    at: int,
) -> GuardState:
    if last is None:
        return GuardState()
    hf, last_at = last
    return state_since(
        cfg, hf, last_at, _highest_hf_since(store, p.account, last_at, at - 1), trigger_hf_wad
    )


def _collateral(
    position: Position, markets: Mapping[str, tuple[MarketLayout, ChainSnapshot]]
) -> tuple[str, int | None]:
    """The position's collateral symbol and the oracle price of it."""
    read = markets.get(position.chain.name)
    if read is None:
        return position.topup_asset, None
    layout, snap = read
    try:
        symbol = layout.reserve(position.topup_asset).symbol
    except Exception:  # an unlisted asset: no price, the guard still runs on the HF
        return position.topup_asset, None
    r = snap.reserves.get(symbol)
    return symbol, None if r is None else r.price_base


def evaluate_guard(
    settings: Settings,
    store: Store,
    positions: Sequence[tuple[Position, PositionSnapshot]],
    markets: Mapping[str, tuple[MarketLayout, ChainSnapshot]],
    signals: Sequence[SignalResult],
    records: Iterable[Mapping[str, Any]],
    *,
    ledger: ProposalLedger,
    at: int,
    session_id: str,
) -> GuardReport:
    """Every position's guard at ``at`` (the tick's chain time); each position with its
    snapshot this tick."""
    firing = {r.id for r in signals if r.firing}
    lasts = last_guard_proposals(records)
    views = []
    for position, p in positions:
        asset, price = _collateral(position, markets)
        cfg = position.guard or settings.guard.record(None)
        trigger = effective_trigger(cfg, firing)
        scope = f"{p.key_scope}:" if p.key_scope else ""
        akey = f"{GUARD_PREFIX}{scope}{p.account.lower()}"
        state = _state(store, cfg, p, trigger.trigger_hf_wad, lasts.get(akey), at)
        verdict = guard_verdict(cfg, state, p.health_factor_wad, trigger, at)
        guard_session = _ledger_session(p, session_id)
        spent = Decimal(ledger.session_spent_usd(guard_session))
        action = guard_topup(p, cfg, verdict, guard_room_usd(cfg, spent), session_id)
        note = ""
        if verdict.propose and action is None:
            note = "no guard proposal: the position is already at its guard target"
        elif action is not None and action.max_spend_usd < action.required_collateral_usd:
            note = (
                f"the guard budget left (${action.max_spend_usd:,}) is below what a top-up or "
                "repay to the target needs; a deleverage (the position's own collateral) can"
                " still reach it"
            )
        prices = None if price is None else guard_prices(p, price, trigger.trigger_hf_wad)
        views.append(GuardView(p, asset, cfg, verdict, prices, guard_session, spent, action, note))
    return GuardReport(tuple(views))
