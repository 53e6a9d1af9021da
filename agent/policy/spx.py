"""The SPX layer rule: an advisory S&P 500 index put ticket (pure; no I/O, no clock).

``spx_layer(spx_signals, decision, spot, at, cfg)`` proposes a ticket when

1. **S9 fires** (VIX above VIX3M: the term structure is in backwardation), and
2. the **beta check says S&P first** (S8 evaluated and not rising for BTC or ETH) **or the DeFi
   layer also acts** (``decision.acted``). S8 without data is *not* "S&P first" here (the DeFi
   rule treats it as not rising for its own sizing; a ticket needs the check to have run).

The ticket buys puts ``otm_fraction`` (5/6/7%) below the latest S&P 500 close across the three
horizons: 0-7 DTE on SPXW dailies, 15-45 DTE on SPXW Friday weeklies, 60+ DTE on the SPX
monthlies (third Friday, AM-settled). The two longer legs are the *outer wings*: they need S9
plus ``wing_min_consensus`` of S10/S11 firing; otherwise they are listed as suppressed.

**Expiries** are real calendar dates: for each horizon the listed expiry whose DTE (calendar
days from the evaluation's UTC date) is in ``[dte_min, dte_max]`` and nearest the middle of the
range (the later one on a tie), and which has not expired at ``at`` (SPXW settle at 16:00
New York time, SPX monthlies at the Friday open, 09:30). Weekends and the exchange's regular
holidays (NYSE rules, pandas' holiday rules) have no expiry; a Friday expiry on a holiday moves
to the Thursday before. One-off closures are not known.

**Sizing** (``Decimal`` USD, cents): budget = ``min(cap - spent, cap x size_fraction)`` where
spent is the session's spend including the DeFi layer's proposals (and the open-layer budget's
remainder when given). Each leg gets ``budget x weight``; contracts =
``floor(leg budget / (limit x multiplier))``, and no leg's notional (strike x multiplier x
contracts) exceeds ``max_notional_fraction`` of the protected position's collateral value when it
is given (cheap short-dated puts would otherwise buy thousands of contracts). The premium is an **estimate**: Black-Scholes
(no dividends, ``risk_free_rate``) with the VIX close / 100 as volatility and time to the
settlement instant; the limit is the estimate plus ``limit_markup_fraction``, rounded up to the
tick. The ticket's spend (recorded against the session cap) is the cost at the limit.

One ticket per session (idempotency key over ``spx_put_ticket|spx|session``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import lru_cache
from typing import Any, Literal

import pandas as pd
from pandas.tseries.holiday import (
    AbstractHolidayCalendar,
    GoodFriday,
    Holiday,
    USLaborDay,
    USMartinLutherKingJr,
    USMemorialDay,
    USPresidentsDay,
    USThanksgivingDay,
    nearest_workday,
    sunday_to_monday,
)

from agent.policy.config import PolicyConfig
from agent.policy.models import Decision, idempotency_key
from agent.policy.pricing import black_scholes_put
from agent.policy.spx_config import SpxHorizonConfig, SpxProduct
from agent.signals.base import InputRef, SignalResult, aggregate_status, to_utc, unix

CENT = Decimal("0.01")
YEAR_SECONDS = 365.0 * 86_400
ACTION = "spx_put_ticket"
ACTION_KEY = "spx:puts"
ESTIMATE_NOTE = (
    "ESTIMATE: Black-Scholes with the VIX close as volatility, no dividends; not a quote. "
    "Check the broker's quote before placing the order."
)
BetaView = Literal["rising", "not_rising", "insufficient"]


# -- calendar ----------------------------------------------------------------------------------


def _nth_sunday(year: int, month: int, n: int) -> date:
    d = date(year, month, 1)
    first = d + timedelta(days=(6 - d.weekday()) % 7)
    return first + timedelta(weeks=n - 1)


def new_york_utc_offset_hours(d: date) -> int:
    """UTC offset of New York on date ``d``: -4 in daylight saving time (second Sunday of March
    to the first Sunday of November, US rule since 2007), else -5."""
    return -4 if _nth_sunday(d.year, 3, 2) <= d < _nth_sunday(d.year, 11, 1) else -5


def new_york_time(d: date, hour: int, minute: int = 0) -> pd.Timestamp:
    """``hour:minute`` New York time on ``d``, as a UTC timestamp."""
    off = new_york_utc_offset_hours(d)
    return pd.Timestamp(datetime(d.year, d.month, d.day, hour, minute, tzinfo=UTC)) - pd.Timedelta(
        hours=off
    )


class _NyseHolidays(AbstractHolidayCalendar):
    """The exchange's regular full-day holidays (NYSE rules; Cboe follows them for SPX).
    One-off closures (national days of mourning, 2012's hurricane) are not in it."""

    rules = [  # noqa: RUF012 (pandas reads a class attribute)
        Holiday("New Year's Day", month=1, day=1, observance=sunday_to_monday),
        USMartinLutherKingJr,
        USPresidentsDay,
        GoodFriday,
        USMemorialDay,
        Holiday("Juneteenth", month=6, day=19, start_date="2022-01-01", observance=nearest_workday),
        Holiday("Independence Day", month=7, day=4, observance=nearest_workday),
        USLaborDay,
        USThanksgivingDay,
        Holiday("Christmas", month=12, day=25, observance=nearest_workday),
    ]


@lru_cache(maxsize=128)
def exchange_holidays(year: int) -> frozenset[date]:
    days = _NyseHolidays().holidays(datetime(year, 1, 1), datetime(year, 12, 31))
    return frozenset(pd.Timestamp(d).date() for d in days)


def is_trading_day(d: date) -> bool:
    return d.weekday() < 5 and d not in exchange_holidays(d.year)


def is_third_friday(d: date) -> bool:
    return d.weekday() == 4 and 15 <= d.day <= 21


def is_listed(d: date, product: SpxProduct) -> bool:
    """Whether ``product`` has an expiry on ``d``. Weekends and exchange holidays have none; a
    Friday expiry (weekly or third-Friday monthly) that falls on a holiday moves to the Thursday
    before it."""
    if not is_trading_day(d):
        return False
    if product == "SPXW daily":
        return True
    wanted = (lambda f: True) if product == "SPXW Friday" else is_third_friday
    if d.weekday() == 4:
        return wanted(d)
    friday = d + timedelta(days=1)
    return d.weekday() == 3 and not is_trading_day(friday) and wanted(friday)


def settlement_time(d: date, product: SpxProduct) -> pd.Timestamp:
    """SPXW: PM-settled at the 16:00 close; SPX monthlies: AM-settled at the 09:30 open."""
    return new_york_time(d, 9, 30) if product == "SPX monthly" else new_york_time(d, 16)


def choose_expiry(
    at: pd.Timestamp, product: SpxProduct, dte_min: int, dte_max: int
) -> tuple[date, int] | None:
    """The listed expiry in ``[dte_min, dte_max]`` calendar days after ``at``'s UTC date that has
    not settled at ``at``, nearest the middle of the range (later on a tie); None if none."""
    at = to_utc(at)
    today = at.date()
    mid = (dte_min + dte_max) / 2
    best: tuple[float, int, date] | None = None
    for dte in range(dte_min, dte_max + 1):
        d = today + timedelta(days=dte)
        if not is_listed(d, product) or settlement_time(d, product) <= at:
            continue
        score = (abs(dte - mid), -dte, d)
        if best is None or score < best:
            best = score
    return None if best is None else (best[2], -best[1])


# -- pricing (Black-Scholes: agent.policy.pricing) ------------------------------------------------


def tick_for(price: Decimal) -> Decimal:
    """CBOE SPX/SPXW minimum tick: 0.05 below 3.00, 0.10 from 3.00."""
    return Decimal("0.05") if price < 3 else Decimal("0.10")


def limit_price(estimate: float, markup: Decimal) -> Decimal:
    """The estimate plus ``markup``, rounded *up* to the tick (at least one tick)."""
    raw = Decimal(repr(estimate)) * (1 + markup)
    tick = tick_for(raw)
    ticks = (raw / tick).to_integral_value(rounding=ROUND_CEILING)
    px = max(ticks, Decimal(1)) * tick
    if px >= 3 and tick_for(px) != tick:  # crossed 3.00: re-round on the coarser grid
        px = (px / Decimal("0.10")).to_integral_value(rounding=ROUND_CEILING) * Decimal("0.10")
    return px


def put_strike(spot: float, otm_fraction: Decimal, step: int) -> int:
    """``spot x (1 - otm)`` rounded down to the strike grid (at least ``otm`` out of the money)."""
    target = Decimal(repr(spot)) * (1 - otm_fraction)
    return int((target / step).to_integral_value(rounding=ROUND_FLOOR)) * step


# -- records -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpxLeg:
    horizon: str
    product: SpxProduct
    expiry: date
    settlement: str  # "PM" (SPXW) or "AM" (SPX monthlies)
    dte: int
    strike: int  # index points
    otm_fraction: Decimal
    spot: float
    vol: float
    tau_years: float
    est_premium: float  # index points per option (Black-Scholes estimate)
    limit_price: Decimal  # index points per option
    contracts: int
    budget_usd: Decimal
    multiplier: int
    capped_by: str  # "budget" or "notional" (the position's collateral value)

    @property
    def est_cost_usd(self) -> Decimal:
        return (Decimal(repr(self.est_premium)) * self.multiplier * self.contracts).quantize(CENT)

    @property
    def max_cost_usd(self) -> Decimal:
        return self.limit_price * self.multiplier * self.contracts

    @property
    def symbol(self) -> str:
        return "SPX" if self.product == "SPX monthly" else "SPXW"

    def as_dict(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "side": "BUY TO OPEN",
            "symbol": self.symbol,
            "product": self.product,
            "type": "PUT",
            "expiry": self.expiry.isoformat(),
            "settlement": self.settlement,
            "dte": self.dte,
            "strike": self.strike,
            "otm_fraction": str(self.otm_fraction),
            "contracts": self.contracts,
            "multiplier": self.multiplier,
            "order_type": "LIMIT",
            "limit_price": str(self.limit_price),
            "est_premium": round(self.est_premium, 4),
            "est_premium_is_estimate": True,
            "est_cost_usd": str(self.est_cost_usd),
            "max_cost_usd": str(self.max_cost_usd),
            "budget_usd": str(self.budget_usd),
            "capped_by": self.capped_by,
            "notional_usd": self.strike * self.multiplier * self.contracts,
            "reference_spot": self.spot,
            "vol_used": self.vol,
            "tau_years": round(self.tau_years, 6),
        }


@dataclass(frozen=True)
class SpxDecision:
    """What the SPX layer rule decided, with the evidence to recompute it by hand."""

    at: int
    session_id: str
    s9_firing: bool
    consensus: tuple[str, ...]  # firing ids among S10, S11
    beta: BetaView
    defi_acted: bool
    fired: bool  # a ticket with at least one contract
    budget_usd: Decimal
    session_cap_usd: Decimal
    session_spent_before_usd: Decimal
    legs: tuple[SpxLeg, ...]
    suppressed: tuple[tuple[str, str], ...]  # (horizon, reason)
    notes: tuple[str, ...]
    signals: tuple[SignalResult, ...]  # S8 (beta) and S9-S11
    spot: InputRef | None
    idempotency_key: str
    exposure_usd: Decimal | None = None  # the position's collateral value (the notional cap)

    @property
    def spend_usd(self) -> Decimal:
        """The ticket's cost if every leg fills at its limit (what the session cap counts)."""
        return sum((leg.max_cost_usd for leg in self.legs), Decimal(0))

    @property
    def est_cost_usd(self) -> Decimal:
        return sum((leg.est_cost_usd for leg in self.legs), Decimal(0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "session_id": self.session_id,
            "fired": self.fired,
            "s9_firing": self.s9_firing,
            "consensus": list(self.consensus),
            "beta": self.beta,
            "defi_acted": self.defi_acted,
            "budget_usd": str(self.budget_usd),
            "session_cap_usd": str(self.session_cap_usd),
            "session_spent_before_usd": str(self.session_spent_before_usd),
            "spend_usd": str(self.spend_usd),
            "est_cost_usd": str(self.est_cost_usd),
            "legs": [leg.as_dict() for leg in self.legs],
            "suppressed": [{"horizon": h, "reason": r} for h, r in self.suppressed],
            "notes": list(self.notes),
            "estimate_note": ESTIMATE_NOTE,
            "spot": None if self.spot is None else self.spot.as_dict(),
            "idempotency_key": self.idempotency_key,
            "exposure_usd": None if self.exposure_usd is None else str(self.exposure_usd),
        }


# -- the rule ----------------------------------------------------------------------------------


def beta_view(signals: Sequence[SignalResult]) -> BetaView:
    st = aggregate_status([r for r in signals if r.id == "S8"])
    return "rising" if st == "firing" else "not_rising" if st == "quiet" else "insufficient"


def _leg(
    h: SpxHorizonConfig,
    at: pd.Timestamp,
    spot: float,
    vol: float,
    leg_budget: Decimal,
    cfg: PolicyConfig,
    exposure_usd: Decimal | None,
) -> SpxLeg | str:
    s = cfg.spx
    chosen = choose_expiry(at, h.product, h.dte_min, h.dte_max)
    if chosen is None:
        return f"no {h.product} expiry between {h.dte_min} and {h.dte_max} DTE"
    expiry, dte = chosen
    strike = put_strike(spot, h.otm_fraction, s.strike_step)
    tau = (settlement_time(expiry, h.product) - at).total_seconds() / YEAR_SECONDS
    est = black_scholes_put(spot, float(strike), tau, vol, s.risk_free_rate)
    limit = limit_price(est, s.limit_markup_fraction)
    per_contract = limit * s.multiplier
    contracts = int((leg_budget / per_contract).to_integral_value(rounding=ROUND_FLOOR))
    capped_by = "budget"
    if exposure_usd is not None and strike > 0:
        max_contracts = int(exposure_usd * s.max_notional_fraction) // (strike * s.multiplier)
        if max_contracts < contracts:
            contracts, capped_by = max_contracts, "notional"
    return SpxLeg(
        h.name,
        h.product,
        expiry,
        "AM" if h.product == "SPX monthly" else "PM",
        dte,
        strike,
        h.otm_fraction,
        spot,
        vol,
        tau,
        est,
        limit,
        contracts,
        leg_budget,
        s.multiplier,
        capped_by,
    )


def spx_layer(
    spx_signals: Sequence[SignalResult],
    decision: Decision,
    spot: InputRef | None,
    at: pd.Timestamp,
    cfg: PolicyConfig,
    *,
    session_spent_usd: Decimal | None = None,
    open_remaining_usd: Decimal | None = None,
    exposure_usd: Decimal | None = None,
    trading_days_only: bool = False,
) -> SpxDecision:
    """The SPX layer at ``at`` after the DeFi ``decision`` of the same evaluation.

    ``session_spent_usd``: the session's spend so far (default: the decision's spend after its
    own proposals); ``open_remaining_usd``: what the open-layer budget still allows, if known;
    ``exposure_usd``: the protected position's collateral value (caps each leg's notional);
    ``trading_days_only``: no ticket when the New York date of ``at`` is not an exchange trading
    day (the backtest's daily replay; the daemon proposes any day, for the next session)."""
    at = to_utc(at)
    s = cfg.spx
    by_id = {r.id: r for r in spx_signals}
    s9 = by_id.get("S9")
    s9_firing = s9 is not None and s9.firing
    consensus = tuple(i for i in ("S10", "S11") if (r := by_id.get(i)) is not None and r.firing)
    beta = beta_view(decision.signals)
    spent = decision.session_spent_after_usd if session_spent_usd is None else session_spent_usd
    cap = cfg.session_cap_usd
    key = idempotency_key(ACTION, "spx", decision.session_id)
    notes: list[str] = []
    suppressed: list[tuple[str, str]] = []
    legs: list[SpxLeg] = []
    budget = Decimal(0)
    signals = tuple(r for r in decision.signals if r.id == "S8") + tuple(spx_signals)

    def out(fired: bool) -> SpxDecision:
        return SpxDecision(
            unix(at),
            decision.session_id,
            s9_firing,
            consensus,
            beta,
            decision.acted,
            fired,
            budget,
            cap,
            spent,
            tuple(legs),
            tuple(suppressed),
            tuple(notes),
            signals,
            spot,
            key,
            exposure_usd,
        )

    if not s.enabled:
        notes.append("SPX layer disabled (policy.spx.enabled = false)")
        return out(False)
    ny_day = (at + pd.Timedelta(hours=new_york_utc_offset_hours(at.date()))).date()
    if trading_days_only and not is_trading_day(ny_day):
        # The replay evaluates every UTC day; on weekends S9 carries Friday's reading, so it would
        # repeat Friday's ticket. Only days a person could act on count.
        notes.append(f"exchange closed on {ny_day} (New York; weekend or holiday): no ticket")
        return out(False)
    if not s9_firing:
        notes.append(
            "S9 not firing (VIX term structure not in backwardation)"
            if s9 is not None and not s9.insufficient
            else "S9 insufficient data: no ticket"
        )
        return out(False)
    why = {
        "not_rising": "beta check says S&P 500 first (S8 not rising)",
        "rising": "S8 rising: DeFi first",
        "insufficient": "S8 insufficient data",
    }[beta]
    if beta != "not_rising" and not decision.acted:
        notes.append(f"S9 fires but {why} and the DeFi layer did not act: no ticket")
        return out(False)
    notes.append(f"S9 fires; {why}" + ("; the DeFi layer also acts" if decision.acted else ""))
    if spot is None or spot.value <= 0:
        notes.append("no S&P 500 close to strike the puts from: no ticket")
        return out(False)
    vix = s9.metric("vix") if s9 is not None else None
    if vix is None or vix <= 0:
        notes.append("no VIX level for the premium estimate: no ticket")
        return out(False)
    remaining = max(Decimal(0), cap - spent)
    budget = min(remaining, cap * s.size_fraction)
    if open_remaining_usd is not None:
        budget = min(budget, max(Decimal(0), open_remaining_usd))
    budget = budget.quantize(CENT, rounding=ROUND_FLOOR)
    notes.append(
        f"budget ${budget} = min(session remaining ${remaining.quantize(CENT)} (cap ${cap} - "
        f"spent ${spent.quantize(CENT)}), "
        f"cap x {s.size_fraction}"
        + (
            f", open-layer remaining ${open_remaining_usd}"
            if open_remaining_usd is not None
            else ""
        )
        + ")"
    )
    if budget <= 0:
        used_up = "the session cap" if remaining <= 0 else "the open-layer budget"
        notes.append(f"{used_up} is used up: no ticket")
        return out(False)
    for h in s.horizons:
        if h.outer_wing and len(consensus) < s.wing_min_consensus:
            suppressed.append(
                (
                    h.name,
                    f"outer wing needs {s.wing_min_consensus} of S10/S11 firing, "
                    f"got {len(consensus)}",
                )
            )
            continue
        leg_budget = (budget * h.weight).quantize(CENT, rounding=ROUND_FLOOR)
        leg = _leg(h, at, spot.value, vix / 100.0, leg_budget, cfg, exposure_usd)
        if isinstance(leg, str):
            suppressed.append((h.name, leg))
        elif leg.contracts < 1:
            suppressed.append(
                (
                    h.name,
                    f"budget ${leg_budget} buys no contract at limit {leg.limit_price} "
                    f"x {leg.multiplier}"
                    if leg.capped_by == "budget"
                    else f"one contract's notional ({leg.strike} x {leg.multiplier}) exceeds "
                    f"{s.max_notional_fraction} x the position's collateral ${exposure_usd}",
                )
            )
        else:
            legs.append(leg)
    if not legs:
        notes.append("no leg affordable or listed: no ticket")
        return out(False)
    return out(True)


def spx_explain_lines(d: SpxDecision) -> list[str]:
    """One line per fact of the SPX layer decision, enough to recompute it by hand."""
    from agent.policy.explain import signal_line

    when = datetime.fromtimestamp(d.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [f"SPX layer at {when}, session {d.session_id}"]
    lines += [signal_line(r) for r in d.signals]
    if d.spot is not None:
        spot_day = datetime.fromtimestamp(d.spot.ts, UTC).date()
        lines.append(f"reference S&P 500 close {d.spot.value:.2f} ({spot_day}, {d.spot.source})")
    lines.append(
        f"S9 firing: {d.s9_firing}; consensus for the outer wings: {', '.join(d.consensus) or 'none'}; "
        f"beta check: {d.beta}; DeFi layer acted: {d.defi_acted}"
    )
    lines += [f"note: {n}" for n in d.notes]
    for leg in d.legs:
        lines.append(
            f"leg {leg.horizon}: BUY {leg.contracts} {leg.symbol} {leg.expiry} {leg.strike} PUT "
            f"({leg.otm_fraction * 100:g}% below {leg.spot:.2f}, {leg.dte} DTE, tau {leg.tau_years:.6f} y); "
            f"BS estimate {leg.est_premium:.4f} at vol {leg.vol:.4f}; limit {leg.limit_price} "
            "(estimate + markup, up to the tick); "
            f"contracts floor(${leg.budget_usd} / ({leg.limit_price} x "
            f"{leg.multiplier})) capped by {leg.capped_by} = {leg.contracts}; max ${leg.max_cost_usd}"
        )
    lines += [f"not proposed {h}: {r}" for h, r in d.suppressed]
    lines.append(ESTIMATE_NOTE)
    return lines
