"""Historical data for the backtest, read through the same series interface the store gives.

The files shipped in ``data/history`` (gzipped copies; see its PROVENANCE.md) are parsed by the project's own importers
(:mod:`agent.collectors.csv_import`, the code ``store import`` uses), so keys, units, timestamps and
``known_at`` are exactly what the live store would hold. :class:`HistoricalData` then answers
``series(key, known_by=...)`` like ``Store.series`` (one value per timestamp, the latest vintage
available by ``known_by``; UTC index; ``name`` = key, ``attrs["source"]`` = source) and
``observations(key)`` like ``Store.observations``.

Price sets: ``"yahoo"`` (main: BTC/ETH/^GSPC from Yahoo, with the BTC/ETH intraday lows) or
``"crosscheck"`` (Coinbase closes and FRED SP500; no lows), never mixed under one key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
    return HistoricalData(by_key, d, tuple(skipped))
