"""The SPX layer rule: expiry dates, strikes, Black-Scholes estimate, limit ticks and contract
sizing against hand values (statistics.NormalDist, not the module's own normal CDF)."""

from __future__ import annotations

import dataclasses
import math
from datetime import date
from decimal import ROUND_CEILING, Decimal
from statistics import NormalDist

import pandas as pd
import pytest

from agent.policy import PolicyConfig, SessionState, decide
from agent.policy.models import Decision
from agent.policy.spx import (
    black_scholes_put,
    choose_expiry,
    is_listed,
    is_third_friday,
    limit_price,
    new_york_utc_offset_hours,
    put_strike,
    spx_layer,
)
from agent.policy.spx_config import SpxLayerConfig
from agent.signals.base import FIRING, INSUFFICIENT, QUIET, InputRef, SignalResult, Status, result

N = NormalDist().cdf
AT = pd.Timestamp("2024-08-05 23:59:59", tz="UTC")  # a Monday (the yen carry unwind)


def utc(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


# -- calendar ----------------------------------------------------------------------------------


def test_new_york_offset_follows_the_us_dst_rule() -> None:
    assert new_york_utc_offset_hours(date(2024, 3, 9)) == -5  # the day before the 2nd Sunday
    assert new_york_utc_offset_hours(date(2024, 3, 10)) == -4
    assert new_york_utc_offset_hours(date(2024, 11, 2)) == -4
    assert new_york_utc_offset_hours(date(2024, 11, 3)) == -5  # 1st Sunday of November


def test_third_fridays() -> None:
    assert is_third_friday(date(2024, 3, 15))  # Fridays 1, 8, 15
    assert not is_third_friday(date(2024, 3, 22))
    assert is_third_friday(date(2024, 12, 20))  # Fridays 6, 13, 20
    assert not is_third_friday(date(2024, 12, 13))
    assert is_third_friday(date(2020, 5, 15)) and is_third_friday(date(2025, 2, 21))


def test_expiries_for_the_three_horizons_on_a_fixed_date() -> None:
    # Monday 2024-08-05, end of day. 0-7 DTE SPXW: the middle is 3.5 -> Thu 08-08 (3) and Fri
    # 08-09 (4) tie -> the later, 08-09. 15-45 DTE Friday weeklies: middle 30 (Wed 09-04) ->
    # Fri 09-06 (32 DTE; 08-30 is 25). 60-180 DTE SPX monthly: middle 120 (12-03) -> third
    # Fridays 11-15 (102 DTE, 18 away) and 12-20 (137 DTE, 17 away) -> 12-20.
    assert choose_expiry(AT, "SPXW daily", 0, 7) == (date(2024, 8, 9), 4)
    assert choose_expiry(AT, "SPXW Friday", 15, 45) == (date(2024, 9, 6), 32)
    assert choose_expiry(AT, "SPX monthly", 60, 180) == (date(2024, 12, 20), 137)


def test_same_day_expiry_until_the_close_in_new_york() -> None:
    # Friday 2024-08-09 (EDT): the SPXW settles at 16:00 New York = 20:00 UTC.
    assert choose_expiry(utc("2024-08-09 19:59:59"), "SPXW daily", 0, 0) == (date(2024, 8, 9), 0)
    assert choose_expiry(utc("2024-08-09 20:00:00"), "SPXW daily", 0, 0) is None
    # Friday 2024-12-06 (EST): 16:00 New York = 21:00 UTC.
    assert choose_expiry(utc("2024-12-06 20:30:00"), "SPXW daily", 0, 0) == (date(2024, 12, 6), 0)
    # SPX monthlies are AM-settled: the third Friday 2024-08-16 settles at 09:30 EDT = 13:30 UTC.
    assert choose_expiry(utc("2024-08-16 13:00:00"), "SPX monthly", 0, 0) == (date(2024, 8, 16), 0)
    assert choose_expiry(utc("2024-08-16 14:00:00"), "SPX monthly", 0, 0) is None


def test_exchange_holidays_have_no_expiry_and_fridays_move_to_thursday() -> None:
    assert not is_listed(date(2024, 7, 4), "SPXW daily")  # Independence Day, a Thursday
    assert not is_listed(date(2024, 3, 29), "SPXW daily")  # Good Friday
    # Good Friday 2024-03-29: that week's Friday weekly expires on Thursday 03-28.
    assert is_listed(date(2024, 3, 28), "SPXW Friday")
    assert not is_listed(date(2024, 3, 21), "SPXW Friday")  # an ordinary Thursday
    assert choose_expiry(utc("2024-03-25 23:59:59"), "SPXW Friday", 0, 7) == (date(2024, 3, 28), 3)
    # Good Friday 2025-04-18 is April's third Friday: the SPX monthly expires Thursday 04-17.
    assert is_listed(date(2025, 4, 17), "SPX monthly")
    assert not is_listed(date(2025, 4, 18), "SPX monthly")
    # New Year's Day 2027 is a Friday: the weekly expires Thursday 2026-12-31.
    assert choose_expiry(utc("2026-12-02 13:00"), "SPXW Friday", 29, 29) == (date(2026, 12, 31), 29)
    assert choose_expiry(utc("2026-12-02 13:00"), "SPXW Friday", 30, 30) is None
    # Juneteenth (from 2022) and an observed Christmas (Sat 2027-12-25 -> Fri 12-24)
    assert not is_listed(date(2026, 6, 19), "SPXW daily")
    assert is_listed(date(2021, 6, 18), "SPXW Friday")
    assert not is_listed(date(2027, 12, 24), "SPXW daily")


def test_weekends_are_skipped() -> None:
    sat = utc("2024-08-10 12:00:00")
    assert choose_expiry(sat, "SPXW daily", 0, 1) is None
    assert choose_expiry(sat, "SPXW daily", 0, 2) == (date(2024, 8, 12), 2)
    assert choose_expiry(sat, "SPXW Friday", 0, 5) is None


# -- pricing -----------------------------------------------------------------------------------


def _bs_by_hand(s: float, k: float, t: float, v: float, r: float) -> float:
    d1 = (math.log(s / k) + (r + v * v / 2) * t) / (v * math.sqrt(t))
    d2 = d1 - v * math.sqrt(t)
    return k * math.exp(-r * t) * N(-d2) - s * N(-d1)


def test_black_scholes_put_textbook_values() -> None:
    assert black_scholes_put(100, 95, 0.5, 0.2, 0.0) == pytest.approx(3.35318, abs=1e-5)
    assert black_scholes_put(100, 95, 0.5, 0.2, 0.05) == pytest.approx(
        _bs_by_hand(100, 95, 0.5, 0.2, 0.05), abs=1e-9
    )
    assert black_scholes_put(5000, 4750, 0.0105, 0.25, 0.0) == pytest.approx(
        _bs_by_hand(5000, 4750, 0.0105, 0.25, 0.0), abs=1e-9
    )
    assert black_scholes_put(100, 95, 0.0, 0.2, 0.0) == 0.0  # expired out of the money


def test_limit_price_rounds_up_to_the_cboe_tick() -> None:
    assert limit_price(1.00, Decimal("0.10")) == Decimal("1.10")
    assert limit_price(1.01, Decimal("0.10")) == Decimal("1.15")  # 1.111 -> next 0.05
    assert limit_price(2.70, Decimal("0.10")) == Decimal("3.00")  # 2.97 -> 3.00
    assert limit_price(2.75, Decimal("0.10")) == Decimal("3.10")  # 3.025 -> 0.10 grid
    assert limit_price(10.0, Decimal("0.10")) == Decimal("11.00")
    assert limit_price(10.01, Decimal("0.10")) == Decimal("11.10")  # 11.011
    assert limit_price(0.0001, Decimal("0.10")) == Decimal("0.05")  # at least one tick


def test_strike_rounds_down_to_the_5_point_grid() -> None:
    assert put_strike(5000.0, Decimal("0.05"), 5) == 4750
    assert put_strike(5346.99, Decimal("0.06"), 5) == 5025  # 5026.17 -> 5025
    assert put_strike(5186.33, Decimal("0.07"), 5) == 4820  # 4823.29 -> 4820


# -- the rule ----------------------------------------------------------------------------------


def sig(sid: str, status: Status, metrics: dict[str, float | None] | None = None) -> SignalResult:
    return result(sid, sid, "x", status, 1.0, 1.0, "test", (), metrics)


def s8(status: Status) -> list[SignalResult]:
    return [
        result("S8", "beta", "btc", status, 1.0, None, "test"),
        result(
            "S8", "beta", "eth", QUIET if status != INSUFFICIENT else INSUFFICIENT, 1.0, None, "t"
        ),
    ]


def defi_decision(s8_status: Status, spent: Decimal = Decimal(0)) -> Decision:
    return decide(s8(s8_status), None, SessionState("2024-08-05", spent), PolicyConfig(), AT)


SPOT = InputRef("close.spx", "test", int(utc("2024-08-05").timestamp()), 5000.0)


def spx_sigs(s9: Status = FIRING, s10: Status = FIRING, s11: Status = QUIET) -> list[SignalResult]:
    return [
        sig("S9", s9, {"vix": 25.0, "vix3m": 20.0}),
        sig("S10", s10),
        sig("S11", s11),
    ]


def _hand_leg(budget: Decimal, strike: int, tau: float) -> tuple[float, Decimal, int]:
    est = _bs_by_hand(5000.0, strike, tau, 0.25, 0.0)
    raw = Decimal(repr(est)) * Decimal("1.10")
    tick = Decimal("0.05") if raw < 3 else Decimal("0.10")
    limit = (raw / tick).to_integral_value(rounding=ROUND_CEILING) * tick
    return est, limit, int(budget // (limit * 100))


def test_ticket_when_beta_says_sp500_first_sized_by_hand() -> None:
    d = spx_layer(spx_sigs(), defi_decision(QUIET), SPOT, AT, PolicyConfig())
    assert d.fired and d.beta == "not_rising" and not d.defi_acted
    # cap = 25% of $1M; nothing spent; budget = min(250k, 250k x 0.5) = 125k
    assert d.budget_usd == Decimal("125000.00")
    want = {
        # horizon: (budget, strike, expiry, settlement instant)
        "short": (Decimal("50000.00"), 4750, date(2024, 8, 9), utc("2024-08-09 20:00")),
        "intermediate": (Decimal("43750.00"), 4700, date(2024, 9, 6), utc("2024-09-06 20:00")),
        "structural": (Decimal("31250.00"), 4650, date(2024, 12, 20), utc("2024-12-20 14:30")),
    }
    assert [leg.horizon for leg in d.legs] == list(want)
    for leg in d.legs:
        budget, strike, expiry, settle = want[leg.horizon]
        tau = (settle - AT).total_seconds() / (365 * 86400)
        est, limit, contracts = _hand_leg(budget, strike, tau)
        assert (leg.budget_usd, leg.strike, leg.expiry) == (budget, strike, expiry)
        assert leg.tau_years == pytest.approx(tau, abs=1e-12)
        assert leg.est_premium == pytest.approx(est, abs=1e-9)
        assert (leg.limit_price, leg.contracts) == (limit, contracts)
        assert contracts >= 1
        # Both sides: filled at the limit the leg fits its budget, one more contract would not.
        assert leg.max_cost_usd == limit * 100 * contracts <= budget
        assert limit * 100 * (contracts + 1) > budget
    assert d.spend_usd == sum((leg.max_cost_usd for leg in d.legs), Decimal(0))
    assert d.spend_usd <= d.budget_usd
    short = d.legs[0]
    assert (short.symbol, short.settlement, d.legs[2].symbol, d.legs[2].settlement) == (
        "SPXW",
        "PM",
        "SPX",
        "AM",
    )


def test_hand_numbers_of_the_short_leg() -> None:
    # The short leg in plain numbers: tau = 3 d 20 h 0 min 1 s = 331201 s.
    d = spx_layer(spx_sigs(), defi_decision(QUIET), SPOT, AT, PolicyConfig())
    leg = d.legs[0]
    assert leg.tau_years == pytest.approx(331201 / 31536000, abs=1e-15)
    est = _bs_by_hand(5000, 4750, 331201 / 31536000, 0.25, 0.0)
    assert leg.est_premium == pytest.approx(est, abs=1e-9)
    # ~$105 a contract for a 5% OTM 4-day put at VIX 25; limit 1.0542 x 1.1 = 1.1596 -> 1.20;
    # $50,000 / ($1.20 x 100) = 416.67 -> 416 contracts ($49,920 at the limit).
    assert est == pytest.approx(1.05421, abs=1e-5)
    assert (leg.limit_price, leg.contracts, leg.max_cost_usd) == (
        Decimal("1.20"),
        416,
        Decimal("49920.00"),
    )


def test_no_ticket_without_s9_or_when_defi_first_and_defi_quiet() -> None:
    cfg = PolicyConfig()
    assert not spx_layer(spx_sigs(s9=QUIET), defi_decision(QUIET), SPOT, AT, cfg).fired
    assert not spx_layer(spx_sigs(s9=INSUFFICIENT), defi_decision(QUIET), SPOT, AT, cfg).fired
    rising = spx_layer(spx_sigs(), defi_decision(FIRING), SPOT, AT, cfg)
    assert not rising.fired and rising.beta == "rising"
    assert "did not act" in rising.notes[-1]
    # S8 without data is not "S&P first" for the ticket
    assert not spx_layer(spx_sigs(), defi_decision(INSUFFICIENT), SPOT, AT, cfg).fired


def test_ticket_when_the_defi_layer_acts_uses_what_the_cap_leaves() -> None:
    acted = dataclasses.replace(
        defi_decision(INSUFFICIENT),
        acted=True,
        session_spent_after_usd=Decimal("180000"),
    )
    d = spx_layer(spx_sigs(), acted, SPOT, AT, PolicyConfig())
    assert d.fired and d.defi_acted and d.beta == "insufficient"
    # remaining 250k - 180k = 70k < 125k
    assert d.budget_usd == Decimal("70000.00")
    assert [leg.budget_usd for leg in d.legs] == [
        Decimal("28000.00"),
        Decimal("24500.00"),
        Decimal("17500.00"),
    ]
    # the ledger figure the daemon passes wins over the decision's own, and the open-layer
    # budget's remainder bounds it too
    d2 = spx_layer(
        spx_sigs(),
        acted,
        SPOT,
        AT,
        PolicyConfig(),
        session_spent_usd=Decimal("240000"),
        open_remaining_usd=Decimal("5000"),
    )
    assert d2.budget_usd == Decimal("5000.00")
    full = spx_layer(
        spx_sigs(), acted, SPOT, AT, PolicyConfig(), session_spent_usd=Decimal("250000")
    )
    assert not full.fired and full.budget_usd == 0


def test_outer_wings_need_consensus() -> None:
    d = spx_layer(spx_sigs(s10=QUIET, s11=QUIET), defi_decision(QUIET), SPOT, AT, PolicyConfig())
    assert d.fired and [leg.horizon for leg in d.legs] == ["short"]
    assert [h for h, _ in d.suppressed] == ["intermediate", "structural"]
    # S11 alone is consensus enough (1 of S10/S11)
    d = spx_layer(spx_sigs(s10=QUIET, s11=FIRING), defi_decision(QUIET), SPOT, AT, PolicyConfig())
    assert [leg.horizon for leg in d.legs] == ["short", "intermediate", "structural"]
    assert d.consensus == ("S11",)


def test_a_budget_too_small_for_one_contract_is_no_ticket() -> None:
    cfg = PolicyConfig(budget_usd=Decimal("1000"))  # cap $250, budget $125
    d = spx_layer(spx_sigs(), defi_decision(QUIET), SPOT, AT, cfg)
    assert not d.fired and d.legs == ()
    assert all("buys no contract" in r for _, r in d.suppressed)


def test_idempotency_key_is_per_session_and_disabled_config() -> None:
    a = spx_layer(spx_sigs(), defi_decision(QUIET), SPOT, AT, PolicyConfig())
    b = spx_layer(spx_sigs(), defi_decision(QUIET), SPOT, AT, PolicyConfig())
    assert a.idempotency_key == b.idempotency_key
    off = PolicyConfig(spx=SpxLayerConfig(enabled=False))
    assert not spx_layer(spx_sigs(), defi_decision(QUIET), SPOT, AT, off).fired


def test_notional_cap_by_the_positions_collateral() -> None:
    # $1M of collateral: the 4750 put's notional is 4750 x 100 = $475,000 a contract -> 2
    # (3 would be $1,425,000); the 4700 and 4650 legs: 1,000,000 // 470,000 = 2, // 465,000 = 2.
    d = spx_layer(
        spx_sigs(), defi_decision(QUIET), SPOT, AT, PolicyConfig(), exposure_usd=Decimal(1_000_000)
    )
    # The structural leg's budget ($31,250) buys fewer than that at its limit: the budget binds.
    tau = (utc("2024-12-20 14:30") - AT).total_seconds() / (365 * 86400)
    _, _, by_budget = _hand_leg(Decimal("31250.00"), 4650, tau)
    assert by_budget == 1
    assert [(leg.contracts, leg.capped_by) for leg in d.legs] == [
        (2, "notional"),
        (2, "notional"),
        (1, "budget"),
    ]
    assert all(leg.strike * 100 * leg.contracts <= 1_000_000 for leg in d.legs)
    assert all(leg.strike * 100 * (leg.contracts + 1) > 1_000_000 for leg in d.legs[:2])
    assert d.spend_usd == sum((leg.limit_price * 100 * leg.contracts for leg in d.legs), Decimal(0))
    # a position smaller than one contract's notional gets no ticket, and says why
    small = spx_layer(
        spx_sigs(), defi_decision(QUIET), SPOT, AT, PolicyConfig(), exposure_usd=Decimal(400_000)
    )
    assert not small.fired and all("notional" in r for _, r in small.suppressed)


def test_trading_days_only_skips_days_the_exchange_is_closed() -> None:
    # Saturday 2024-08-03 (and Independence Day 2024-07-04): S9 may carry Friday's reading; with
    # trading_days_only (the replay) no ticket. Friday 23:59 UTC is 19:59 in New York, Friday.
    def run(at: str, only: bool = True) -> bool:
        cfg = PolicyConfig()
        return spx_layer(
            spx_sigs(), defi_decision(QUIET), SPOT, utc(at), cfg, trading_days_only=only
        ).fired

    sat = spx_layer(
        spx_sigs(),
        defi_decision(QUIET),
        SPOT,
        utc("2024-08-03 23:59:59"),
        PolicyConfig(),
        trading_days_only=True,
    )
    assert not sat.fired and "exchange closed on 2024-08-03" in sat.notes[-1]
    assert not run("2024-07-04 23:59:59")
    assert run("2024-08-02 23:59:59")
    assert run("2024-08-03 01:00:00")  # still Friday evening in New York
    assert run("2024-08-03 23:59:59", only=False)  # the daemon proposes any day


def test_an_open_layer_budget_used_up_is_no_ticket() -> None:
    d = spx_layer(
        spx_sigs(), defi_decision(QUIET), SPOT, AT, PolicyConfig(), open_remaining_usd=Decimal(0)
    )
    assert not d.fired and d.notes[-1] == "the open-layer budget is used up: no ticket"
