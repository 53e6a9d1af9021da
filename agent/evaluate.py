"""store → signals → policy for one evaluation time.

The runner's view of the middle of the pipeline: read the windows each signal needs from the
store (only what was known at the evaluation time), run the pure signal functions, and hand
their results to the pure policy. Hysteresis memory and the horizons already bought come from
the proposals journal, so they survive restarts like the spend ledger does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd

from agent.config import Settings
from agent.core.market import ChainSnapshot, MarketLayout
from agent.core.units import WAD
from agent.guarding import GuardReport, evaluate_guard, is_guard_key
from agent.open_layers import open_layers_from_journal
from agent.policy import (
    Decision,
    MemoryEntry,
    OptionAction,
    PolicyMemory,
    PositionSnapshot,
    SessionState,
    TopUpAction,
    decide,
    session_id_for,
)
from agent.policy.explain import explain_lines
from agent.signals import SignalInputs, evaluate_signals
from agent.signals.base import SignalResult
from agent.signals.macro import macro_prints_from_observations
from agent.signals.rates import ReserveRates
from agent.store.sqlite import Store

# Longest trailing window any signal reads (S3/S4 z-scores over 30 days, S8 over 90 returns).
LOOKBACK = pd.Timedelta(days=140)


def _series(store: Store, key: str, at: int, since: int) -> pd.Series:
    s = store.series(key, since=since, until=at, known_by=at)
    latest = store.latest(key, known_by=at)
    if latest is not None:
        s.attrs["source"] = latest.source
    return s


def _keys(keys: Iterable[str], prefix: str) -> list[str]:
    return sorted(k for k in keys if k.startswith(prefix))


def signal_inputs(
    store: Store,
    settings: Settings,
    layout: MarketLayout | Sequence[MarketLayout],
    at: int,
) -> SignalInputs:
    """Every series the signals read, as known at ``at`` (nothing published later): the TVL
    of every watched market (one per chain), rates of every stored reserve."""
    since = at - int(LOOKBACK.total_seconds())
    watch = settings.watch
    stored = set(store.keys())
    layouts = (layout,) if isinstance(layout, MarketLayout) else tuple(layout)

    tvl_keys = {f"{m.protocol}.{m.chain}": f"tvl.{m.protocol}.{m.chain}" for m in layouts}
    tvl_keys |= {f"{p}": f"tvl.{p}.total" for p in watch.protocols if f"tvl.{p}.total" in stored}
    prints = {
        name: macro_prints_from_observations(store.observations(f"macro.{name}", known_by=at))
        for name in ("cpi", "ppi")
    }
    reserves: dict[str, ReserveRates] = {}
    stables = {s.upper() for s in watch.stablecoins}
    for key in _keys(stored, "rate."):
        prefix, _, field = key.rpartition(".")
        if prefix.rsplit(".", 1)[-1].upper() not in stables:
            continue
        r = reserves.get(prefix, ReserveRates())
        s = _series(store, key, at, since)
        if field == "supply_apy":
            r = ReserveRates(s, r.borrow_apy, r.utilisation)
        elif field == "borrow_apy":
            r = ReserveRates(r.supply_apy, s, r.utilisation)
        elif field == "utilization":
            r = ReserveRates(r.supply_apy, r.borrow_apy, s)
        reserves[prefix] = r
    assets = [a.lower() for a in watch.collateral_assets]
    closes = {a: _series(store, f"close.{a}", at, since) for a in assets}
    return SignalInputs(
        tvl_usd={subj: _series(store, k, at, since) for subj, k in tvl_keys.items()},
        macro_prints={k: v for k, v in prints.items() if len(v)},
        funding_apr={
            k.removeprefix("funding."): _series(store, k, at, since)
            for k in _keys(stored, "funding.")
        },
        reserve_rates={k.removeprefix("rate."): v for k, v in reserves.items()},
        liquidations_usd_per_hour={
            k.removeprefix("liquidations."): _series(store, k, at, since)
            for k in _keys(stored, "liquidations.")
        },
        hourly_prices={a: _series(store, f"price.{a}.usd", at, since) for a in assets},
        daily_closes=closes,
        beta_assets=closes,
        spx_closes=_series(store, "close.spx", at, since) if "close.spx" in stored else None,
    )


def gather_signals(
    store: Store, settings: Settings, layout: MarketLayout | Sequence[MarketLayout], at: int
) -> list[SignalResult]:
    """The signals at ``at`` through the driver the backtest uses."""
    inputs = signal_inputs(store, settings, layout, at)
    return evaluate_signals(inputs, pd.Timestamp(at, unit="s", tz="UTC"), settings.signals)


def memory_from_journal(
    records: Iterable[dict[str, Any]],
) -> tuple[PolicyMemory, dict[str, set[str]]]:
    """Hysteresis memory and horizons bought per session, from what was proposed before."""
    entries: dict[str, MemoryEntry] = {}
    horizons: dict[str, set[str]] = {}
    for r in records:
        pol = r.get("policy")
        if not isinstance(pol, dict) or r.get("status") in ("planning_failed",):
            continue
        entries[pol["action_key"]] = MemoryEntry(
            float(pol["severity"]),
            int(pol["at"]),
            str(pol["session_id"]),
            str(r["idempotency_key"]),
        )
        if pol.get("horizon"):
            horizons.setdefault(str(pol["session_id"]), set()).add(str(pol["horizon"]))
    return PolicyMemory().updated(entries), horizons


@dataclass(frozen=True)
class Evaluation:
    decision: Decision
    session_id: str
    # With several positions: their collateral together (USD base units, every chain), what
    # the one put ladder hedges; 0 on one chain (the buyer's own collateral bounds the puts).
    collateral_base: int = 0
    # every position's liquidation guard this tick (agent/guarding.py)
    guard: GuardReport = field(default_factory=GuardReport)

    def topups(self) -> tuple[TopUpAction, ...]:
        """The guard's protections first, then the layer's top-ups of the positions the guard
        does not protect this tick (both aim at a target HF: one protection per position)."""
        layer = tuple(
            a for a in self.decision.topups() if not self.guard.protects(a.account, a.chain)
        )
        return (*self.guard.actions(), *layer)

    def options(self) -> tuple[OptionAction, ...]:
        return self.decision.options()

    def actions(self) -> tuple[TopUpAction | OptionAction, ...]:
        return (*self.topups(), *self.options())

    def explain(self) -> list[str]:
        withheld = [
            f"layer top-up of {a.position or a.account} not proposed: the guard protects it "
            "(its proposal is made or pending)"
            for a in self.decision.topups()
            if self.guard.protects(a.account, a.chain)
        ]
        return explain_lines(self.decision) + self.guard.lines() + withheld

    def ledger_session(self, action: TopUpAction | OptionAction) -> str:
        """The spend-ledger session an action's spend is recorded under: the guard's own, or
        the layer rule's (the session cap's)."""
        view = self.guard.view_of(action.action_key)
        return self.session_id if view is None else view.ledger_session

    def summary(self) -> dict[str, Any]:
        return self.decision.summary()

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for r in self.decision.signals:
            d = r.as_dict()
            if any(i["source"].startswith("scenario:") for i in d["inputs"]):
                d["data_origin"] = "scenario"
            lines.append(d)
        return lines

    def evidence(self) -> dict[str, Any]:
        return {
            "trigger_paths": list(self.decision.trigger_paths),
            "families_firing": list(self.decision.families_firing),
            "gate_passed": self.decision.gate_passed,
            "priority": self.decision.priority,
            "signals": [r.as_dict() for r in self.decision.signals],
            "notes": list(self.decision.notes),
        }

    def policy_entry(self, action_key: str, horizon: str | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "action_key": action_key,
            "severity": self.decision.severity or 0.0,
            "at": self.decision.at,
            "session_id": self.session_id,
            "horizon": horizon,
        }
        view = self.guard.view_of(action_key) if is_guard_key(action_key) else None
        if view is not None:
            return entry | view.policy()
        paths = " and ".join(self.decision.trigger_paths) or "no trigger"
        return entry | {"reason": f"layer rule: {paths}, priority {self.decision.priority}"}


@dataclass(frozen=True)
class MarketRead:
    """One chain's market as a tick read it: the layout from start-up and the snapshot."""

    layout: MarketLayout
    snap: ChainSnapshot


def position_snapshots(
    settings: Settings, markets: Mapping[str, MarketRead]
) -> tuple[PositionSnapshot, ...]:
    """Every configured position, as its own chain's snapshot reports it. A position whose
    chain was not read this tick is left out (its protection waits for the next tick)."""
    views = settings.position_views()
    several = len(settings.chains) > 1
    out = []
    for v in views:
        m = markets.get(v.chain.name)
        if m is None:
            continue
        account = v.position.account or (m.layout.accounts[0] if m.layout.accounts else None)
        if account is None or account not in m.snap.accounts:
            continue
        a = m.snap.accounts[account]
        target = v.position.target_health_factor
        out.append(
            PositionSnapshot(
                account,
                a.total_collateral_base,
                a.total_debt_base,
                a.liquidation_threshold_bps,
                a.health_factor_wad,
                name=v.position.name or "",
                chain=v.chain.name if settings.multi_chain else "",
                target_health_factor_wad=None if target is None else int(target * WAD),
                key_scope=str(v.chain.chain_id) if several else "",
            )
        )
    return tuple(out)


def evaluate(
    store: Store,
    settings: Settings,
    layout: MarketLayout,
    snap: ChainSnapshot,
    journal_records: Iterable[dict[str, Any]],
    *,
    markets: Mapping[str, MarketRead] | None = None,
) -> Evaluation:
    """One decision for the tick. ``layout``/``snap`` are the first chain's (its block time is
    the evaluation time); with several chains ``markets`` holds every chain read this tick,
    and the positions on all of them share the decision's one budget."""
    at = snap.timestamp
    session_id = session_id_for(at)
    markets = dict(markets or {layout.chain: MarketRead(layout, snap)})
    signals = gather_signals(store, settings, [m.layout for m in markets.values()], at)
    positions = position_snapshots(settings, markets)
    records = list(journal_records)
    memory, horizons = memory_from_journal(records)
    open_layers = open_layers_from_journal(records, settings.policy.layer_hold_days)
    session = SessionState(
        session_id,
        Decimal(store.session_spent_usd(session_id)),
        frozenset(horizons.get(session_id, set())),
    )
    decision = decide(
        signals,
        positions,
        session,
        settings.policy,
        pd.Timestamp(at, unit="s", tz="UTC"),
        memory,
        open_layers=open_layers,
        options_enabled=_options_on(settings),
    )
    guard = evaluate_guard(
        settings,
        store,
        positions,
        {name: (m.layout, m.snap) for name, m in markets.items()},
        signals,
        records,
        at=at,
        session_id=session_id,
    )
    several = len(positions) > 1
    return Evaluation(
        decision, session_id, sum(p.collateral_base for p in positions) if several else 0, guard
    )


def _options_on(settings: Settings) -> bool:
    puts = settings.put_view()
    return puts is not None and puts.options.enabled and puts.options.configured
