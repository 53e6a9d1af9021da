"""Import the real history (``data/history`` in the project, a gzipped copy of the files described
in its PROVENANCE.md) as Observations.

Every file has its own importer (by file name, ``.gz`` or not); source = ``csv:<filename>`` (the
name without ``.gz``, so a plain and a compressed copy are the same source). Keys and units:

=============================================  =====================================  ======  =====
file                                           key                                    unit    notes
=============================================  =====================================  ======  =====
btc/eth_usd_daily_yahoo.csv                    close.btc / close.eth, low.btc / -eth  usd     [1]
sp500_gspc_daily_yahoo.csv                     close.spx                              index
btc/eth_usd_daily_coinbase_close.csv           close.btc / close.eth                  usd     [1][2]
sp500_daily_fred.csv                           close.spx                              index   [2]
defi_total_tvl_daily_defillama.csv             tvl.chain.total                        usd     [2]
stablecoin_supply_daily_defillama.csv          supply.stablecoins.total               usd     [2]
aave_usdt_usdc_tvl_daily.csv                   tvl.aave-v2-usdt.total / -usdc.total   usd     [3]
cpi_cpiaucsl_monthly_fred.csv                  macro.cpi                              index   [4]
ppi_ppifis_final_demand_monthly_fred.csv       macro.ppi (final demand, as S2 uses)   index   [4]
ppi_ppiaco_all_commodities_monthly_fred.csv    macro.ppiaco                           index   [4]
binance_btcusdt_funding_8h_utc.csv             funding.binance.BTCUSDT                apr     [5]
binance_btcusdt_funding_8h_original_utc8.csv   funding.binance.BTCUSDT                apr     [5][6]
bybit_btcusdt_funding_8h_utc_inferred.csv      funding.bybit.BTCUSDT                  apr     [5]
bybit_btcusdt_funding_8h_original_utc8.csv     funding.bybit.BTCUSDT                  apr     [5][6]
btc_perp_funding_daily_multivenue_coinalyze    funding.<venue>-daily.<PAIR>           apr     [7]
aave_usdc/usdt_lending_rate_daily_dune.csv     rate.aave-v2.ethereum.<asset>.supply_apy apy   [8]
vix_vixcls_daily_fred.csv                      close.vix                              index   [9]
vix3m_vxvcls_daily_fred.csv                    close.vix3m                            index   [9]
=============================================  =====================================  ======  =====

[1] ts = UTC day start. Yahoo crypto files: the last row is an intraday partial bar and is dropped.
    Their ``Low`` column is kept as ``low.<asset>`` (capped at the close), known at the day's end.
    Coinbase files: the last row may be intraday and is dropped too.
[2] ``as_of,value,status``: rows whose status is not ``ok`` are skipped.
[3] A token-level subset of Aave (likely v2 Ethereum, endpoint undocumented), so its own slug;
    timestamps kept as given (the last rows are at 12:00, a "now" point).
[4] ts = the month's first day 00:00 UTC; no release times in the file, so known_at = the 15th of the
    following month 00:00 UTC (DESIGN S2 fallback). Blank values (2025-10 CPI, not published) are skipped.
[5] Decimal rate per 8h settlement x 1095 (3 x 365) = APR.
[6] The website export is UTC+8 (Binance verified, Bybit inferred): ts = local time - 8h, so it
    yields the same rows as the derived UTC file under its own source. Binance's rate is a
    percent string ("0.010000%") -> / 100.
[7] Values are percent per funding period -> / 100 x periods per year: 8760 for the hourly venues
    (dYdX v3, Kraken, Vertex), 1095 for the others. ts = the UTC date. Repeated columns get a
    ``-2`` suffix. The ``-daily`` venue suffix keeps this daily sample apart from the 8h series.
[8] The "Lending Rate" column in percent -> fraction (/100). PROVENANCE: whether it is supply or
    borrow, APR or APY, is ambiguous; it fits the v2 supply rate, so it is stored as supply APY.
    The "Supplied" column (daily deposit flows, not balances) is not imported.
[9] ``as_of,value`` (no status column): FRED daily closes, known at the end of their UTC day.
    VIXCLS has prints on some market holidays that VXVCLS lacks (PROVENANCE.md).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.collectors import ParseResult, month_start, obs, release_fallback
from agent.core.errors import ConfigError, MalformedResponse, SourceError
from agent.core.http import num
from agent.core.models import Observation

DAY = 86_400
EIGHT_HOURS_PER_YEAR = 1095
HOURS_PER_YEAR = 8760
UTC8 = timedelta(hours=8)
HOURLY_VENUES = {"dydx", "kraken", "vertex"}

Importer = Callable[[Path], ParseResult]


def file_name(path: Path) -> str:
    """The data file's name, ``.gz`` removed: the importer key and the source name."""
    return path.name.removesuffix(".gz")


def open_text(path: Path) -> io.TextIOBase:
    """The file as text, transparently decompressed when it ends in ``.gz``. utf-8-sig drops the
    Binance export's BOM."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _rows(path: Path) -> Iterator[dict[str, str]]:
    """Rows as dicts."""
    source = f"csv:{file_name(path)}"
    try:
        with open_text(path) as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                raise MalformedResponse(source, "empty file")
            yield from reader
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise SourceError(source, f"cannot read: {e}") from e


def _need(row: dict[str, str], col: str) -> str:
    v = row.get(col)
    if v is None:
        raise ValueError(f"missing column {col!r}")
    return v


def _ts(text: str) -> int:
    """``YYYY-MM-DD[ HH:MM:SS[.fff]][ UTC]`` as UTC."""
    t = text.strip().removesuffix(" UTC").removesuffix("Z")
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _each(path: Path, fn: Callable[[dict[str, str]], list[Observation]]) -> ParseResult:
    out = ParseResult()
    for i, row in enumerate(_rows(path), start=2):  # line 1 is the header
        out.rows += 1
        try:
            out.observations += fn(row)
        except (ValueError, TypeError, OverflowError) as e:
            out.skipped.append(f"{file_name(path)}:{i}: {e}")
    return out


def _drop_last(result: ParseResult, why: str) -> ParseResult:
    if result.observations:
        last = max(result.observations, key=lambda o: o.ts)
        result.observations = [o for o in result.observations if o is not last]
        result.skipped.append(
            f"last row {datetime.fromtimestamp(last.ts, UTC).date()} dropped: {why}"
        )
    return result


def _close(key: str, day: int, value: float, unit: str, src: str) -> Observation:
    """A daily close is final only when its UTC day has ended: known_at = the last second of that day, so
    an evaluation during the day never sees it (the files close at 23:59:59 UTC)."""
    return obs(key, day, value, unit, src, day + DAY - 1)


def yahoo(key: str, unit: str, drop_last: bool, low_key: str | None = None) -> Importer:
    """Daily closes; with ``low_key`` also the day's intraday low (``Low``), known like the close
    at the end of its day, so the outcome replay sees a wick that closed higher."""

    def row(r: dict[str, str], src: str) -> list[Observation]:
        day = _ts(_need(r, "Date")) // DAY * DAY
        close = num(_need(r, "Close"))
        out = [_close(key, day, close, unit, src)]
        low = (r.get("Low") or "").strip()
        if low_key is not None and low:
            out.append(_close(low_key, day, min(num(low), close), unit, src))
        return out

    def run(path: Path) -> ParseResult:
        src = f"csv:{file_name(path)}"
        res = _each(path, lambda r: row(r, src))
        if not drop_last or not res.observations:
            return res
        # the partial last bar: its close and its low go together
        last_ts = max(o.ts for o in res.observations)
        res.observations = [o for o in res.observations if o.ts != last_ts]
        res.skipped.append(
            f"last row {datetime.fromtimestamp(last_ts, UTC).date()} dropped: intraday partial bar"
        )
        return res

    return run


def as_of(key: str, unit: str, drop_last: bool = False, *, status: bool = True) -> Importer:
    """``as_of,value[,status]`` files; with ``status``, rows whose status is not ``ok`` are skipped."""

    def run(path: Path) -> ParseResult:
        src = f"csv:{file_name(path)}"

        def row(r: dict[str, str]) -> list[Observation]:
            state = _need(r, "status") if status else "ok"
            if state != "ok":
                raise ValueError(f"status {state!r}")
            return [
                (_close if key.startswith("close.") else obs)(
                    key, _ts(_need(r, "as_of")) // DAY * DAY, num(_need(r, "value")), unit, src
                )
            ]

        res = _each(path, row)
        return _drop_last(res, "may be an intraday value") if drop_last else res

    return run


def fred_monthly(key: str) -> Importer:
    def run(path: Path) -> ParseResult:
        src = f"csv:{file_name(path)}"

        def row(r: dict[str, str]) -> list[Observation]:
            value = _need(r, "value").strip()
            date = datetime.fromisoformat(_need(r, "date").strip())
            if not value or value == ".":
                raise ValueError(f"{date.date()}: no value")
            return [
                obs(
                    key,
                    month_start(date.year, date.month),
                    num(value),
                    "index",
                    src,
                    release_fallback(date.year, date.month),
                )
            ]

        return _each(path, row)

    return run


def funding_8h(
    key: str, time_col: str, rate_col: str, *, utc8: bool = False, percent: bool = False
) -> Importer:
    def run(path: Path) -> ParseResult:
        src = f"csv:{file_name(path)}"

        def row(r: dict[str, str]) -> list[Observation]:
            ts = _ts(_need(r, time_col)) - (int(UTC8.total_seconds()) if utc8 else 0)
            raw = _need(r, rate_col).strip()
            rate = num(raw.removesuffix("%")) / 100 if percent else num(raw)
            return [obs(key, ts, rate * EIGHT_HOURS_PER_YEAR, "apr", src)]

        return _each(path, row)

    return run


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def coinalyze(path: Path) -> ParseResult:
    src = f"csv:{file_name(path)}"
    out = ParseResult()
    try:
        with open_text(path) as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or header[0] != "t":
                raise MalformedResponse(src, f"unexpected header {header!r:.80}")
            keys: list[tuple[str, int] | None] = [None]
            seen: dict[str, int] = {}
            for col in header[1:]:
                m = re.fullmatch(r"\s*([A-Z0-9]+)/([A-Z0-9]+)\s*-\s*(.+?)\s*", col)
                if not m:
                    keys.append(None)
                    out.skipped.append(f"column {col!r}: not 'PAIR - Venue'")
                    continue
                venue = _slug(m.group(3))
                key = f"funding.{venue}-daily.{m.group(1)}{m.group(2)}"
                seen[key] = seen.get(key, 0) + 1
                if seen[key] > 1:
                    key = f"{key}-{seen[key]}"
                keys.append(
                    (key, HOURS_PER_YEAR if venue in HOURLY_VENUES else EIGHT_HOURS_PER_YEAR)
                )
            for i, row in enumerate(reader, start=2):
                out.rows += 1
                try:
                    ts = _ts(row[0])
                except (ValueError, IndexError) as e:
                    out.skipped.append(f"{file_name(path)}:{i}: bad date: {e}")
                    continue
                for cell, spec in zip(row[1:], keys[1:], strict=False):
                    if spec is None or not cell.strip():
                        continue  # venue not listed yet that day
                    try:
                        out.observations.append(
                            obs(spec[0], ts, num(cell) / 100 * spec[1], "apr", src)
                        )
                    except ValueError as e:
                        out.skipped.append(f"{file_name(path)}:{i} {spec[0]}: {e}")
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise SourceError(src, f"cannot read: {e}") from e
    out.observations.sort(key=lambda o: (o.key, o.ts))  # the file is not sorted
    return out


def aave_rate(asset: str, rate_col: str = "Lending Rate") -> Importer:
    def run(path: Path) -> ParseResult:
        src = f"csv:{file_name(path)}"
        key = f"rate.aave-v2.ethereum.{asset}.supply_apy"
        return _each(
            path,
            lambda r: [obs(key, _ts(_need(r, "Day")), num(_need(r, rate_col)) / 100, "apy", src)],
        )

    return run


def aave_tvl(path: Path) -> ParseResult:
    src = f"csv:{file_name(path)}"

    def row(r: dict[str, str]) -> list[Observation]:
        ts = _ts(_need(r, "timestamp"))
        return [
            obs("tvl.aave-v2-usdt.total", ts, num(_need(r, "USDT_value")), "usd", src),
            obs("tvl.aave-v2-usdc.total", ts, num(_need(r, "USDC_value")), "usd", src),
        ]

    return _each(path, row)


IMPORTERS: dict[str, Importer] = {
    "btc_usd_daily_yahoo.csv": yahoo("close.btc", "usd", drop_last=True, low_key="low.btc"),
    "eth_usd_daily_yahoo.csv": yahoo("close.eth", "usd", drop_last=True, low_key="low.eth"),
    "sp500_gspc_daily_yahoo.csv": yahoo("close.spx", "index", drop_last=False),
    "btc_usd_daily_coinbase_close.csv": as_of("close.btc", "usd", drop_last=True),
    "eth_usd_daily_coinbase_close.csv": as_of("close.eth", "usd", drop_last=True),
    "sp500_daily_fred.csv": as_of("close.spx", "index"),
    "defi_total_tvl_daily_defillama.csv": as_of("tvl.chain.total", "usd"),
    "stablecoin_supply_daily_defillama.csv": as_of("supply.stablecoins.total", "usd"),
    "aave_usdt_usdc_tvl_daily.csv": aave_tvl,
    "cpi_cpiaucsl_monthly_fred.csv": fred_monthly("macro.cpi"),
    "ppi_ppifis_final_demand_monthly_fred.csv": fred_monthly("macro.ppi"),
    "ppi_ppiaco_all_commodities_monthly_fred.csv": fred_monthly("macro.ppiaco"),
    "binance_btcusdt_funding_8h_utc.csv": funding_8h(
        "funding.binance.BTCUSDT", "time_utc", "funding_rate"
    ),
    "binance_btcusdt_funding_8h_original_utc8.csv": funding_8h(
        "funding.binance.BTCUSDT", "Time", "Funding Rate", utc8=True, percent=True
    ),
    "bybit_btcusdt_funding_8h_utc_inferred.csv": funding_8h(
        "funding.bybit.BTCUSDT", "time_utc_inferred", "funding_rate"
    ),
    "bybit_btcusdt_funding_8h_original_utc8.csv": funding_8h(
        "funding.bybit.BTCUSDT", "Time", "Funding Rate", utc8=True
    ),
    "btc_perp_funding_daily_multivenue_coinalyze.csv": coinalyze,
    "aave_usdc_lending_rate_daily_dune.csv": aave_rate("usdc"),
    "aave_usdt_lending_rate_daily_dune.csv": aave_rate("usdt"),
    "vix_vixcls_daily_fred.csv": as_of("close.vix", "index", status=False),
    "vix3m_vxvcls_daily_fred.csv": as_of("close.vix3m", "index", status=False),
}

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "data" / "history"


def find_file(data_dir: Path, name: str) -> Path | None:
    """``name`` in ``data_dir``, plain or gzipped (the shipped copy is gzipped)."""
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def import_file(path: Path) -> ParseResult:
    importer = IMPORTERS.get(file_name(path))
    if importer is None:
        raise SourceError(f"csv:{file_name(path)}", "no importer for this file")
    return importer(path)


def import_dir(data_dir: Path) -> dict[str, ParseResult]:
    """Every ``*.csv`` / ``*.csv.gz`` in ``data_dir`` -> its ParseResult (keyed by the name without
    ``.gz``); unknown CSVs yield a skip reason."""
    if not data_dir.is_dir():
        raise ConfigError(f"data directory not found: {data_dir}")
    results: dict[str, ParseResult] = {}
    paths = sorted([*data_dir.glob("*.csv"), *data_dir.glob("*.csv.gz")])
    for path in paths:
        name = file_name(path)
        if name in results:
            continue  # a plain copy beside a gzipped one: the first (plain) wins
        if name in IMPORTERS:
            results[name] = import_file(path)
        else:
            results[name] = ParseResult(skipped=[f"{name}: no importer, ignored"])
    return results
