"""store → signals → policy for one evaluation time.

The runner's view of the middle of the pipeline: read the windows each signal needs from the
store (only what was known at the evaluation time), run the pure signal functions, and hand
their results to the pure policy. Hysteresis memory and the horizons already bought come from
the proposals journal, so they survive restarts like the spend ledger does.

One clock per tick: the evaluation time is the latest block time among the chains read this
tick (:func:`evaluation_time`; chain time, not the host's clock, so a devnet's warped time is
the market's time), and the session day follows from it. Each chain's own series (its TVL,
reserve rates, liquidations) are read as known at that chain's own block time, so a chain whose
clock runs ahead or behind another still has its newest observations used.
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
from agent.pipeline.guarding import GuardReport, evaluate_guard, is_guard_key
from agent.pipeline.open_layers import open_layers_from_journal
from agent.pipeline.parts import Position
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
from agent.store.ledger import ProposalLedger
from agent.store.sqlite import Store

_PER_CHAIN = ("tvl", "rate", "liquidations")

# Longest trailing window any signal reads (S3/S4 z-scores over 30 days, S8 over 90 returns).
LOOKBACK = pd.Timedelta(days=140)


def _read(store: Store, key: str, at: int, since: int) -> pd.Series:
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
    *,
    chain_at: Mapping[str, int] | None = None,
) -> SignalInputs:
    """Every series the signals read, as known at ``at`` (nothing published later): the TVL
    of every watched market (one per chain), rates of every stored reserve. A series of one
    chain (``<kind>.<protocol>.<chain>...``) is read as known at that chain's own time
    ``chain_at[chain]`` (default ``at``)."""
    watch = settings.watch
    stored = set(store.keys())
    layouts = (layout,) if isinstance(layout, MarketLayout) else tuple(layout)
    own = dict(chain_at or {})

    def _series(store: Store, key: str, at_: int, _since: int) -> pd.Series:
        # a chain's own series (tvl|rate|liquidations.<protocol>.<chain>...) at its own time
        kind, _, rest = key.partition(".")
        chain = rest.split(".")[1] if kind in _PER_CHAIN and rest.count(".") >= 1 else ""
        t = own.get(chain, at_)
        return _read(store, key, t, t - int(LOOKBACK.total_seconds()))

    since = at - int(LOOKBACK.total_seconds())

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
        entries[_scoped(str(pol["action_key"]), r.get("chain_id"))] = MemoryEntry(
            float(pol["severity"]),
            int(pol["at"]),
            str(pol["session_id"]),
            str(r["idempotency_key"]),
        )
        if pol.get("horizon"):
            horizons.setdefault(str(pol["session_id"]), set()).add(str(pol["horizon"]))
    return PolicyMemory().updated(entries), horizons


def _scoped(action_key: str, chain_id: object) -> str:
    """A top-up's action key with its chain: ``topup:<chain id>:<account>``. Records written
    before the chain was part of every key hold ``topup:<account>`` (single-chain journals);
    they are read as their record's chain's (a one-time alias: every record written now
    carries the chain), so upgrading keeps their hysteresis and once-per-session memory."""
    kind, _, rest = action_key.partition(":")
    if kind == "topup" and ":" not in rest and chain_id is not None:
        return f"topup:{chain_id}:{rest}"
    return action_key


@dataclass(frozen=True)
class Evaluation:
    decision: Decision
    session_id: str
    # With several positions: their collateral together (USD base units, every chain), what
    # the one put ladder hedges; 0 on one chain (the buyer's own collateral bounds the puts).
    collateral_base: int = 0
    # every position's liquidation guard this tick (agent/pipeline/guarding.py)
    guard: GuardReport = field(default_factory=GuardReport)
    at: int = 0  # the evaluation time (unix s): the latest block time among the chains read

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


def clock_snapshot(markets: Mapping[str, MarketRead]) -> ChainSnapshot:
    """The snapshot that sets the tick's clock: the latest block time among the chains read
    (the tick reports and logs this chain's block, so its block and time agree)."""
    return max((m.snap for m in markets.values()), key=lambda s: s.timestamp)


def evaluation_time(markets: Mapping[str, MarketRead]) -> int:
    """The tick's one evaluation time: the latest block time among the chains read."""
    return clock_snapshot(markets).timestamp


def position_snapshots(
    positions: Iterable[Position], markets: Mapping[str, MarketRead]
) -> tuple[PositionSnapshot, ...]:
    """Every configured position, as its own chain's snapshot reports it. A position whose
    chain was not read this tick is left out (its protection waits for the next tick). Its
    chain is always part of its keys (``key_scope``: the chain id)."""
    out = []
    for p in positions:
        m = markets.get(p.chain.name)
        if m is None:
            continue
        account = p.account or (m.layout.accounts[0] if m.layout.accounts else None)
        if account is None or account not in m.snap.accounts:
            continue
        a = m.snap.accounts[account]
        target = p.target_health_factor
        out.append(
            PositionSnapshot(
                account,
                a.total_collateral_base,
                a.total_debt_base,
                a.liquidation_threshold_bps,
                a.health_factor_wad,
                name=p.name,
                chain=p.chain.name,
                target_health_factor_wad=None if target is None else int(target * WAD),
                key_scope=p.key_scope,
            )
        )
    return tuple(out)


def _same(p: Position, s: PositionSnapshot) -> bool:
    return p.chain.name == s.chain and p.name == s.name


def evaluate(
    store: Store,
    settings: Settings,
    positions: Sequence[Position],
    markets: Mapping[str, MarketRead],
    journal_records: Iterable[dict[str, Any]],
    *,
    ledger: ProposalLedger,
    options_enabled: bool,
) -> Evaluation:
    """One decision for the tick over every chain read (``markets``, by chain name): the
    positions on all of them share the decision's one budget. The evaluation time is
    :func:`evaluation_time`; each chain's own series are read at its own block time."""
    at = evaluation_time(markets)
    session_id = session_id_for(at)
    chain_at = {name: m.snap.timestamp for name, m in markets.items()}
    inputs = signal_inputs(
        store, settings, [m.layout for m in markets.values()], at, chain_at=chain_at
    )
    signals = evaluate_signals(inputs, pd.Timestamp(at, unit="s", tz="UTC"), settings.signals)
    snaps = position_snapshots(positions, markets)
    records = list(journal_records)
    memory, horizons = memory_from_journal(records)
    open_layers = open_layers_from_journal(records, settings.policy.layer_hold_days)
    session = SessionState(
        session_id,
        Decimal(ledger.session_spent_usd(session_id)),
        frozenset(horizons.get(session_id, set())),
    )
    decision = decide(
        signals,
        snaps,
        session,
        settings.policy,
        pd.Timestamp(at, unit="s", tz="UTC"),
        memory,
        open_layers=open_layers,
        options_enabled=options_enabled,
    )
    guard = evaluate_guard(
        settings,
        store,
        [(p, s) for p in positions for s in snaps if _same(p, s)],
        {name: (m.layout, m.snap) for name, m in markets.items()},
        signals,
        records,
        ledger=ledger,
        at=at,
        session_id=session_id,
    )
    several = len(snaps) > 1
    return Evaluation(
        decision,
        session_id,
        sum(p.collateral_base for p in snaps) if several else 0,
        guard=guard,
        at=at,
    )
