"""store → signals → policy for one evaluation time.

The runner's view of the middle of the pipeline: read the windows each signal needs from the
store (only what was known at the evaluation time), run the pure signal functions, and hand
their results to the pure policy. Hysteresis memory and the horizons already bought come from
the proposals journal, so they survive restarts like the spend ledger does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pandas as pd

from agent.collectors.onchain import ChainSnapshot, MarketLayout
from agent.config import Settings
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
from agent.signals.base import SignalResult
from agent.signals.beta import s8_beta
from agent.signals.funding import s3_funding_spike
from agent.signals.liquidations import s5_liquidations
from agent.signals.macro import macro_prints_from_observations, s2_macro_rising
from agent.signals.rates import ReserveRates, s4_rate_differential
from agent.signals.technical import s7_technical
from agent.signals.tvl import s1_tvl_drawdown
from agent.signals.volatility import s6_collateral_volatility
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


def gather_signals(
    store: Store, settings: Settings, layout: MarketLayout, at: int
) -> list[SignalResult]:
    cfg = settings.signals
    ts = pd.Timestamp(at, unit="s", tz="UTC")
    since = at - int(LOOKBACK.total_seconds())
    watch = settings.watch
    stored = set(store.keys())
    results: list[SignalResult] = []

    tvl_keys = {f"{layout.protocol}.{layout.chain}": f"tvl.{layout.protocol}.{layout.chain}"}
    tvl_keys |= {f"{p}": f"tvl.{p}.total" for p in watch.protocols if f"tvl.{p}.total" in stored}
    results += s1_tvl_drawdown(
        {subj: _series(store, k, at, since) for subj, k in tvl_keys.items()}, ts, cfg.s1
    )

    prints = {
        name: macro_prints_from_observations(store.observations(f"macro.{name}", known_by=at))
        for name in ("cpi", "ppi")
    }
    results += s2_macro_rising({k: v for k, v in prints.items() if len(v)}, ts, cfg.s2)

    funding = {
        k.removeprefix("funding."): _series(store, k, at, since) for k in _keys(stored, "funding.")
    }
    results += s3_funding_spike(funding, ts, cfg.s3)

    reserves: dict[str, ReserveRates] = {}
    for key in _keys(stored, "rate."):
        prefix, _, field = key.rpartition(".")
        asset = prefix.rsplit(".", 1)[-1]
        if asset.upper() not in {s.upper() for s in watch.stablecoins}:
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
    results += s4_rate_differential(
        {k.removeprefix("rate."): v for k, v in reserves.items()}, ts, cfg.s4
    )

    liquidations = {
        k.removeprefix("liquidations."): _series(store, k, at, since)
        for k in _keys(stored, "liquidations.")
    }
    results += s5_liquidations(liquidations, ts, cfg.s5)

    assets = [a.lower() for a in watch.collateral_assets]
    prices = {a: _series(store, f"price.{a}.usd", at, since) for a in assets}
    results += s6_collateral_volatility(prices, ts, cfg.s6)
    closes = {a: _series(store, f"close.{a}", at, since) for a in assets}
    results += s7_technical(closes, ts, cfg.s7)
    results += s8_beta(closes, _series(store, "close.spx", at, since), ts, cfg.s8)
    return results


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

    def topups(self) -> tuple[TopUpAction, ...]:
        return self.decision.topups()

    def options(self) -> tuple[OptionAction, ...]:
        return self.decision.options()

    def explain(self) -> list[str]:
        return explain_lines(self.decision)

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
        return {
            "action_key": action_key,
            "severity": self.decision.severity or 0.0,
            "at": self.decision.at,
            "session_id": self.session_id,
            "horizon": horizon,
        }

    def sizing(self, spend_usd: float, spent_before_usd: Decimal) -> dict[str, Any]:
        """``spent_before_usd`` is the ledger at this proposal (earlier proposals of the same
        tick included), not the decision's start-of-tick figure."""
        d = self.decision
        before = float(spent_before_usd)
        return {
            "spend_usd": spend_usd,
            "session_id": self.session_id,
            "session_cap_usd": float(d.session_cap_usd),
            "session_spent_before_usd": before,
            "session_remaining_after_usd": max(0.0, float(d.session_cap_usd) - before - spend_usd),
            "priority": d.priority,
            "size_fraction": str(d.size_fraction),
            "defined_risk_budget_usd": float(d.budget_usd),
            "open_layers_usd": float(d.open_layers_usd),
            "budget_room_usd": float(d.budget_room_usd),
            "budget_frees_next": d.budget_frees_next,
        }


def evaluate(
    store: Store,
    settings: Settings,
    layout: MarketLayout,
    snap: ChainSnapshot,
    journal_records: Iterable[dict[str, Any]],
) -> Evaluation:
    at = snap.timestamp
    session_id = session_id_for(at)
    signals = gather_signals(store, settings, layout, at)
    account = settings.position.account or (layout.accounts[0] if layout.accounts else None)
    position = None
    if account is not None and account in snap.accounts:
        a = snap.accounts[account]
        position = PositionSnapshot(
            account,
            a.total_collateral_base,
            a.total_debt_base,
            a.liquidation_threshold_bps,
            a.health_factor_wad,
        )
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
        position,
        session,
        settings.policy,
        pd.Timestamp(at, unit="s", tz="UTC"),
        memory,
        open_layers=open_layers,
        options_enabled=settings.options.enabled and settings.options.configured,
    )
    return Evaluation(decision, session_id)
