"""The history the outcome runs on: the CPI/PPI release calendar (S2 counts each print from its
real release) and the hourly USD path (agent/backtest/hourly.py), on the shipped files and on
crafted frames with hand-computed results."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent.backtest.data import load_history, read_release_calendar
from agent.backtest.hourly import WICK_TOLERANCE, build_path, load_hourly
from agent.collectors.csv_import import SHIPPED_DIR
from agent.core.errors import ConfigError

HOURLY = SHIPPED_DIR / "hourly"


def _utc(*a: int) -> int:
    return int(datetime(*a, tzinfo=UTC).timestamp())


def test_shipped_hourly_files_match_their_checksums() -> None:
    sums = dict(
        reversed(line.split()) for line in (HOURLY / "SHA256SUMS").read_text().splitlines() if line
    )
    shipped = {p.name for p in HOURLY.iterdir() if p.name not in ("SHA256SUMS", "PROVENANCE.md")}
    assert set(sums) == shipped
    for name in shipped:
        assert hashlib.sha256((HOURLY / name).read_bytes()).hexdigest() == sums[name], name


def test_release_calendar_sets_known_at_in_new_york_time() -> None:
    data = load_history(SHIPPED_DIR)
    cal = data.release_calendar
    assert cal is not None and cal.span("CPI") == ("2018-10", "2025-07")
    # May 2022 CPI: 2022-06-10 08:30 EDT = 12:30 UTC (the fallback said 06-15 00:00)
    cpi = {o.ts: o for o in data.observations("macro.cpi")}
    assert cpi[_utc(2022, 5, 1)].known_at == _utc(2022, 6, 10, 12, 30)
    # January 2020 PPI: 2020-02-19 08:30 EST = 13:30 UTC (the fallback said 02-15: early)
    ppi = {o.ts: o for o in data.observations("macro.ppi")}
    assert ppi[_utc(2020, 1, 1)].known_at == _utc(2020, 2, 19, 13, 30)
    # outside the calendar: the 15th-of-next-month fallback, flagged for a run that reads it
    assert ppi[_utc(2017, 12, 1)].known_at == _utc(2018, 1, 15)
    assert data.release_flags(date(2019, 1, 1), date(2025, 7, 31)) == []
    (cpi_flag, ppi_flag) = data.release_flags(date(2018, 1, 1), date(2018, 3, 31))
    assert cpi_flag.startswith("S2 CPI: 3 reference month(s) beyond the release calendar")
    assert "(2017-12..2018-02)" in cpi_flag and ppi_flag.startswith("S2 PPI")


def test_a_bad_calendar_row_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "cpi_ppi_release_dates.csv"
    p.write_text(
        "series,reference_month,release_date,release_time_et,confirmed,evidence\n"
        "CPI,2022-05,2022-06-31,08:30,yes,x\n"
    )
    with pytest.raises(ConfigError, match="line 2: bad release row"):
        read_release_calendar(p)


def _frame(rows: dict[int, tuple[float, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [v for _, v in sorted(rows.items())],
        index=np.array(sorted(rows), dtype="int64"),
        columns=["open", "high", "low", "close"],
    )


def test_usd_path_takes_the_usd_venue_floors_lone_wicks_and_drops_bad_prints() -> None:
    t = _utc(2022, 5, 12)
    h = 3600
    usd = _frame(
        {
            t: (100.0, 101.0, 99.0, 100.0),  # agrees with the reference
            t + h: (95.0, 96.0, 80.0, 95.0),  # a lone 80 wick; the reference's low is 95 USDT
            t + 2 * h: (50.0, 51.0, 49.0, 50.0),  # a bad print: half the reference's price
            # t + 3h missing on the venue
        }
    )
    ref = _frame(
        {
            t: (105.0, 106.0, 104.0, 105.0),  # USDT at ~0.952
            t + h: (100.0, 101.0, 95.0, 100.0),
            t + 2 * h: (100.0, 101.0, 99.0, 100.0),
            t + 3 * h: (101.0, 102.0, 100.0, 101.0),
            t + 5 * h: (102.0, 103.0, 101.0, 102.0),  # t + 4h: nobody traded
        }
    )
    p = build_path("eth", [("venue USD", usd), ("ref USDT", ref)])
    assert p.t0 == t and len(p.close) == 6
    assert list(p.source) == [0, 0, 1, 1, -1, 1]
    assert p.close[0] == 100.0 and p.low[0] == 99.0  # the USD venue, as printed
    # the 80 wick is floored at the reference low converted at this hour's rate, less 3%:
    # 95 x 95 / 100 x 0.97 = 87.5425
    assert p.low[1] == pytest.approx(95 * 95 / 100 * (1 - WICK_TOLERANCE), rel=1e-12)
    assert p.floored_lows == 1
    assert p.close[2] == 100.0  # the bad print dropped: the reference serves the hour
    # the hour nobody traded is a flat bar at the previous close
    assert (p.open[4], p.low[4], p.close[4]) == (101.0, 101.0, 101.0)


def test_shipped_usd_path_in_the_named_windows() -> None:
    paths = load_hourly(SHIPPED_DIR, ["eth", "btc"])
    eth, btc = paths["eth"], paths["btc"]
    assert eth.sources_between(date(2022, 5, 1), date(2022, 5, 31)) == {"bitstamp ETH/USD": 744}
    assert btc.sources_between(date(2024, 8, 1), date(2024, 8, 31)) == {"bitfinex BTC/USD": 744}
    assert eth.sources_between(date(2024, 8, 1), date(2024, 8, 31)) == {"binance ETH/USDT": 744}
    # 2022-05-12 07:00: Bitstamp's 1,700 is 3% below Binance's 1,800 USDT at that hour's rate
    i = eth.index(_utc(2022, 5, 12, 7))
    assert eth.low[i] == pytest.approx(1721.28, abs=0.01)
    # 2020-03-12 is Bitstamp's own (no flooring): low 102.66 at 23:00
    day = eth.index(_utc(2020, 3, 12))
    assert float(eth.low[day : day + 24].min()) == 102.66
