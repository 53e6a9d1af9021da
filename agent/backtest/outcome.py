"""Would it have saved the position? A hypothetical Aave position followed day by day through
real prices, once without the agent and once applying what the backtest proposed.

Pure: prices and proposals in, frozen records out (no I/O, no clock).

The model, per UTC day ``t`` (prices: daily close, and the day's intraday low where the data
has one, so a wick that closed higher still liquidates):

1. **Liquidations** on the way from the previous close down to the day's low (a volatile debt
   asset at its close). Each is one ``liquidationCall`` as Aave V3 performs it: close factor 50%
   of the debt, or 100% at HF <= 0.95 (or under $2,000 a side); the liquidator seizes
   ``repaid * (1 + bonus)`` of collateral (all of it, and then only ``collateral / (1 + bonus)``
   of debt is repaid, when the collateral is short). The bonus is what the borrower loses beyond
   the repaid debt. Where it happens (``liquidation_model``): ``oracle-step`` (default) at the
   first oracle update past HF 1 (the HF-1 price less one deviation step), repeated while the
   price keeps falling to the low; ``day-low`` (the worst case) at the day's low.
2. **Execution** of each proposal made ``execution_delay_days`` earlier (a proposal needs its
   signers), at this day's close, after the day's low: a top-up buys collateral for its USD
   amount, a repay reduces the debt, a deleverage sells collateral and repays the proceeds less
   ``swap_cost_bps``; puts are bought at the close, struck ``otm_fraction`` below it, premium by
   Black-Scholes (r = 0) on the realised volatility of the last ``vol_window_days`` daily log
   returns, annualised with 365 days: **an estimate**, not a venue quote.
   Each put is held to its expiry: payoff ``contracts * max(K - S, 0)`` at the underlying's
   close on the expiry day, kept as cash (reported, not applied to the position).
3. **Proposals** the rule made at the end of ``t`` are sized against the position as it stands
   then (the live rule reads the real position): a top-up, repay or deleverage is cut to what
   reaches the proposal's target HF (less what is already pending), never raised above the amount
   the backtest proposed; puts keep their premium budget.

No interest accrues on the debt or the collateral; the debt asset is USDC at $1 unless a volatile
asset is chosen. Amounts are floats: this is a statistical replay of float price closes, not
on-chain accounting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from agent.core.units import AAVE_BASE_UNIT_USD, WAD
from agent.policy.decide import (
    health_factor_wad,
    required_deleverage_base,
    required_repay_base,
    required_topup_base,
)
from agent.policy.models import PositionSnapshot
from agent.policy.pricing import black_scholes_put

if TYPE_CHECKING:
    from agent.backtest.engine import BacktestResult

BPS = 10_000
CLOSE_FACTOR_HF_THRESHOLD = 0.95  # Aave V3: below this HF a liquidation may repay all the debt
DEFAULT_CLOSE_FACTOR = 0.5
MAX_CLOSE_FACTOR = 1.0
MIN_BASE_MAX_CLOSE_FACTOR_USD = 2_000.0  # v3.3+: smaller positions may be liquidated in full
STABLE = "usdc"  # priced at $1 (no USDC price history ships with the project)
DAYS_PER_YEAR = 365  # crypto trades every day

DteChoice = Literal["min", "mid", "max"]
LiquidationModel = Literal["oracle-step", "day-low"]
ActionKind = Literal["top-up", "repay", "deleverage"]


@dataclass(frozen=True)
class PositionSpec:
    """A hypothetical position: ``collateral`` and ``debt`` are price keys (``eth``, ``btc``) or
    ``usdc``; opened at ``health_factor`` with ``debt_usd`` of debt."""

    name: str
    collateral: str
    debt: str
    debt_usd: float
    health_factor: float
    liquidation_threshold_bps: int
    liquidation_bonus_bps: int  # 500 = Aave's configured 10500 (5%)

    def describe(self) -> str:
        return (
            f"{self.collateral.upper()} collateral, {self.debt.upper()} debt ${self.debt_usd:,.0f}, "
            f"HF {self.health_factor:g} at the start, LT {self.liquidation_threshold_bps / 100:g}%, "
            f"bonus {self.liquidation_bonus_bps / 100:g}%"
        )


# Aave V3 Ethereum parameters as the project's devnet configures them (agent/devnet/deploy.py):
# WETH LT 82.5%, WBTC LT 78%, liquidation bonus 10500 (5%) for both.
PRESETS: Mapping[str, PositionSpec] = {
    "eth": PositionSpec("eth", "eth", STABLE, 1_000_000.0, 1.45, 8250, 500),
    "eth-risky": PositionSpec("eth-risky", "eth", STABLE, 1_000_000.0, 1.25, 8250, 500),
    "btc": PositionSpec("btc", "btc", STABLE, 1_000_000.0, 1.45, 7800, 500),
}


@dataclass(frozen=True)
class OutcomeConfig:
    execution_delay_days: int = 1
    swap_cost_bps: int = 30  # a deleverage's swap: fee plus slippage
    vol_window_days: int = 30
    put_dte: DteChoice = "mid"  # where in the horizon's [dte_min, dte_max] the put expires
    # "oracle-step": liquidators act on the first oracle update that takes HF below 1 (the HF-1
    # price less one deviation step; Chainlink ETH/USD and BTC/USD deviate 0.5%), again while the
    # price keeps falling to the day's low. "day-low": the worst case, everything at the day's low.
    liquidation_model: LiquidationModel = "oracle-step"
    oracle_step_bps: int = 50

    def __post_init__(self) -> None:
        if self.execution_delay_days < 0:
            raise ValueError(f"execution delay must be >= 0 days, got {self.execution_delay_days}")
        if not 0 <= self.swap_cost_bps < BPS:
            raise ValueError(f"swap cost must be in [0, {BPS}) bps, got {self.swap_cost_bps}")
        if not 0 <= self.oracle_step_bps < BPS:
            raise ValueError(f"oracle step must be in [0, {BPS}) bps, got {self.oracle_step_bps}")
        if self.vol_window_days < 2:
            raise ValueError(f"vol window must be >= 2 days, got {self.vol_window_days}")


# -- the thin interface to the backtest: what the rule proposed, per day ----------------------


@dataclass(frozen=True)
class PutOrder:
    horizon: str
    underlying: str  # a price key: eth, btc
    otm_fraction: float
    dte_min: int
    dte_max: int
    premium_usd: float

    def dte(self, choice: DteChoice) -> int:
        lo, hi = max(1, self.dte_min), max(1, self.dte_max)
        return {"min": lo, "max": hi, "mid": math.ceil((lo + hi) / 2)}[choice]


@dataclass(frozen=True)
class Proposal:
    """One day's proposal, as the backtest's JSON day record states it (``actions``)."""

    day: date
    topup_usd: float = 0.0
    repay_usd: float = 0.0
    deleverage_usd: float = 0.0
    target_health_factor: float | None = None
    puts: tuple[PutOrder, ...] = ()
    unmodelled: tuple[str, ...] = ()  # action kinds this replay does not know

    @property
    def empty(self) -> bool:
        return not (self.topup_usd or self.repay_usd or self.deleverage_usd or self.puts)


_UNDERLYING = {"weth": "eth", "eth": "eth", "wbtc": "btc", "btc": "btc", "cbbtc": "btc"}


def proposal_from_actions(day: date, actions: Iterable[Mapping[str, Any]]) -> Proposal:
    """Read one day's proposed actions in the day record's JSON shape (``Action.as_dict()``):
    ``collateral_top_up`` (``max_spend_usd``, ``target_health_factor``), ``repay_debt`` and
    ``deleverage`` (``max_spend_usd`` or ``spend_usd``), ``option_put`` (``underlying``,
    ``otm_fraction``, ``dte_min``, ``dte_max``, ``spend_usd``). Unknown kinds are listed, not
    guessed at."""
    amounts = {"collateral_top_up": 0.0, "repay_debt": 0.0, "deleverage": 0.0}
    target: float | None = None
    puts: list[PutOrder] = []
    other: list[str] = []
    for a in actions:
        kind = str(a.get("kind"))
        if kind in amounts:
            amounts[kind] += float(Decimal(str(a.get("max_spend_usd", a.get("spend_usd", 0)))))
            t = a.get("target_health_factor")
            if t is not None:
                target = float(t) if target is None else max(target, float(t))
        elif kind == "option_put":
            und = str(a.get("underlying", "")).lower()
            puts.append(
                PutOrder(
                    str(a.get("horizon", "?")),
                    _UNDERLYING.get(und, und),
                    float(Decimal(str(a["otm_fraction"]))),
                    int(a["dte_min"]),
                    int(a["dte_max"]),
                    float(Decimal(str(a["spend_usd"]))),
                )
            )
        else:
            other.append(kind)
    return Proposal(
        day,
        amounts["collateral_top_up"],
        amounts["repay_debt"],
        amounts["deleverage"],
        target,
        tuple(puts),
        tuple(other),
    )


# -- prices -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceBook:
    """Daily closes (and intraday lows where known) per asset key, by UTC day."""

    closes: Mapping[str, Mapping[date, float]]
    lows: Mapping[str, Mapping[date, float]]

    def close(self, asset: str, day: date) -> float | None:
        if asset == STABLE:
            return 1.0
        return self.closes.get(asset, {}).get(day)

    def low(self, asset: str, day: date) -> float | None:
        """The day's worst price for a long holder: the low where known, else the close."""
        if asset == STABLE:
            return 1.0
        c = self.close(asset, day)
        lo = self.lows.get(asset, {}).get(day)
        if c is None:
            return None
        return c if lo is None else min(lo, c)

    def has_lows(self, asset: str) -> bool:
        return asset == STABLE or bool(self.lows.get(asset))

    def realised_vol(self, asset: str, day: date, window: int) -> float | None:
        """Annualised stdev of the last ``window`` daily log returns up to ``day`` (sample
        stdev, x sqrt(365)); None with fewer than ``window`` returns."""
        closes = []
        d = day
        for _ in range(window + 1 + 10):  # a few missing days are skipped
            c = self.close(asset, d)
            if c is not None:
                closes.append(c)
                if len(closes) == window + 1:
                    break
            d -= timedelta(days=1)
        if len(closes) < window + 1:
            return None
        rets = [math.log(closes[i] / closes[i + 1]) for i in range(window)]
        mean = sum(rets) / window
        var = sum((r - mean) ** 2 for r in rets) / (window - 1)
        return math.sqrt(var * DAYS_PER_YEAR)


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Liquidation:
    day: date
    collateral_price_usd: float
    health_factor_before: float
    close_factor: float
    debt_repaid_usd: float
    collateral_seized: float  # collateral units
    collateral_seized_usd: float
    bonus_usd: float  # seized value beyond the repaid debt: the borrower's loss
    health_factor_after: float  # inf when no debt is left


@dataclass(frozen=True)
class Execution:
    proposed_on: date
    day: date
    kind: ActionKind
    amount_usd: float  # top-up/repay: capital put in; deleverage: collateral sold
    price_usd: float  # collateral close the action used
    swap_cost_usd: float
    health_factor_before: float
    health_factor_after: float


@dataclass(frozen=True)
class PutHolding:
    proposed_on: date
    bought_on: date
    horizon: str
    underlying: str
    spot_usd: float
    strike_usd: float
    dte_days: int
    expiry: date
    vol: float
    premium_usd: float  # estimate: Black-Scholes on realised vol
    contracts: float  # units of the underlying covered
    settle_usd: float | None  # underlying close at expiry; None if after the data
    payoff_usd: float | None


@dataclass(frozen=True)
class OutcomeDay:
    day: date
    health_factor_low: float  # at the day's worst price, before any liquidation
    health_factor_close: float
    collateral: float  # units, at the close
    debt: float  # units of the debt asset, at the close


class LossesAndPuts:
    """The totals the daily and the hourly guarded replay's paths share."""

    liquidations: tuple[Liquidation, ...]
    puts: tuple[PutHolding, ...]

    @property
    def bonus_lost_usd(self) -> float:
        return sum(x.bonus_usd for x in self.liquidations)

    @property
    def premiums_usd(self) -> float:
        return sum(p.premium_usd for p in self.puts)

    @property
    def put_payoff_usd(self) -> float:
        return sum(p.payoff_usd or 0.0 for p in self.puts)


@dataclass(frozen=True)
class PathResult(LossesAndPuts):
    days: tuple[OutcomeDay, ...]
    liquidations: tuple[Liquidation, ...]
    executions: tuple[Execution, ...]
    puts: tuple[PutHolding, ...]
    skipped: tuple[str, ...]  # proposals not applied, and why

    @property
    def collateral_lost(self) -> float:
        return sum(x.collateral_seized for x in self.liquidations)

    @property
    def collateral_lost_usd(self) -> float:
        return sum(x.collateral_seized_usd for x in self.liquidations)

    @property
    def capital_committed_usd(self) -> float:
        """New money put into the position: top-ups and repays (a deleverage uses the position's
        own collateral; its cost is ``swap_cost_usd``). Premiums are separate."""
        return sum(e.amount_usd for e in self.executions if e.kind != "deleverage")

    @property
    def swap_cost_usd(self) -> float:
        return sum(e.swap_cost_usd for e in self.executions)

    @property
    def lowest_health_factor(self) -> float | None:
        return min((d.health_factor_low for d in self.days), default=None)

    def totals(self) -> dict[str, Any]:
        return {
            "liquidations": len(self.liquidations),
            "collateral_lost": self.collateral_lost,
            "collateral_lost_usd": self.collateral_lost_usd,
            "bonus_lost_usd": self.bonus_lost_usd,
            "capital_committed_usd": self.capital_committed_usd,
            "swap_cost_usd": self.swap_cost_usd,
            "premiums_usd_estimate": self.premiums_usd,
            "put_payoff_usd": self.put_payoff_usd,
            "puts_open_at_data_end": sum(p.payoff_usd is None for p in self.puts),
            "lowest_health_factor": self.lowest_health_factor,
        }

    def record(self) -> dict[str, Any]:
        return {
            "totals": self.totals(),
            "liquidations": [_rec(x) for x in self.liquidations],
            "executions": [_rec(x) for x in self.executions],
            "puts": [_rec(x) for x in self.puts],
            "skipped": list(self.skipped),
            "days": [
                {
                    "date": d.day.isoformat(),
                    "hf_low": _num(d.health_factor_low),
                    "hf_close": _num(d.health_factor_close),
                    "collateral": d.collateral,
                    "debt": d.debt,
                }
                for d in self.days
            ],
        }


def _num(x: float) -> float | None:
    return None if math.isinf(x) or math.isnan(x) else x


def _rec(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in vars(obj).items():
        out[k] = v.isoformat() if isinstance(v, date) else _num(v) if isinstance(v, float) else v
    return out


@dataclass(frozen=True)
class OutcomeRun:
    label: str
    start: date
    end: date
    without: PathResult
    with_agent: PathResult
    proposal_days: tuple[date, ...]

    def record(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "proposal_days": [d.isoformat() for d in self.proposal_days],
            "without_agent": self.without.record(),
            "with_agent": self.with_agent.record(),
        }


# -- the simulation ---------------------------------------------------------------------------


def _hf(coll: float, debt: float, pc: float, pd_: float, lt_bps: int) -> float:
    if debt <= 0:
        return math.inf
    return coll * pc * lt_bps / BPS / (debt * pd_)


def liquidate(
    coll: float, debt: float, pc: float, pd_: float, lt_bps: int, bonus_bps: int, day: date
) -> tuple[float, float, Liquidation]:
    """One ``liquidationCall`` at prices ``pc`` (collateral) and ``pd_`` (debt) on a position with
    HF < 1: returns the collateral and debt left and the record."""
    hf = _hf(coll, debt, pc, pd_, lt_bps)
    # LiquidationLogic: 50% only while HF > 0.95 and both sides are worth at least $2,000 (v3.3+)
    big = min(coll * pc, debt * pd_) >= MIN_BASE_MAX_CLOSE_FACTOR_USD
    cf = DEFAULT_CLOSE_FACTOR if hf > CLOSE_FACTOR_HF_THRESHOLD and big else MAX_CLOSE_FACTOR
    bonus = bonus_bps / BPS
    repay_usd = cf * debt * pd_
    seize = repay_usd * (1 + bonus) / pc
    if seize > coll:  # not enough collateral: take it all, repay what it covers
        seize = coll
        repay_usd = coll * pc / (1 + bonus)
    coll2 = coll - seize
    debt2 = max(0.0, debt - repay_usd / pd_)
    seized_usd = seize * pc
    rec = Liquidation(
        day,
        pc,
        hf,
        cf,
        repay_usd,
        seize,
        seized_usd,
        seized_usd - repay_usd,
        _hf(coll2, debt2, pc, pd_, lt_bps),
    )
    return coll2, debt2, rec


@dataclass(frozen=True)
class _Pending:
    due: date
    proposal: Proposal
    topup_usd: float
    repay_usd: float
    deleverage_usd: float


@dataclass
class Holding:
    """The position as it stands: collateral in units, debt in units of the debt asset. The
    daily replay and the hourly guarded replay (:mod:`agent.backtest.guarded`) both move it
    through :func:`liquidate_to_low` and :func:`apply_at_close`, so their bookkeeping is one."""

    coll: float
    debt: float


def liquidate_to_low(
    pos: Holding,
    p_low: float,
    p_from: float,
    pd_: float,
    lt: int,
    bonus_bps: int,
    cfg: OutcomeConfig,
    day: date,
) -> list[Liquidation]:
    """The liquidations on the way from ``p_from`` down to ``p_low`` (collateral prices; the debt
    at ``pd_``), each one :func:`liquidate` call, applied to ``pos``; where they happen is
    ``cfg.liquidation_model``."""
    out: list[Liquidation] = []
    for _ in range(50):  # each call improves HF or empties the position
        if pos.debt <= 0 or pos.coll <= 0 or _hf(pos.coll, pos.debt, p_low, pd_, lt) >= 1:
            break
        p_liq = p_low
        if cfg.liquidation_model == "oracle-step":
            # the first oracle update past HF 1: the HF-1 price less one deviation step
            p_one = pos.debt * pd_ * BPS / (pos.coll * lt)
            p_liq = min(p_from, max(p_low, p_one * (1 - cfg.oracle_step_bps / BPS)))
        pos.coll, pos.debt, rec = liquidate(pos.coll, pos.debt, p_liq, pd_, lt, bonus_bps, day)
        out.append(rec)
        if pos.coll <= 0:  # nothing left: Aave (3.3+) writes the rest off as a deficit
            pos.debt = 0.0
    return out


def apply_at_close(
    day: date,
    pc: float,
    pd_: float,
    pos: Holding,
    lt: int,
    today: Proposal | None,
    pending: list[_Pending],
    cfg: OutcomeConfig,
    prices: PriceBook,
    execs: list[Execution],
    puts: list[PutHolding],
    skipped: list[str],
) -> None:
    """Steps 2 and 3 at this day's close (collateral at ``pc``, debt at ``pd_``): the proposals
    due today are executed on ``pos``, then ``today``'s proposal is sized on ``pos`` as it is now
    (with no delay it is executed at once, at the same close)."""
    swap = cfg.swap_cost_bps / BPS
    for phase in ("due", "today"):
        prop_today = today if phase == "today" else None
        if prop_today is not None:
            pending.append(
                _size(prop_today, day, pos.coll, pos.debt, pc, pd_, lt, swap, pending, cfg)
            )
        for pend in [p for p in pending if p.due <= day]:
            pending.remove(pend)
            prop = pend.proposal
            steps: tuple[tuple[ActionKind, float], ...] = (
                ("top-up", pend.topup_usd),
                ("repay", pend.repay_usd),
                ("deleverage", pend.deleverage_usd),
            )
            for kind, usd in steps:
                if usd <= 0:
                    continue
                if pos.coll <= 0:
                    skipped.append(f"{prop.day}: {kind} not applied: position liquidated in full")
                    continue
                before = _hf(pos.coll, pos.debt, pc, pd_, lt)
                cost = 0.0
                if kind == "top-up":
                    pos.coll += usd / pc
                elif kind == "repay":
                    usd = min(usd, pos.debt * pd_)
                    pos.debt -= usd / pd_
                else:
                    usd = min(usd, pos.coll * pc)
                    cost = usd * swap
                    pos.coll -= usd / pc
                    pos.debt = max(0.0, pos.debt - (usd - cost) / pd_)
                after = _hf(pos.coll, pos.debt, pc, pd_, lt)
                execs.append(Execution(prop.day, day, kind, usd, pc, cost, before, after))
            for order in prop.puts:
                held = _buy_put(prop.day, day, order, prices, cfg)
                if isinstance(held, str):
                    skipped.append(held)
                else:
                    puts.append(held)


def simulate(
    pos: PositionSpec,
    prices: PriceBook,
    start: date,
    end: date,
    proposals: Sequence[Proposal] = (),
    cfg: OutcomeConfig | None = None,
) -> PathResult:
    """Follow ``pos`` (opened at the close of ``start``) to the close of ``end``, applying
    ``proposals`` (none: the position without the agent)."""
    cfg = cfg or OutcomeConfig()
    lt, c_key, d_key = pos.liquidation_threshold_bps, pos.collateral, pos.debt
    by_day = {p.day: p for p in proposals if start <= p.day <= end and not p.empty}
    pc0, pd0 = prices.close(c_key, start), prices.close(d_key, start)
    if pc0 is None or pd0 is None:
        raise ValueError(f"no {c_key}/{d_key} close on {start} to open the position")
    h = Holding(pos.health_factor * pos.debt_usd * BPS / lt / pc0, pos.debt_usd / pd0)
    days: list[OutcomeDay] = []
    liqs: list[Liquidation] = []
    execs: list[Execution] = []
    puts: list[PutHolding] = []
    skipped: list[str] = []
    pending: list[_Pending] = []

    p_prev = pc0
    day = start
    while day <= end:
        pc, pd_ = prices.close(c_key, day), prices.close(d_key, day)
        if pc is None or pd_ is None:  # a gap in the data: nothing can be priced today
            day += timedelta(days=1)
            continue
        # 1. liquidations on the way down to the day's low (the opening day's low came before it)
        p_low = pc if day == start else (prices.low(c_key, day) or pc)
        today = liquidate_to_low(h, p_low, p_prev, pd_, lt, pos.liquidation_bonus_bps, cfg, day)
        liqs += today
        # the lowest HF the position reached today: at a liquidation, or at the low after them
        hf_low = min(
            [x.health_factor_before for x in today] + [_hf(h.coll, h.debt, p_low, pd_, lt)]
        )
        p_prev = pc
        # 2. proposals due today, at the close; 3. today's proposal, sized on the position now
        apply_at_close(
            day, pc, pd_, h, lt, by_day.get(day), pending, cfg, prices, execs, puts, skipped
        )
        days.append(OutcomeDay(day, hf_low, _hf(h.coll, h.debt, pc, pd_, lt), h.coll, h.debt))
        day += timedelta(days=1)
    skipped += [
        f"{p.proposal.day}: due {p.due}, after the end {end}: not executed" for p in pending
    ]
    return PathResult(tuple(days), tuple(liqs), tuple(execs), tuple(puts), tuple(skipped))


def _size(
    prop: Proposal,
    day: date,
    coll: float,
    debt: float,
    pc: float,
    pd_: float,
    lt: int,
    swap: float,
    pending: Sequence[_Pending],
    cfg: OutcomeConfig,
) -> _Pending:
    """Cut the protective amounts to what reaches the proposal's target HF from the position as it
    is at the proposal (less what earlier proposals still have pending); never above the amount
    the backtest proposed. The amounts are the policy's own sizing functions
    (:func:`required_topup_base` and its repay and deleverage siblings) on the position in Aave
    base units."""
    due = day + timedelta(days=cfg.execution_delay_days)
    target = prop.target_health_factor
    if target is None:  # no target stated: apply as proposed
        return _Pending(due, prop, prop.topup_usd, prop.repay_usd, prop.deleverage_usd)
    need_topup, need_repay, need_delev = needed_usd(
        coll * pc, debt * pd_, lt, target, round(swap * BPS)
    )
    return _Pending(
        due,
        prop,
        min(prop.topup_usd, max(0.0, need_topup - sum(p.topup_usd for p in pending))),
        min(prop.repay_usd, max(0.0, need_repay - sum(p.repay_usd for p in pending))),
        prop.deleverage_usd
        if need_delev is None
        else min(
            prop.deleverage_usd, max(0.0, need_delev - sum(p.deleverage_usd for p in pending))
        ),
    )


def needed_usd(
    collateral_usd: float, debt_usd: float, lt_bps: int, target_hf: float, cost_bps: int
) -> tuple[float, float, float | None]:
    """Top-up, repay and deleverage (collateral sold) in USD that each alone take the position to
    ``target_hf``: the policy's integer sizing on the position in Aave base units (1e-8 USD);
    None for a deleverage that cannot reach the target at ``cost_bps``."""
    c = round(collateral_usd * AAVE_BASE_UNIT_USD)
    d = round(debt_usd * AAVE_BASE_UNIT_USD)
    h = round(target_hf * WAD)
    snap = PositionSnapshot("backtest", c, d, lt_bps, health_factor_wad(c, d, lt_bps))
    delev = required_deleverage_base(c, d, lt_bps, h, cost_bps)
    return (
        required_topup_base(snap, h) / AAVE_BASE_UNIT_USD,
        required_repay_base(c, d, lt_bps, h) / AAVE_BASE_UNIT_USD,
        None if delev is None else delev / AAVE_BASE_UNIT_USD,
    )


def _buy_put(
    proposed: date, day: date, order: PutOrder, prices: PriceBook, cfg: OutcomeConfig
) -> PutHolding | str:
    spot = prices.close(order.underlying, day)
    vol = prices.realised_vol(order.underlying, day, cfg.vol_window_days)
    if spot is None or vol is None:
        return f"{proposed}: put {order.horizon} on {order.underlying}: no price or vol on {day}"
    dte = order.dte(cfg.put_dte)
    strike = spot * (1 - order.otm_fraction)
    unit = black_scholes_put(spot, strike, dte / DAYS_PER_YEAR, vol)
    if unit <= 0:
        return f"{proposed}: put {order.horizon}: zero Black-Scholes price on {day}"
    contracts = order.premium_usd / unit
    expiry = day + timedelta(days=dte)
    settle = prices.close(order.underlying, expiry)
    payoff = None if settle is None else contracts * max(strike - settle, 0.0)
    return PutHolding(
        proposed,
        day,
        order.horizon,
        order.underlying,
        spot,
        strike,
        dte,
        expiry,
        vol,
        order.premium_usd,
        contracts,
        settle,
        payoff,
    )


# -- episodes ---------------------------------------------------------------------------------

# The named stress episodes of the README, each followed over its calendar month with a position
# opened at the start HF on the month's first day.
NAMED_EPISODES: tuple[tuple[str, date, date], ...] = (
    ("March 2020", date(2020, 3, 1), date(2020, 3, 31)),
    ("May 2022 (Terra)", date(2022, 5, 1), date(2022, 5, 31)),
    ("June 2022 (Celsius/3AC)", date(2022, 6, 1), date(2022, 6, 30)),
    ("Nov 2022 (FTX)", date(2022, 11, 1), date(2022, 11, 30)),
    ("Aug 2024 (yen carry)", date(2024, 8, 1), date(2024, 8, 31)),
)


def run_window(
    label: str,
    pos: PositionSpec,
    prices: PriceBook,
    start: date,
    end: date,
    proposals: Sequence[Proposal],
    cfg: OutcomeConfig,
) -> OutcomeRun:
    inside = tuple(p for p in proposals if start <= p.day <= end and not p.empty)
    return OutcomeRun(
        label,
        start,
        end,
        simulate(pos, prices, start, end, (), cfg),
        simulate(pos, prices, start, end, inside, cfg),
        tuple(p.day for p in inside),
    )


@dataclass(frozen=True)
class OutcomeReport:
    position: PositionSpec
    config: OutcomeConfig
    whole: OutcomeRun
    episodes: tuple[OutcomeRun, ...]
    notes: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        return {
            "position": vars(self.position),
            "config": vars(self.config),
            "premiums": "estimate: Black-Scholes (r = 0) on realised "
            f"{self.config.vol_window_days}-day volatility, not a venue quote",
            "notes": list(self.notes),
            "whole_range": self.whole.record(),
            "episodes": [e.record() for e in self.episodes],
        }


def outcome_report(
    pos: PositionSpec,
    prices: PriceBook,
    start: date,
    end: date,
    proposals: Sequence[Proposal],
    cfg: OutcomeConfig | None = None,
    episodes: Sequence[tuple[str, date, date]] = NAMED_EPISODES,
) -> OutcomeReport:
    """The whole range (position opened at ``start``) and each named episode inside it (a fresh
    position opened at the episode's start)."""
    cfg = cfg or OutcomeConfig()
    notes = []
    if not prices.has_lows(pos.collateral):
        notes.append(f"no intraday lows for {pos.collateral}: liquidations checked at the close")
    unmodelled = sorted({k for p in proposals for k in p.unmodelled})
    if unmodelled:
        notes.append(f"action kinds not modelled (ignored): {', '.join(unmodelled)}")
    whole = run_window(f"whole range from {start}", pos, prices, start, end, proposals, cfg)
    eps = tuple(
        run_window(label, pos, prices, s, e, proposals, cfg)
        for label, s, e in episodes
        if start <= s and e <= end
    )
    return OutcomeReport(pos, cfg, whole, eps, tuple(notes))


def price_book(closes: Mapping[str, pd.Series], lows: Mapping[str, pd.Series]) -> PriceBook:
    """From daily series indexed by UTC day start (the store's shape)."""

    def by_day(s: pd.Series) -> dict[date, float]:
        idx = pd.DatetimeIndex(s.index)
        return {
            ts.date(): float(v) for ts, v in zip(idx, s.to_numpy(), strict=True) if v == v and v > 0
        }

    return PriceBook(
        {k: by_day(s) for k, s in closes.items()}, {k: by_day(s) for k, s in lows.items()}
    )


def proposals_from_backtest(result: BacktestResult) -> tuple[Proposal, ...]:
    """The days the rule proposed something, read through the actions' JSON shape."""
    return tuple(
        proposal_from_actions(r.day, [a.as_dict() for a in r.decision.actions])
        for r in result.days
        if r.decision.actions
    )
