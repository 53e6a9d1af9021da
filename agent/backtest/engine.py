"""Day-by-day replay of the live signal and policy code over history.

For each UTC day D in ``[start, end]`` the evaluation time is the end of D
(``at = D 23:59:59``): every row stamped D (daily closes, the day's TVL snapshot, funding up to
16:00) is known by then, and nothing later is visible, because every signal truncates its series
at ``at`` and macro prints count only from their release time. The signals are
:func:`agent.signals.evaluate_signals` and the decision is :func:`agent.policy.decide`, the same
functions the daemon calls. Each day is its own session (UTC day), so the session cap resets
daily; the hysteresis memory is carried from day to day.

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

from collections.abc import Sequence
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
from agent.policy import (
    Decision,
    PolicyConfig,
    PolicyMemory,
    PositionSnapshot,
    SessionState,
    decide,
    health_factor_wad,
    session_id_for,
)
from agent.policy.spx import SpxDecision
from agent.signals import (
    ReserveRates,
    SignalInputs,
    SignalResult,
    SignalsConfig,
    aggregate_status,
    evaluate_signals,
    macro_prints_from_observations,
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


def run_backtest(
    data: HistoricalData,
    start: date | str | pd.Timestamp,
    end: date | str | pd.Timestamp,
    gate: bool = True,
    signals_cfg: SignalsConfig | None = None,
    policy_cfg: PolicyConfig | None = None,
    position: BacktestPosition | None = None,
    inputs: SignalInputs | None = None,
) -> BacktestResult:
    """Replay ``[start, end]`` (inclusive UTC days). ``gate`` sets ``PolicyConfig.consensus_gate``."""
    d0, d1 = _day(start), _day(end)
    if d1 < d0:
        raise ValueError(f"backtest end {d1} is before start {d0}")
    scfg = signals_cfg or SignalsConfig()
    pcfg = (policy_cfg or PolicyConfig()).model_copy(update={"consensus_gate": gate})
    pos = (position or BacktestPosition()).snapshot()
    inp = inputs or build_inputs(data)
    memory = PolicyMemory()
    spx_inp = build_spx_inputs(data)
    days: list[DayRecord] = []
    for day in pd.date_range(pd.Timestamp(d0, tz="UTC"), pd.Timestamp(d1, tz="UTC"), freq="D"):
        at = day + END_OF_DAY
        sig = evaluate_signals(inp, at, scfg)
        sess = SessionState(session_id_for(int(at.timestamp())), Decimal(0))
        dec = decide(sig, pos, sess, pcfg, at, memory)
        memory = dec.memory
        spx = spx_day(spx_inp, dec, at, scfg, pcfg, Decimal(pos.collateral_base) / pos.base_unit)
        days.append(DayRecord(day.date(), at, tuple(sig), dec, spx))
    tvl = inp.tvl_usd.get("defi-total", pd.Series(dtype="float64"))
    return BacktestResult(
        d0, d1, gate, tuple(days), tuple(find_episodes(days, tvl)), pcfg, data.skipped
    )
