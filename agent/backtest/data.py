"""Historical data for the backtest, read through the same series interface the store gives.

The files shipped in ``data/history`` (gzipped copies; see its PROVENANCE.md) are parsed by the project's own importers
(:mod:`agent.collectors.csv_import`, the code ``store import`` uses), so keys, units, timestamps and
``known_at`` are exactly what the live store would hold. :class:`HistoricalData` then answers
``series(key, known_by=...)`` like ``Store.series`` (one value per timestamp, the latest vintage
available by ``known_by``; UTC index; ``name`` = key, ``attrs["source"]`` = source) and
``observations(key)`` like ``Store.observations``.

S2's prints count from their real release (``cpi_ppi_release_dates.csv``: every CPI and PPI
release, 08:30 New York time, for reference months 2018-10..2025-07, PROVENANCE (g)); a month
outside that calendar keeps the importer's 15th-of-next-month fallback, and
:attr:`HistoricalData.release_calendar` says which months did (the command prints it).

Price sets: ``"yahoo"`` (main: BTC/ETH/^GSPC from Yahoo, with the BTC/ETH intraday lows) or
``"crosscheck"`` (Coinbase closes and FRED SP500; no lows), never mixed under one key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import pandas as pd

from agent.collectors import ParseResult
from agent.core.errors import ConfigError
from agent.core.models import Observation

PriceSet = Literal["yahoo", "crosscheck"]

# key -> file, per role. Each key reads from exactly one file (one source).
COMMON_FILES: dict[str, str] = {
    "tvl.chain.total": "defi_total_tvl_daily_defillama.csv",
    "macro.cpi": "cpi_cpiaucsl_monthly_fred.csv",
    "macro.ppi": "ppi_ppifis_final_demand_monthly_fred.csv",
    "funding.binance.BTCUSDT": "binance_btcusdt_funding_8h_utc.csv",
    "funding.bybit.BTCUSDT": "bybit_btcusdt_funding_8h_utc_inferred.csv",
    "rate.aave-v2.ethereum.usdc.supply_apy": "aave_usdc_lending_rate_daily_dune.csv",
    "rate.aave-v2.ethereum.usdt.supply_apy": "aave_usdt_lending_rate_daily_dune.csv",
    # S9/S10 (the SPX layer): FRED VIXCLS and VXVCLS; S9 pairs them on common dates only.
    "close.vix": "vix_vixcls_daily_fred.csv",
    "close.vix3m": "vix3m_vxvcls_daily_fred.csv",
}
PRICE_FILES: dict[PriceSet, dict[str, str]] = {
    "yahoo": {
        "close.btc": "btc_usd_daily_yahoo.csv",
        "close.eth": "eth_usd_daily_yahoo.csv",
        "close.spx": "sp500_gspc_daily_yahoo.csv",
        # intraday lows (the outcome replay checks liquidations at the day's low)
        "low.btc": "btc_usd_daily_yahoo.csv",
        "low.eth": "eth_usd_daily_yahoo.csv",
    },
    "crosscheck": {
        "close.btc": "btc_usd_daily_coinbase_close.csv",
        "close.eth": "eth_usd_daily_coinbase_close.csv",
        "close.spx": "sp500_daily_fred.csv",
    },
}
REQUIRED_KEYS = ("tvl.chain.total",)
# Not observations: the CPI/PPI release calendar that sets the macro prints' ``known_at``.
RELEASE_DATES_FILE = "cpi_ppi_release_dates.csv"
CALENDAR_FILES = (RELEASE_DATES_FILE,)
_RELEASE_SERIES = {"macro.cpi": "CPI", "macro.ppi": "PPI"}
_NEW_YORK = ZoneInfo("America/New_York")


@dataclass(frozen=True)
class ReleaseCalendar:
    """Real release times (unix) per (series, reference month "YYYY-MM")."""

    released_at: Mapping[tuple[str, str], int]

    def span(self, series: str) -> tuple[str, str] | None:
        months = sorted(m for s, m in self.released_at if s == series)
        return (months[0], months[-1]) if months else None

    def describe(self) -> str:
        spans = {s: self.span(s) for s in ("CPI", "PPI")}
        return "; ".join(f"{s} {a}..{b}" for s, sp in spans.items() if sp for a, b in [sp])


def read_release_calendar(path: Path) -> ReleaseCalendar:
    """``series, reference_month, release_date, release_time_et, ...``: the release instant is
    the date and time in New York (EST/EDT as on that day), stored as UTC."""
    import csv
    import gzip
    import io

    raw = path.read_bytes()
    text = (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode("utf-8")
    out: dict[tuple[str, str], int] = {}
    for n, r in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            hh, mm = (int(x) for x in r["release_time_et"].split(":"))
            d = datetime.fromisoformat(r["release_date"]).replace(hour=hh, minute=mm)
            month = r["reference_month"].strip()
            datetime.strptime(month, "%Y-%m")
            out[(r["series"].strip().upper(), month)] = int(d.replace(tzinfo=_NEW_YORK).timestamp())
        except (KeyError, ValueError, AttributeError) as e:
            raise ConfigError(f"{path}: line {n}: bad release row ({e})") from None
    return ReleaseCalendar(out)


def with_release_dates(
    key: str, rows: tuple[Observation, ...], cal: ReleaseCalendar
) -> tuple[tuple[Observation, ...], int]:
    """The macro prints with ``known_at`` = their real release where the calendar has it (the
    importer's fallback otherwise); also how many kept the fallback."""
    series = _RELEASE_SERIES.get(key)
    if series is None:
        return rows, 0
    out, fallback = [], 0
    for o in rows:
        month = datetime.fromtimestamp(o.ts, UTC).strftime("%Y-%m")
        rel = cal.released_at.get((series, month))
        if rel is None:
            fallback += 1
            out.append(o)
        else:
            out.append(replace(o, known_at=rel))
    return tuple(out), fallback


def default_data_dir() -> Path:
    """The history shipped with the project: ``data/history`` (the files gzipped)."""
    from agent.collectors.csv_import import SHIPPED_DIR

    return SHIPPED_DIR


@dataclass(frozen=True)
class HistoricalData:
    """Observations per key, answering the store's read interface."""

    observations_by_key: Mapping[str, tuple[Observation, ...]]
    data_dir: Path | None = None
    skipped: tuple[str, ...] = ()
    release_calendar: ReleaseCalendar | None = None  # None: every macro print on the fallback
    _cache: dict[tuple[str, int | None], pd.Series] = field(
        default_factory=dict, repr=False, compare=False
    )

    def keys(self) -> list[str]:
        return sorted(self.observations_by_key)

    def has(self, key: str) -> bool:
        return bool(self.observations_by_key.get(key))

    def observations(self, key: str, known_by: int | None = None) -> list[Observation]:
        rows = self.observations_by_key.get(key, ())
        out = [o for o in rows if known_by is None or o.available_at <= known_by]
        return sorted(out, key=lambda o: (o.ts, o.available_at))

    def series(self, key: str, known_by: int | None = None) -> pd.Series:
        """One float per ts (the latest vintage available by ``known_by``), sorted UTC index."""
        ck = (key, known_by)
        if ck in self._cache:
            return self._cache[ck]
        latest: dict[int, Observation] = {}
        for o in self.observations(key, known_by):
            latest[o.ts] = o  # sorted by (ts, available_at): the last one per ts wins
        ts = sorted(latest)
        idx = pd.DatetimeIndex(pd.to_datetime(ts, unit="s", utc=True))
        s = pd.Series([latest[t].value for t in ts], index=idx, name=key, dtype="float64")
        sources = sorted({o.source for o in latest.values()})
        s.attrs["source"] = ",".join(sources) if sources else "none"
        self._cache[ck] = s
        return s

    def release_flags(self, start: date, end: date) -> list[str]:
        """One line per macro series whose prints released inside ``[start, end]`` include
        months beyond the release calendar (those count from the 15th-of-month fallback)."""
        lo = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp())
        hi = int(datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp()) + 86_399
        cal = self.release_calendar
        out = []
        for key, series in _RELEASE_SERIES.items():
            months = [
                datetime.fromtimestamp(o.ts, UTC).strftime("%Y-%m")
                for o in self.observations_by_key.get(key, ())
                if lo <= o.available_at <= hi
            ]
            beyond = [m for m in months if cal is None or (series, m) not in cal.released_at]
            if beyond:
                out.append(
                    f"S2 {series}: {len(beyond)} reference month(s) beyond the release calendar "
                    f"({beyond[0]}..{beyond[-1]}) count from the 15th of the next month (fallback)"
                )
        return out

    def truncated(self, until_unix: int) -> HistoricalData:
        """Only what was known by ``until_unix`` (``available_at <= until``): the data as it stood
        on that day. Used to prove the replay has no look-ahead."""
        return HistoricalData(
            {
                k: tuple(o for o in v if o.available_at <= until_unix)
                for k, v in self.observations_by_key.items()
            },
            self.data_dir,
            self.skipped,
            self.release_calendar,
        )


def load_history(data_dir: str | Path | None = None, prices: PriceSet = "yahoo") -> HistoricalData:
    """Read the backtest's files from ``data_dir`` (default: the shipped ``data/history``; plain or
    gzipped files). Missing optional files are reported in ``skipped`` (their signals become
    insufficient_data); a missing directory or TVL file is a ``ConfigError``."""
    from agent.collectors.csv_import import find_file, import_file  # the store's importer

    d = Path(data_dir) if data_dir is not None else default_data_dir()
    if not d.is_dir():
        raise ConfigError(f"backtest data directory not found: {d}")
    wanted = COMMON_FILES | PRICE_FILES[prices]
    by_key: dict[str, tuple[Observation, ...]] = {}
    skipped: list[str] = []
    parsed: dict[Path, ParseResult] = {}  # a file serving two keys (close and low) is read once
    for key, fname in wanted.items():
        path = find_file(d, fname)
        if path is None:
            if key in REQUIRED_KEYS:
                raise ConfigError(f"backtest data file missing: {d / fname}")
            skipped.append(f"{fname}: missing, {key} not available")
            continue
        first = path not in parsed
        res = parsed[path] = parsed.get(path) or import_file(path)
        by_key[key] = tuple(o for o in res.observations if o.key == key)
        if first:
            skipped += [f"{fname}: {s}" for s in res.skipped[:5]]
    cal_path = find_file(d, RELEASE_DATES_FILE)
    cal = read_release_calendar(cal_path) if cal_path is not None else None
    if cal is None:
        skipped.append(f"{RELEASE_DATES_FILE}: missing, S2 uses the 15th-of-month fallback")
    else:
        for key in _RELEASE_SERIES:
            if key in by_key:
                by_key[key], _ = with_release_dates(key, by_key[key], cal)
    return HistoricalData(by_key, d, tuple(skipped), release_calendar=cal)
