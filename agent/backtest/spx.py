"""The SPX layer rule in the replay: inputs from history, one :class:`SpxDecision` per day, and
the S9 episodes (runs of backwardation days) with what the rule would have proposed.

The same functions as the daemon: :func:`agent.signals.spx.evaluate_spx_signals` and
:func:`agent.policy.spx.spx_layer`, after the day's DeFi decision (so the ticket sees the DeFi
layer's spend and its beta check). Tickets count on exchange trading days only (on a weekend S9
carries Friday's reading and would repeat Friday's ticket).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

import pandas as pd

from agent.backtest.data import HistoricalData
from agent.policy import Decision, PolicyConfig
from agent.policy.spx import SpxDecision, spx_layer
from agent.signals import SignalsConfig
from agent.signals.spx import SpxInputs, evaluate_spx_signals, latest_close


def build_spx_inputs(data: HistoricalData) -> SpxInputs:
    def opt(key: str) -> pd.Series | None:
        return data.series(key) if key in data.observations_by_key else None

    return SpxInputs(vix=opt("close.vix"), vix3m=opt("close.vix3m"), spx=opt("close.spx"))


def spx_day(
    inputs: SpxInputs,
    decision: Decision,
    at: pd.Timestamp,
    signals_cfg: SignalsConfig,
    policy_cfg: PolicyConfig,
    exposure_usd: Decimal | None = None,
) -> SpxDecision:
    """S9-S11 and the SPX layer for one evaluation, after that evaluation's DeFi decision;
    ``exposure_usd`` is the protected position's collateral value (the notional cap)."""
    sig = evaluate_spx_signals(inputs, at, signals_cfg)
    spot = latest_close(inputs.spx, at, signals_cfg.s11.max_staleness_days)
    return spx_layer(
        sig,
        decision,
        spot,
        at,
        policy_cfg,
        exposure_usd=exposure_usd,
        # B's room after the day's DeFi layers (the replay's open layers included)
        open_remaining_usd=decision.budget_room_usd - decision.proposed_spend_usd,
        trading_days_only=True,
    )


class _Day(Protocol):
    @property
    def day(self) -> date: ...
    @property
    def decision(self) -> Decision: ...
    @property
    def spx(self) -> SpxDecision | None: ...


@dataclass(frozen=True)
class SpxEpisode:
    """A run of S9 (backwardation) days, gaps of up to ``merge_gap_days`` merged."""

    start: date
    end: date
    s9_days: tuple[date, ...]
    ticket_days: tuple[date, ...]
    defi_acted_days: tuple[date, ...]
    max_vix_ratio: float | None
    consensus_days: int  # S9 days with S10 or S11 firing too
    beta: tuple[str, ...]  # beta views seen on S9 days
    spend_usd: Decimal  # sum of the tickets' cost at their limits
    tickets: tuple[str, ...]  # one line per ticket day

    def record(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "s9_days": [d.isoformat() for d in self.s9_days],
            "ticket_days": [d.isoformat() for d in self.ticket_days],
            "defi_acted_days": [d.isoformat() for d in self.defi_acted_days],
            "max_vix_ratio": self.max_vix_ratio,
            "consensus_days": self.consensus_days,
            "beta": list(self.beta),
            "spend_usd": str(self.spend_usd),
            "tickets": list(self.tickets),
        }


def describe_ticket(d: SpxDecision) -> str:
    legs = ", ".join(
        f"{leg.contracts}x {leg.symbol} {leg.expiry.isoformat()} {leg.strike}P @{leg.limit_price}"
        for leg in d.legs
    )
    return f"{d.session_id} {legs} (max ${d.spend_usd:,}, est ${d.est_cost_usd:,})"


def _ratio(d: SpxDecision) -> float | None:
    s9 = next((r for r in d.signals if r.id == "S9"), None)
    return None if s9 is None else s9.value


def spx_episodes(days: Sequence[_Day], merge_gap_days: int = 3) -> list[SpxEpisode]:
    flagged = [r for r in days if r.spx is not None and r.spx.s9_firing]
    groups: list[list[_Day]] = []
    for r in flagged:
        if groups and (r.day - groups[-1][-1].day).days <= merge_gap_days:
            groups[-1].append(r)
        else:
            groups.append([r])
    out: list[SpxEpisode] = []
    for g in groups:
        start, end = g[0].day, g[-1].day
        span = [r for r in days if start <= r.day <= end]
        tickets = [r.spx for r in span if r.spx is not None and r.spx.fired]
        ratios = [x for r in g if r.spx is not None and (x := _ratio(r.spx)) is not None]
        out.append(
            SpxEpisode(
                start,
                end,
                tuple(r.day for r in g),
                tuple(r.day for r in span if r.spx is not None and r.spx.fired),
                tuple(r.day for r in span if r.decision.acted),
                max(ratios) if ratios else None,
                sum(1 for r in g if r.spx is not None and r.spx.consensus),
                tuple(sorted({r.spx.beta for r in g if r.spx is not None})),
                sum((t.spend_usd for t in tickets), Decimal(0)),
                tuple(describe_ticket(t) for t in tickets),
            )
        )
    return out


def spx_summary(days: Sequence[_Day]) -> list[str]:
    """The terminal table: S9 episodes and the tickets, then counts per year."""
    eps = spx_episodes(days)
    head = f"{'start':<10}  {'end':<10}  {'S9':>3}  {'VIX/3M':>6}  {'cons':>4}  {'beta':<22}  {'DeFi':>4}  {'tix':>3}  first ticket"
    lines = ["SPX layer (S9 backwardation episodes)", head, "-" * len(head)]
    for e in eps:
        ratio = "n/a" if e.max_vix_ratio is None else f"{e.max_vix_ratio:.3f}"
        lines.append(
            f"{e.start.isoformat():<10}  {e.end.isoformat():<10}  {len(e.s9_days):>3}  {ratio:>6}  "
            f"{e.consensus_days:>4}  {','.join(e.beta):<22}  {len(e.defi_acted_days):>4}  "
            f"{len(e.ticket_days):>3}  {e.tickets[0] if e.tickets else '-'}"
        )
    by_year: dict[int, list[int]] = {}
    for r in days:
        y = by_year.setdefault(r.day.year, [0, 0])
        if r.spx is not None:
            y[0] += int(r.spx.s9_firing)
            y[1] += int(r.spx.fired)
    lines.append("")
    lines.append(
        "per year (S9 days/ticket days): "
        + ", ".join(f"{y} {s}/{t}" for y, (s, t) in sorted(by_year.items()))
    )
    return lines
