"""Day-by-day replay of the live signal and policy code over history.

For each UTC day D in ``[start, end]`` the evaluation time is the end of D
(``at = D 23:59:59``): every row stamped D (daily closes, the day's TVL snapshot, funding up to
16:00) is known by then, and nothing later is visible, because every signal truncates its series
at ``at`` and macro prints count only from their release time. The signals are
:func:`agent.signals.evaluate_signals` and the decision is :func:`agent.policy.decide`, the same
functions the daemon calls. Each day is its own session (UTC day), so the session cap resets
daily; the hysteresis memory is carried from day to day, and so are the open layers: what each
day proposed counts against B (a top-up for ``policy.layer_hold_days``, a put's premium until
the maturity the put planner would pick for its horizon), exactly as the daemon reads them back
from its journal.

The signals of a day depend only on the data and their own config section, so a
:class:`Replay` computes each signal once per day and config and reuses it: a sweep over policy
keys (or over one signal's thresholds) recomputes only what changed.

Inputs used from the shipped ``data/history`` (README "Backtest" section says what each stands in for):

* S1: total DeFi TVL (DefiLlama, daily) as one watched "protocol", ``defi-total``;
* S2: CPI (CPIAUCSL) and PPI final demand (PPIFIS), released the 15th of the next month;
* S3: Binance and Bybit BTCUSDT perp funding (8h, annualised) - CEX stand-ins for perp-DEX funding;
* S4: Aave v2 USDC/USDT rate (fits the supply APY; no borrow or utilisation series);
* S5 and S6: no history (no liquidation events, no hourly prices) -> insufficient_data;
* S7: BTC and ETH daily closes; S8: BTC and ETH vs S&P 500 closes.

The position is hypothetical and static (configurable): debt D, health factor H, threshold LT,
so collateral C = H * D / LT. Proposed actions are not applied to it (no execution in a replay).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from agent.backtest.data import HistoricalData

# The SPX layer rule (issue 15) runs after each day's DeFi decision; see agent.backtest.spx.
from agent.backtest.spx import SpxEpisode, build_spx_inputs, spx_day, spx_episodes
from agent.core.units import AAVE_BASE_UNIT_USD, BPS
from agent.planner.options import preferred_maturities
from agent.policy import (
    Decision,
    OpenLayer,
    OptionAction,
    PolicyConfig,
    PolicyMemory,
    PositionSnapshot,
    SessionState,
    TopUpAction,
    decide,
    health_factor_wad,
    layer_trigger,
    protection_layer,
    put_layer,
    session_id_for,
)
from agent.policy.spx import SpxDecision
from agent.signals import (
    SIGNAL_STEPS,
    ReserveRates,
    SignalInputs,
    SignalResult,
    SignalsConfig,
    aggregate_status,
    macro_prints_from_observations,
    signal_config,
)
from agent.signals.base import SIGNAL_IDS

DAY = pd.Timedelta(days=1)
END_OF_DAY = pd.Timedelta(days=1) - pd.Timedelta(seconds=1)


class BacktestPosition(BaseModel):
    """A hypothetical Aave position (static): collateral = HF * debt / LT."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    account: str = "0x000000000000000000000000000000000000bac7"
    debt_usd: Decimal = Field(Decimal("1000000"), gt=0)
    health_factor: Decimal = Field(Decimal("1.45"), gt=0)
    liquidation_threshold_bps: int = Field(8250, gt=0, le=BPS)

    def snapshot(self) -> PositionSnapshot:
        debt = int(self.debt_usd * AAVE_BASE_UNIT_USD)
        coll = int(
            self.health_factor
            * self.debt_usd
            * AAVE_BASE_UNIT_USD
            * BPS
            / self.liquidation_threshold_bps
        )
        return PositionSnapshot(
            self.account,
            coll,
            debt,
            self.liquidation_threshold_bps,
            health_factor_wad(coll, debt, self.liquidation_threshold_bps),
        )


def build_inputs(data: HistoricalData) -> SignalInputs:
    """The signal inputs from history (full series; each signal truncates at ``at``)."""

    def opt(key: str) -> pd.Series | None:
        # A loaded key stays a subject even while it has no rows yet (insufficient_data), so the
        # set of subjects never depends on how far the data reaches.
        return data.series(key) if key in data.observations_by_key else None

    tvl = {"defi-total": data.series("tvl.chain.total")}
    macro = {
        name: macro_prints_from_observations(data.observations(key))
        for name, key in (("cpi", "macro.cpi"), ("ppi", "macro.ppi"))
        if key in data.observations_by_key
    }
    funding = {
        m: s
        for m, key in (
            ("binance:BTCUSDT", "funding.binance.BTCUSDT"),
            ("bybit:BTCUSDT", "funding.bybit.BTCUSDT"),
        )
        if (s := opt(key)) is not None
    }
    reserves = {
        a: ReserveRates(supply_apy=s)
        for a in ("usdc", "usdt")
        if (s := opt(f"rate.aave-v2.ethereum.{a}.supply_apy")) is not None
    }
    closes = {a: s for a in ("btc", "eth") if (s := opt(f"close.{a}")) is not None}
    return SignalInputs(
        tvl_usd=tvl,
        macro_prints=macro,
        funding_apr=funding,
        reserve_rates=reserves,
        daily_closes=closes,
        beta_assets=closes,
        spx_closes=opt("close.spx"),
    )


@dataclass(frozen=True)
class DayRecord:
    day: date
    at: pd.Timestamp
    signals: tuple[SignalResult, ...]
    decision: Decision
    spx: SpxDecision | None = None  # the SPX layer rule after the DeFi decision

    def signal_summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for sid in SIGNAL_IDS:
            rs = [r for r in self.signals if r.id == sid]
            st = aggregate_status(rs)
            lead = next((r for r in rs if r.firing), None) or next(
                (r for r in rs if r.value is not None), None
            )
            out[sid] = {
                "status": st,
                "firing": st == "firing",
                "value": None if lead is None else lead.value,
                "threshold": None if lead is None else lead.threshold,
                "subjects": {
                    r.subject: {"status": r.status, "value": r.value, "threshold": r.threshold}
                    for r in rs
                },
            }
        return out

    def record(self) -> dict[str, Any]:
        d = self.decision
        rec: dict[str, Any] = {"date": self.day.isoformat()}
        rec["signals"] = self.signal_summary()
        for r in self.signals:
            if r.id == "S8" and r.value is not None:
                rec[f"beta30_{r.subject}"] = r.metric("beta_short")
                rec[f"beta90_{r.subject}"] = r.metric("beta_long")
        rec |= {
            "layer_trigger": d.trigger,
            "trigger_paths": list(d.trigger_paths),
            "gate_enabled": d.gate_enabled,
            "gate_passed": d.gate_passed,
            "families_firing": list(d.families_firing),
            "acted": d.acted,
            "priority": d.priority,
            "proposed_spend_usd": str(d.proposed_spend_usd),
            "session_spend_usd": str(d.session_spent_after_usd),
            "open_layers_usd": str(d.open_layers_usd),
            "budget_room_usd": str(d.budget_room_usd),
            "actions": [a.as_dict() for a in d.actions],
            "suppressed": [s.reason for s in d.suppressed],
        }
        if self.spx is not None:
            rec["spx"] = self.spx.as_dict() | {
                "signals": {r.id: {"status": r.status, "value": r.value} for r in self.spx.signals}
            }
        return rec


@dataclass(frozen=True)
class Episode:
    """A run of stress days (S1 firing or a layer trigger), gaps of up to ``merge_gap_days`` merged."""

    start: date
    end: date
    max_drawdown_48h: float | None  # most negative S1 value in the episode
    tvl_peak_to_trough: float | None  # TVL min / max - 1 over [start - 2d, end]
    signals_fired: tuple[str, ...]
    trigger_days: tuple[date, ...]
    acted_days: tuple[date, ...]
    proposed_spend_usd: Decimal
    proposals: tuple[str, ...]  # one line per acting day

    def record(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "max_drawdown_48h": self.max_drawdown_48h,
            "tvl_peak_to_trough": self.tvl_peak_to_trough,
            "signals_fired": list(self.signals_fired),
            "trigger_days": [d.isoformat() for d in self.trigger_days],
            "acted_days": [d.isoformat() for d in self.acted_days],
            "proposed_spend_usd": str(self.proposed_spend_usd),
            "proposals": list(self.proposals),
        }


@dataclass(frozen=True)
class BacktestResult:
    start: date
    end: date
    gate: bool
    days: tuple[DayRecord, ...]
    episodes: tuple[Episode, ...]
    policy: PolicyConfig
    notes: tuple[str, ...] = field(default=())

    def day(self, d: date | str) -> DayRecord:
        want = date.fromisoformat(d) if isinstance(d, str) else d
        for r in self.days:
            if r.day == want:
                return r
        raise KeyError(f"{want} not in the backtest range {self.start}..{self.end}")

    def trigger_days(self) -> list[date]:
        return [r.day for r in self.days if r.decision.trigger]

    def acted_days(self) -> list[date]:
        return [r.day for r in self.days if r.decision.acted]

    def spx_ticket_days(self) -> list[date]:
        return [r.day for r in self.days if r.spx is not None and r.spx.fired]

    def spx_episodes(self) -> list[SpxEpisode]:
        return spx_episodes(self.days)

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "gate": self.gate,
            "gate_mode": self.policy.gate_mode,
            "evaluation_time": "end of each UTC day (23:59:59)",
            "notes": list(self.notes),
            "days": [r.record() for r in self.days],
            "episodes": [e.record() for e in self.episodes],
            "spx_episodes": [e.record() for e in self.spx_episodes()],
        }


def _describe(d: Decision) -> str:
    parts = []
    for a in d.topups():
        parts.append(f"top-up ${a.max_spend_usd:,}")
    opts = d.options()
    if opts:
        total = sum((o.spend_usd for o in opts), Decimal(0))
        parts.append(f"puts {'/'.join(o.horizon[:5] for o in opts)} ${total:,}")
    return f"{d.session_id} {d.priority} {'+'.join(d.trigger_paths)}: " + (
        ", ".join(parts) or "nothing (suppressed)"
    )


def find_episodes(
    days: Sequence[DayRecord], tvl: pd.Series, merge_gap_days: int = 3
) -> list[Episode]:
    flagged = [
        r for r in days if r.decision.trigger or any(s.id == "S1" and s.firing for s in r.signals)
    ]
    groups: list[list[DayRecord]] = []
    for r in flagged:
        if groups and (r.day - groups[-1][-1].day).days <= merge_gap_days:
            groups[-1].append(r)
        else:
            groups.append([r])
    by_day = {r.day: r for r in days}
    out: list[Episode] = []
    for g in groups:
        start, end = g[0].day, g[-1].day
        span = [by_day[d] for d in sorted(by_day) if start <= d <= end]
        s1 = [s.value for r in span for s in r.signals if s.id == "S1" and s.value is not None]
        lo = pd.Timestamp(start, tz="UTC") - 2 * DAY
        hi = pd.Timestamp(end, tz="UTC") + END_OF_DAY
        w = tvl[(tvl.index >= lo) & (tvl.index <= hi)]
        w = w[w > 0]
        ptt = None
        if len(w):
            peak_pos = int(w.to_numpy().argmax())
            ptt = float(w.iloc[peak_pos:].min() / w.iloc[peak_pos] - 1.0)
        fired = sorted({s.id for r in span for s in r.signals if s.firing})
        acted = [r for r in span if r.decision.acted]
        out.append(
            Episode(
                start,
                end,
                min(s1) if s1 else None,
                ptt,
                tuple(fired),
                tuple(r.day for r in span if r.decision.trigger),
                tuple(r.day for r in acted),
                sum((r.decision.proposed_spend_usd for r in acted), Decimal(0)),
                tuple(_describe(r.decision) for r in acted),
            )
        )
    return out


def _day(x: date | str | pd.Timestamp) -> date:
    if isinstance(x, pd.Timestamp):
        return x.date()
    if isinstance(x, str):
        return date.fromisoformat(x)
    return x


class Replay:
    """The days of a replay and their signal results, computed once per (signal, config) and
    reused: the same inputs, the same evaluation times, the same pure functions."""

    def __init__(self, inputs: SignalInputs, start: date, end: date) -> None:
        if end < start:
            raise ValueError(f"backtest end {end} is before start {start}")
        self.inputs = inputs
        self.start, self.end = start, end
        days = pd.date_range(pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"), freq="D")
        self.days: tuple[date, ...] = tuple(d.date() for d in days)
        self.ats: tuple[pd.Timestamp, ...] = tuple(d + END_OF_DAY for d in days)
        self._cache: dict[tuple[str, str], tuple[tuple[SignalResult, ...], ...]] = {}

    def _one(self, sid: str, cfg: SignalsConfig) -> tuple[tuple[SignalResult, ...], ...]:
        ck = (sid, signal_config(cfg, sid).model_dump_json())
        hit = self._cache.get(ck)
        if hit is None:
            step = SIGNAL_STEPS[sid]
            hit = tuple(tuple(step(self.inputs, at, cfg)) for at in self.ats)
            self._cache[ck] = hit
        return hit

    def signals(self, cfg: SignalsConfig) -> list[tuple[SignalResult, ...]]:
        """Per day, every signal in id order (what ``evaluate_signals`` returns)."""
        per_sid = [self._one(sid, cfg) for sid in SIGNAL_STEPS]
        return [tuple(r for col in per_sid for r in col[i]) for i in range(len(self.ats))]


def _open_layers(dec: Decision, at_unix: int, hold_days: int) -> list[OpenLayer]:
    """What a day's proposals add to the open layers (the daemon reads the same from its
    journal): a top-up for ``hold_days``, a put until the maturity the planner prefers."""
    out: list[OpenLayer] = []
    for a in dec.actions:
        if isinstance(a, TopUpAction):
            out.append(protection_layer(a.idempotency_key, a.spend_usd, at_unix, hold_days))
        elif isinstance(a, OptionAction):
            ms = preferred_maturities(at_unix, a.dte_min, a.dte_max)
            maturity = ms[0] if ms else at_unix + a.dte_max * 86_400
            out.append(put_layer(a.idempotency_key, a.spend_usd, at_unix, maturity))
    return out


def replay_decisions(
    replay: Replay,
    scfg: SignalsConfig,
    pcfg: PolicyConfig,
    pos: PositionSnapshot,
    options_enabled: bool = True,
    *,
    trigger_days_only: bool = False,
) -> Iterator[tuple[date, pd.Timestamp, tuple[SignalResult, ...], Decision]]:
    """``decide`` day by day, carrying the hysteresis memory and the open layers. With
    ``trigger_days_only`` (the sweep) days where no trigger path fires are skipped: ``decide``
    would propose nothing on them and change no state, so the acting days are the same."""
    memory = PolicyMemory()
    layers: list[OpenLayer] = []
    for day, at, sig in zip(replay.days, replay.ats, replay.signals(scfg), strict=True):
        if trigger_days_only and not layer_trigger(sig).fired:
            continue
        at_unix = int(at.timestamp())
        layers = [la for la in layers if la.until > at_unix]  # expired layers free their room
        sess = SessionState(session_id_for(at_unix), Decimal(0))
        dec = decide(
            sig, pos, sess, pcfg, at, memory, open_layers=layers, options_enabled=options_enabled
        )
        memory = dec.memory
        layers += _open_layers(dec, at_unix, pcfg.layer_hold_days)
        yield day, at, sig, dec


def run_backtest(
    data: HistoricalData,
    start: date | str | pd.Timestamp,
    end: date | str | pd.Timestamp,
    gate: bool = True,
    signals_cfg: SignalsConfig | None = None,
    policy_cfg: PolicyConfig | None = None,
    position: BacktestPosition | None = None,
    inputs: SignalInputs | None = None,
    *,
    options_enabled: bool = True,
    replay: Replay | None = None,
) -> BacktestResult:
    """Replay ``[start, end]`` (inclusive UTC days). ``gate`` sets ``PolicyConfig.consensus_gate``.
    ``replay`` (for the same data and range) reuses signal results across runs."""
    d0, d1 = _day(start), _day(end)
    if d1 < d0:
        raise ValueError(f"backtest end {d1} is before start {d0}")
    scfg = signals_cfg or SignalsConfig()
    pcfg = (policy_cfg or PolicyConfig()).model_copy(update={"consensus_gate": gate})
    pos = (position or BacktestPosition()).snapshot()
    if replay is None or (replay.start, replay.end) != (d0, d1):
        replay = Replay(inputs or build_inputs(data), d0, d1)
    spx_inp = build_spx_inputs(data)
    exposure_usd = Decimal(pos.collateral_base) / pos.base_unit
    days = [
        DayRecord(day, at, sig, dec, spx_day(spx_inp, dec, at, scfg, pcfg, exposure_usd))
        for day, at, sig, dec in replay_decisions(replay, scfg, pcfg, pos, options_enabled)
    ]
    tvl = replay.inputs.tvl_usd.get("defi-total", pd.Series(dtype="float64"))
    return BacktestResult(
        d0, d1, gate, tuple(days), tuple(find_episodes(days, tvl)), pcfg, data.skipped
    )
