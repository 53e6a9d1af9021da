"""The SPX layer rule in the replay, on the real VIX/VIX3M/S&P 500 history shipped in
data/history. S9 is checked day by day against the raw FRED files read here with csv/gzip."""

from __future__ import annotations

import csv
import gzip
from datetime import date, timedelta
from decimal import Decimal

import pytest

from agent.backtest import HistoricalData, load_history, run_backtest
from agent.backtest.engine import BacktestResult
from agent.collectors.csv_import import SHIPPED_DIR


def raw(name: str) -> dict[date, float]:
    with gzip.open(SHIPPED_DIR / f"{name}.gz", "rt", encoding="utf-8") as fh:
        return {date.fromisoformat(r["as_of"]): float(r["value"]) for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def data() -> HistoricalData:
    return load_history()


@pytest.fixture(scope="module")
def covid(data: HistoricalData) -> BacktestResult:
    return run_backtest(data, "2020-02-20", "2020-04-27")


@pytest.fixture(scope="module")
def aug2024(data: HistoricalData) -> BacktestResult:
    return run_backtest(data, "2024-07-30", "2024-08-12")


def s9_by_hand(day: date) -> tuple[date, float] | None:
    """VIX / VIX3M on the latest date <= day both files have (VIXCLS has holiday rows VXVCLS
    lacks), if it is at most 5 days old."""
    vix, vix3m = VIX, VIX3M
    d = day
    while d >= day - timedelta(days=6):
        if d in vix and d in vix3m:
            return d, vix[d] / vix3m[d]
        d -= timedelta(days=1)
    return None


VIX = raw("vix_vixcls_daily_fred.csv")
VIX3M = raw("vix3m_vxvcls_daily_fred.csv")


def _s9(res: BacktestResult, day: date) -> tuple[str, float | None]:
    r = res.day(day)
    assert r.spx is not None
    s9 = next(s for s in r.spx.signals if s.id == "S9")
    return s9.status, s9.value


def test_vixcls_has_holiday_prints_vxvcls_lacks() -> None:
    only_vix = sorted(d for d in VIX if d >= date(2008, 1, 1) and d not in VIX3M)
    assert only_vix  # e.g. Columbus/Veterans days in the early years
    assert all(d.weekday() < 5 for d in only_vix)


def test_s9_matches_the_raw_files_through_march_2020(covid: BacktestResult) -> None:
    for rec in covid.days:
        status, value = _s9(covid, rec.day)
        want = s9_by_hand(rec.day)
        assert want is not None
        assert value == pytest.approx(want[1], abs=1e-12), rec.day
        assert status == ("firing" if want[1] > 1 else "quiet"), rec.day


def test_backwardation_run_2020_02_24_to_04_23(covid: BacktestResult) -> None:
    run = [r.day for r in covid.days if r.spx is not None and r.spx.s9_firing]
    first, last = date(2020, 2, 24), date(2020, 4, 23)
    assert run == [first + timedelta(days=i) for i in range((last - first).days + 1)]
    assert _s9(covid, date(2020, 3, 12))[1] == pytest.approx(
        VIX[date(2020, 3, 12)] / VIX3M[date(2020, 3, 12)]
    )
    eps = [e for e in covid.spx_episodes() if e.start == first]
    assert len(eps) == 1 and eps[0].end == last and len(eps[0].s9_days) == 60
    # S8 says DeFi first through the whole run, so the rule waits for the DeFi layer; with the
    # real CPI/PPI release calendar S2 is quiet from 2020-03-11 (February's prints), the DeFi
    # layer does not act in March 2020, and no ticket is sent either: the rule says why.
    assert eps[0].beta == ("rising",)
    assert eps[0].defi_acted_days == ()
    assert eps[0].ticket_days == ()
    spx = covid.day(date(2020, 3, 12)).spx
    assert spx is not None and not spx.fired
    assert spx.notes == (
        "S9 fires but S8 rising: DeFi first and the DeFi layer did not act: no ticket",
    )


def test_backwardation_2024_08_02_to_07_and_its_ticket(aug2024: BacktestResult) -> None:
    run = [r.day for r in aug2024.days if r.spx is not None and r.spx.s9_firing]
    assert run == [date(2024, 8, 2) + timedelta(days=i) for i in range(6)]  # 08-02 .. 08-07
    # Friday 08-02: S8 not rising -> S&P first: a ticket. The weekend carries Friday's reading
    # (no ticket: exchange closed). 08-05..07: S8 rising and the DeFi layer quiet -> none.
    assert aug2024.spx_ticket_days() == [date(2024, 8, 2)]
    fri = aug2024.day(date(2024, 8, 2)).spx
    assert fri is not None and fri.beta == "not_rising" and fri.consensus == ("S10",)
    assert aug2024.day(date(2024, 8, 5)).spx.beta == "rising"  # type: ignore[union-attr]
    spot = fri.spot
    assert spot is not None and spot.value == pytest.approx(5346.56, abs=0.01)  # ^GSPC 08-02
    vix = VIX[date(2024, 8, 2)]
    assert [leg.vol for leg in fri.legs] == [vix / 100] * 3
    assert [(leg.symbol, leg.expiry, leg.strike) for leg in fri.legs] == [
        ("SPXW", date(2024, 8, 6), 5075),  # 5346.56 x 0.95 = 5079.2 -> 5075
        ("SPXW", date(2024, 8, 30), 5025),  # x 0.94 = 5025.8 -> 5025
        ("SPX", date(2024, 11, 15), 4970),  # x 0.93 = 4972.3 -> 4970 (third Friday)
    ]
    # the hypothetical position's collateral (1.45 x $1M / 0.825 = $1,757,575.75) caps each
    # leg's notional: floor(1,757,575.75 / (strike x 100))
    assert [leg.contracts for leg in fri.legs][:2] == [1757575 // 507500, 1757575 // 502500]
    assert fri.spend_usd <= fri.budget_usd == Decimal("125000.00")


def test_full_replay_counts(data: HistoricalData) -> None:
    res = run_backtest(data, "2019-01-01", "2025-07-31")
    s9_days = [r.day for r in res.days if r.spx is not None and r.spx.s9_firing]
    tickets = res.spx_ticket_days()
    assert set(tickets) <= set(s9_days)
    assert all(d.weekday() < 5 for d in tickets)
    # every ticket day either had the beta check saying S&P first or the DeFi layer acting
    for d in tickets:
        r = res.day(d)
        assert r.spx is not None
        assert r.spx.beta == "not_rising" or r.decision.acted
    assert len(s9_days) == PINNED_S9_DAYS and len(tickets) == PINNED_TICKET_DAYS


PINNED_S9_DAYS = 153  # calendar days (weekends carry Friday's reading)
PINNED_TICKET_DAYS = 52  # exchange trading days only
