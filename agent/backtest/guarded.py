"""The outcome with the liquidation guard, hour by hour (issue 22 items 5 and 7).

Pure: bars, signals and proposals in, frozen records out (no I/O, no clock). The guard's trigger
and hysteresis are the daemon's own functions (:func:`agent.policy.guard.effective_trigger`,
:func:`agent.policy.guard.guard_verdict`, :func:`agent.policy.guard.guard_room_usd`), and the
amounts are the policy's sizing (:func:`agent.backtest.outcome.needed_usd`), so the backtest
cannot drift from what the agent does.

The model, bar by bar (an hour where the shipped hourly USD path has one, else a UTC day):

* **Interest**: at the start of each UTC day after the first, the debt grows by one day of the
  stablecoin borrow rate (``rates``: APR per day; a day without one uses
  ``GuardModel.borrow_apr_fallback``).
* **Hourly bar**: an hour whose low (``lows_deeper`` makes it deeper) takes HF below 1
  **liquidates first** (Aave V3 ``liquidationCall``, oracle-step model as in the daily replay);
  then the guard evaluates the HF at that hour's low against the trigger in force (raised while
  the layer rule's stress signals fire, as known at the end of the previous UTC day: no
  look-ahead); a proposal **fills at that hour's close less ``gap_bps``** (conservative: the
  order lands when the hour is over).
* **Daily bar** (no hourly price for the day): the guard acts at the **guard price** (HF = the
  trigger) moved by the gap, is re-checked after each action (the new guard price is lower, and
  if the day's low crosses it, it acts again), then the liquidation check runs at the day's low.
* **Execution**: ``autonomous`` fills in the bar that triggered it; ``signers`` fills at the
  close (less the gap) of the first bar that ends ``delay_hours`` after the proposal, with the
  amounts fixed when it was proposed (a Safe transaction is signed as proposed).
* **The guard's action**: its budget (``GuardConfig.budget_usd`` per UTC day) repays debt first;
  what the budget does not cover is a deleverage (collateral sold, the proceeds less
  ``swap_cost_bps`` repay debt), together sized to reach ``target_hf`` at the fill price.
  Costs: ``gas_usd`` per transaction and the swap cost (the project's own); for the baseline
  an automation service's fee schedule is reported beside it (``service_tx_bps`` of each
  automated transaction plus ``service_swap_bps`` of each swap).
* The lowest HF is the real one: the HF at each bar's low before any liquidation in it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from agent.backtest.hourly import HOUR, HourlyPath
from agent.backtest.outcome import (
    BPS,
    DAYS_PER_YEAR,
    Execution,
    Holding,
    Liquidation,
    LossesAndPuts,
    OutcomeConfig,
    PositionSpec,
    PriceBook,
    Proposal,
    PutHolding,
    _hf,
    _Pending,
    apply_at_close,
    liquidate_to_low,
    needed_usd,
)
from agent.core.units import AAVE_BASE_UNIT_USD, WAD
from agent.policy.guard import (
    NO_DEBT_HF,
    GuardConfig,
    GuardState,
    effective_trigger,
    guard_room_usd,
    guard_verdict,
    price_at_hf,
)

ExecutionMode = Literal["autonomous", "signers"]
DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Bar:
    t: int  # bar start, unix (UTC)
    open: float
    low: float
    close: float
    hourly: bool

    @property
    def end(self) -> int:
        return self.t + (HOUR if self.hourly else DAY_S)

    @property
    def day(self) -> date:
        return datetime.fromtimestamp(self.t, UTC).date()


def _unix(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())


def bars_for(
    path: HourlyPath | None, book: PriceBook, asset: str, start: date, end: date
) -> tuple[Bar, ...]:
    """Hourly bars for the days the hourly path covers, a daily bar (open = the previous
    close, low = the day's low) for the others; days with no price at all are skipped."""
    out: list[Bar] = []
    prev: float | None = None
    day = start
    while day <= end:
        if path is not None and path.covers(day):
            i = path.index(_unix(day))
            for k in range(i, i + 24):
                out.append(
                    Bar(
                        path.t0 + k * HOUR,
                        float(path.open[k]),
                        float(path.low[k]),
                        float(path.close[k]),
                        True,
                    )
                )
            prev = out[-1].close
        else:
            c, lo = book.close(asset, day), book.low(asset, day)
            if c is not None:
                o = prev if prev is not None else c
                out.append(Bar(_unix(day), o, min(lo or c, c, o), c, False))
                prev = c
        day += timedelta(days=1)
    return tuple(out)


@dataclass(frozen=True)
class GuardModel:
    guard: GuardConfig = field(default_factory=GuardConfig)
    gap_bps: int = 100
    execution: ExecutionMode = "autonomous"
    delay_hours: int = 0  # signers: hours from the proposal to its execution
    swap_cost_bps: int = 30  # a deleverage's swap: pool fee and price impact
    gas_usd: float = 20.0  # per transaction (the project's own cost)
    stress_aware: bool = True  # the trigger rises while the stress signals fire
    service_tx_bps: int = 5  # baseline: an automation service's 0.05% of each transaction
    service_swap_bps: int = 25  # ... plus 0.25% of each swap

    def __post_init__(self) -> None:
        if not 0 <= self.gap_bps < BPS:
            raise ValueError(f"guard gap must be in [0, {BPS}) bps, got {self.gap_bps}")
        if self.delay_hours < 0:
            raise ValueError(f"signer delay must be >= 0 hours, got {self.delay_hours}")
        if self.execution == "autonomous" and self.delay_hours:
            raise ValueError("--execution autonomous has no signer delay")
        if not 0 <= self.swap_cost_bps < BPS:
            raise ValueError(f"swap cost must be in [0, {BPS}) bps, got {self.swap_cost_bps}")

    def describe(self) -> str:
        g = self.guard
        ex = (
            "autonomous (fills in the triggering bar)"
            if self.execution == "autonomous"
            else f"signers, {self.delay_hours}h delay"
        )
        stress = (
            f", {g.stress_trigger_hf_wad / WAD:g} while a stress signal fires (as known at the "
            "previous day's end)"
            if self.stress_aware and g.stress_trigger_hf_wad is not None
            else " (stress-aware trigger off)"
        )
        return (
            f"guard: trigger HF {g.trigger_hf_wad / WAD:g}{stress}, target {g.target_hf_wad / WAD:g}, "
            f"budget ${g.budget_usd:,} a day (repays first, deleverages the rest); execution {ex}; "
            f"gap {self.gap_bps} bps; swap cost {self.swap_cost_bps} bps; gas ${self.gas_usd:g}/tx"
        )


@dataclass(frozen=True)
class GuardAction:
    proposed_at: int
    at: int  # execution (bar end)
    price_usd: float  # fill price
    repay_usd: float  # from the guard's budget
    collateral_sold: float  # units (deleverage)
    collateral_sold_usd: float
    swap_cost_usd: float
    gas_usd: float
    health_factor_before: float
    health_factor_after: float
    reason: str

    @property
    def transactions(self) -> int:
        return int(self.repay_usd > 0) + int(self.collateral_sold > 0)


@dataclass(frozen=True)
class GuardedPath(LossesAndPuts):
    liquidations: tuple[Liquidation, ...]
    actions: tuple[GuardAction, ...]
    executions: tuple[Execution, ...]  # the layer rule's proposals, as in the daily replay
    puts: tuple[PutHolding, ...]
    lowest_health_factor: float
    lowest_at: int
    interest_usd: float
    bars_hourly: int
    bars_daily: int
    skipped: tuple[str, ...] = ()

    @property
    def collateral_sold_usd(self) -> float:
        return sum(a.collateral_sold_usd for a in self.actions)

    @property
    def guard_repaid_usd(self) -> float:
        return sum(a.repay_usd for a in self.actions)

    @property
    def own_cost_usd(self) -> float:
        """Gas and swap costs of the guard's actions and of the layer rule's deleverages."""
        return sum(a.gas_usd + a.swap_cost_usd for a in self.actions) + sum(
            e.swap_cost_usd for e in self.executions
        )

    def service_fee_usd(self, tx_bps: int, swap_bps: int) -> float:
        """An automation service's fee on the same guard actions (on top of gas and swaps)."""
        return sum(
            (a.repay_usd + a.collateral_sold_usd) * tx_bps / BPS
            + a.collateral_sold_usd * swap_bps / BPS
            for a in self.actions
        )

    def record(self) -> dict[str, Any]:
        return {
            "liquidations": len(self.liquidations),
            "bonus_lost_usd": self.bonus_lost_usd,
            "guard_actions": len(self.actions),
            "guard_repaid_usd": self.guard_repaid_usd,
            "collateral_sold_usd": self.collateral_sold_usd,
            "own_cost_usd": self.own_cost_usd,
            "premiums_usd_estimate": self.premiums_usd,
            "put_payoff_usd": self.put_payoff_usd,
            "interest_usd": self.interest_usd,
            "lowest_health_factor": self.lowest_health_factor,
            "lowest_at": datetime.fromtimestamp(self.lowest_at, UTC).isoformat(),
            "bars_hourly": self.bars_hourly,
            "bars_daily": self.bars_daily,
        }


@dataclass(frozen=True)
class _GuardOrder:
    proposed_at: int
    due: int
    repay_usd: float
    sell_units: float
    hf_before: float
    reason: str


def _guard_price(pos: Holding, ref_price: float, lt: int, trigger_hf_wad: int) -> float | None:
    """The collateral price at which HF = the trigger: the daemon's :func:`price_at_hf` on the
    position in Aave base units (1e-8 USD), prices at 1e-8."""
    c = round(pos.coll * ref_price * AAVE_BASE_UNIT_USD)
    d = round(pos.debt * AAVE_BASE_UNIT_USD)
    p = price_at_hf(c, d, lt, round(ref_price * AAVE_BASE_UNIT_USD), trigger_hf_wad)
    return None if p is None else p / AAVE_BASE_UNIT_USD


def _hf_wad(hf: float) -> int:
    return NO_DEBT_HF if math.isinf(hf) else int(hf * WAD)


def simulate_guarded(
    spec: PositionSpec,
    bars: Sequence[Bar],
    model: GuardModel | None,
    *,
    opening_hf: float | None = None,
    stress: Mapping[date, frozenset[str]] | None = None,
    rates: Mapping[date, float] | None = None,
    proposals: Sequence[Proposal] = (),
    book: PriceBook | None = None,
    rule_cfg: OutcomeConfig | None = None,
    lows_deeper: float = 0.0,
    borrow_apr_fallback: float = 0.05,
) -> GuardedPath:
    """Follow ``spec`` opened at ``opening_hf`` (default: the spec's) at the first bar's open
    through ``bars``; ``model`` None: the position without the guard. ``proposals`` (the layer
    rule's, needs ``book``) are applied at the close of each UTC day as in the daily replay."""
    if not bars:
        raise ValueError("no price bars in the window")
    if spec.debt != "usdc":
        raise ValueError(f"the hourly outcome models USDC debt at $1, not {spec.debt}")
    if not 0 <= lows_deeper < 1:
        raise ValueError(f"lows deeper must be in [0, 1), got {lows_deeper}")
    lt, bonus = spec.liquidation_threshold_bps, spec.liquidation_bonus_bps
    hf0 = spec.health_factor if opening_hf is None else opening_hf
    p0 = bars[0].open
    pos = Holding(hf0 * spec.debt_usd * BPS / lt / p0, spec.debt_usd)
    rcfg = rule_cfg or OutcomeConfig()
    by_day = {p.day: p for p in proposals if not p.empty}
    liqs: list[Liquidation] = []
    actions: list[GuardAction] = []
    execs: list[Execution] = []
    puts: list[PutHolding] = []
    skipped: list[str] = []
    rule_pending: list[_Pending] = []
    orders: list[_GuardOrder] = []
    state = GuardState()
    lowest, lowest_at = math.inf, bars[0].t
    interest = 0.0
    spent_day: date | None = None
    spent = 0.0
    deeper = 1.0 - lows_deeper
    gap = (model.gap_bps / BPS) if model else 0.0
    cur_day = bars[0].day

    def trigger_now(day: date) -> Any:
        assert model is not None
        firing: frozenset[str] = frozenset()
        if model.stress_aware and stress is not None:
            firing = stress.get(day - timedelta(days=1), frozenset())
        return effective_trigger(model.guard, firing)

    def liquidations_at(low: float, p_from: float, day: date) -> None:
        liqs.extend(liquidate_to_low(pos, low, p_from, 1.0, lt, bonus, rcfg, day))

    def order_for(price: float, at: int, reason: str) -> _GuardOrder | None:
        """Repay from the day's budget, deleverage the rest, to the target at ``price``."""
        assert model is not None
        nonlocal spent, spent_day
        day = datetime.fromtimestamp(at - 1, UTC).date()
        if spent_day != day:
            spent_day, spent = day, 0.0
        target = model.guard.target_hf_wad / WAD
        c_usd = pos.coll * price
        _, need_repay, _ = needed_usd(c_usd, pos.debt, lt, target, model.swap_cost_bps)
        room = float(guard_room_usd(model.guard, Decimal(str(round(spent, 2)))))
        repay = min(need_repay, room, pos.debt)
        _, _, delev = needed_usd(c_usd, pos.debt - repay, lt, target, model.swap_cost_bps)
        sell_usd = min(delev if delev is not None else c_usd, c_usd)
        if repay <= 0 and sell_usd <= 0:
            return None
        spent += repay
        return _GuardOrder(
            at, at, repay, sell_usd / price, _hf(pos.coll, pos.debt, price, 1.0, lt), reason
        )

    def execute(o: _GuardOrder, price: float, at: int) -> None:
        assert model is not None
        if pos.coll <= 0 or pos.debt <= 0:
            skipped.append(f"guard order of {o.proposed_at}: position closed before it executed")
            return
        before = _hf(pos.coll, pos.debt, price, 1.0, lt)
        repay = min(o.repay_usd, pos.debt)
        pos.debt -= repay
        sell = min(o.sell_units, pos.coll)
        sold_usd = sell * price
        cost = sold_usd * model.swap_cost_bps / BPS
        pos.coll -= sell
        pos.debt = max(0.0, pos.debt - (sold_usd - cost))
        n_tx = int(repay > 0) + int(sell > 0)
        actions.append(
            GuardAction(
                o.proposed_at,
                at,
                price,
                repay,
                sell,
                sold_usd,
                cost,
                model.gas_usd * n_tx,
                before,
                _hf(pos.coll, pos.debt, price, 1.0, lt),
                o.reason,
            )
        )

    def guard_at(hf_seen: float, at: int, fill: float, day: date) -> bool:
        """Evaluate the guard; place (and, autonomous, fill) its order. True if it proposed."""
        assert model is not None
        nonlocal state
        v = guard_verdict(model.guard, state, _hf_wad(hf_seen), trigger_now(day), at)
        state = v.state
        if not v.propose:
            return False
        o = order_for(fill, at, v.reason)
        if o is None:
            return True
        if model.execution == "autonomous":
            execute(o, fill, at)
            # the next evaluation sees the executed position (the daemon's next tick)
            after = _hf(pos.coll, pos.debt, fill, 1.0, lt)
            state = guard_verdict(model.guard, state, _hf_wad(after), trigger_now(day), at).state
        else:
            orders.append(
                _GuardOrder(
                    o.proposed_at,
                    at + model.delay_hours * HOUR,
                    o.repay_usd,
                    o.sell_units,
                    o.hf_before,
                    o.reason,
                )
            )
        return True

    n_hourly = n_daily = 0
    for i, bar in enumerate(bars):
        day = bar.day
        if day != cur_day:  # a new UTC day: one day of borrow interest on the debt
            apr = (rates or {}).get(cur_day, borrow_apr_fallback)
            add = pos.debt * apr / DAYS_PER_YEAR
            pos.debt += add
            interest += add
            cur_day = day
        low = bar.low * deeper
        hf_low = _hf(pos.coll, pos.debt, low, 1.0, lt)
        if hf_low < lowest:
            lowest, lowest_at = hf_low, bar.t
        if bar.hourly:
            n_hourly += 1
            liquidations_at(low, min(bar.open, bars[i - 1].close if i else bar.open), day)
            if model is not None and pos.debt > 0 and pos.coll > 0:
                # the guard sees the hour's low on what the liquidations left
                seen = _hf(pos.coll, pos.debt, low, 1.0, lt)
                guard_at(seen, bar.end, bar.close * (1 - gap), day)
        else:
            n_daily += 1
            if model is not None:
                for _ in range(20):  # re-checked after each action: the guard price moves down
                    if pos.debt <= 0 or pos.coll <= 0:
                        break
                    t_wad = trigger_now(day).trigger_hf_wad
                    gp = _guard_price(pos, bar.open, lt, t_wad)
                    if gp is None or low > gp:
                        break
                    p = min(gp, bar.open)  # opened below the guard price: acts at the open
                    # the price went through the guard price: the guard saw HF <= trigger
                    # (price_at_hf rounds the level up, so HF there may read a hair above)
                    seen = min(_hf(pos.coll, pos.debt, p, 1.0, lt), t_wad / WAD)
                    if not guard_at(seen, bar.end, p * (1 - gap), day):
                        break
            liquidations_at(low, bar.open, day)
        # signer orders due by the end of this bar fill at its close less the gap
        if orders:
            for o in [o for o in orders if o.due <= bar.end]:
                orders.remove(o)
                execute(o, bar.close * (1 - gap), bar.end)
        # the layer rule's proposals at the day's close (its own execution delay)
        last_of_day = i + 1 == len(bars) or bars[i + 1].day != day
        if last_of_day and (by_day or rule_pending) and book is not None:
            # the daily replay's steps 2 and 3 (see :func:`outcome.simulate`), debt at $1
            apply_at_close(
                day,
                bar.close,
                1.0,
                pos,
                lt,
                by_day.get(day),
                rule_pending,
                rcfg,
                book,
                execs,
                puts,
                skipped,
            )
    skipped += [f"guard order of {o.proposed_at}: due after the window" for o in orders]
    return GuardedPath(
        tuple(liqs),
        tuple(actions),
        tuple(execs),
        tuple(puts),
        lowest,
        lowest_at,
        interest,
        n_hourly,
        n_daily,
        tuple(skipped),
    )
