"""The hourly USD price path the outcome backtest runs on (``data/history/hourly``, PROVENANCE (h)).

**How the path is put in USD.** Aave's oracle prices collateral in USD, and the dense hourly
series (Binance ETH/USDT and BTC/USDT, 2019-01..2025-07) is quoted in USDT, which left its peg
in the windows that matter (about $0.95 on 2022-05-12, when the USDT-quoted lows sit ~5% above
the USD venues': ETH 1,800 against 1,700, BTC 26,700 against 25,401; a premium of a few percent
in March 2020). Rescaling by the daily USD close does not fix that: the Yahoo daily close is
stamped differently from the exchange's last hour (on 2020-03-12 the two differ by 4%) and the
depeg came and went inside the day. So each hour is taken from a **USD venue where one covers
it**, in this order, and from Binance only where none does:

* ETH: Bitstamp ETH/USD (to 2022-08), then Bitfinex ETH/USD (to 2023-01), then Gemini ETH/USD
  (to 2024-02), then Binance ETH/USDT;
* BTC: Bitstamp BTC/USD (to 2023-02), then Bitfinex BTC/USD (to 2024-09), then Binance BTC/USDT.

The five named windows are therefore all on USD venues except ETH in August 2024 (Binance; USDT
was within 0.1% of $1 then). A single venue's wick can be deeper than Aave's aggregated oracle
(ETH 2022-05-12: Bitstamp and Gemini 1,700, Bitfinex 1,763): the path errs on the deep side.
A wick that only one venue printed is not what an aggregated oracle sees, and the cross-check
files hold a few bad prints (Bitfinex BTC/USD 2024-09-26: a low at 0.02% of the price): a USD
venue's hourly low is floored at the Binance low of the same hour converted at that hour's
venue/Binance close ratio, less ``WICK_TOLERANCE`` (3%), and a venue bar whose open or close is
more than 10% (``BAD_PRINT``) from Binance's is dropped (the next source serves that hour).
Effect: ETH 2022-05-12's Bitstamp low 1,700 reads 1,721 (Binance's 1,800 in USDT at that hour's
rate, less 3%), Bitstamp ETH's -23% wick of 2019-07-14 is cut to -3% below Binance.
An hour no source has (exchange maintenance) is a flat bar at the previous close.

Timestamps are the candle's open (UTC); the bar covers [ts, ts + 1h).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from agent.core.errors import ConfigError

HOUR = 3600
WICK_TOLERANCE = 0.03
BAD_PRINT = 0.10  # |log| distance of a venue's open or close from the reference's, same hour
HOURLY_SUBDIR = "hourly"
# asset -> (file, label) in priority order; the last is the dense USDT fill
SOURCES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "eth": (
        ("xcheck_bitstamp_ethusd_1h.csv", "bitstamp ETH/USD"),
        ("xcheck_bitfinex_ethusd_1h.csv", "bitfinex ETH/USD"),
        ("xcheck_gemini_ethusd_1h.csv", "gemini ETH/USD"),
        ("eth_usdt_binance_1h.csv", "binance ETH/USDT"),
    ),
    "btc": (
        ("xcheck_bitstamp_btcusd_1h.csv", "bitstamp BTC/USD"),
        ("xcheck_bitfinex_btcusd_1h.csv", "bitfinex BTC/USD"),
        ("btc_usdt_binance_1h.csv", "binance BTC/USDT"),
    ),
}


@dataclass(frozen=True)
class HourlyPath:
    """One asset's dense hourly USD bars: ``ts[i] = t0 + i * 3600``."""

    asset: str
    t0: int
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    source: np.ndarray  # index into ``labels``; -1: a flat filler bar
    labels: tuple[str, ...]
    floored_lows: int = 0  # venue lows raised to the reference floor (single-venue wicks)

    @property
    def t_end(self) -> int:
        """End of the last bar (exclusive)."""
        return self.t0 + len(self.close) * HOUR

    def covers(self, day: date) -> bool:
        d0 = _unix(day)
        return self.t0 <= d0 and d0 + 86_400 <= self.t_end

    def index(self, ts: int) -> int:
        return (ts - self.t0) // HOUR

    def sources_between(self, start: date, end: date) -> dict[str, int]:
        """Hours per source label in ``[start, end]`` (both whole days)."""
        i0, i1 = self.index(_unix(start)), self.index(_unix(end) + 86_400)
        src = self.source[max(0, i0) : max(0, i1)]
        out: dict[str, int] = {}
        for k, n in zip(*np.unique(src, return_counts=True), strict=True):
            out["filler (no trade)" if k < 0 else self.labels[int(k)]] = int(n)
        return out


def _unix(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())


def _read(path: Path) -> pd.DataFrame:
    raw = path.read_bytes()
    text = gzip.decompress(raw) if path.name.endswith(".gz") else raw
    try:
        df = pd.read_csv(io.BytesIO(text), usecols=["timestamp", "open", "high", "low", "close"])
    except (ValueError, KeyError) as e:
        raise ConfigError(f"{path}: not an hourly OHLC file ({e})") from None
    ts = pd.to_datetime(df["timestamp"], utc=True).astype("int64") // 10**9
    if bool((df[["open", "high", "low", "close"]] <= 0).any().any()):
        raise ConfigError(f"{path}: a price is not positive")
    # a few cross-check bars (Bitfinex) have an open or close outside their own low..high:
    # widen the range to them (the bar's own prints), never narrow it
    df["low"] = df[["low", "open", "close"]].min(axis=1)
    df["high"] = df[["high", "open", "close"]].max(axis=1)
    out = pd.DataFrame(
        {c: df[c].astype("float64").to_numpy() for c in ("open", "high", "low", "close")},
        index=ts.to_numpy(),
    )
    return out[~out.index.duplicated(keep="last")].sort_index()


def build_path(asset: str, frames: Sequence[tuple[str, pd.DataFrame]]) -> HourlyPath:
    """Stitch ``frames`` (label, OHLC indexed by unix hour) by priority: each hour from the
    first frame that has it; hours none has are flat bars at the previous close."""
    if not frames:
        raise ConfigError(f"no hourly prices for {asset}")
    t0 = min(int(f.index[0]) for _, f in frames if len(f))
    t1 = max(int(f.index[-1]) for _, f in frames if len(f))
    n = (t1 - t0) // HOUR + 1
    cols = {c: np.full(n, np.nan) for c in ("open", "high", "low", "close")}
    src = np.full(n, -1, dtype=np.int16)
    ref = frames[-1][1]
    for k, (_, f) in enumerate(frames):
        if k < len(frames) - 1:  # a venue bar whose open or close is off the reference: bad print
            j = f.join(ref, rsuffix="_ref", how="left")
            off = np.zeros(len(f), dtype=bool)
            for c in ("open", "close"):
                dev = np.abs(np.log(j[c].to_numpy() / j[f"{c}_ref"].to_numpy()))
                off |= np.nan_to_num(dev, nan=0.0) > BAD_PRINT
            f = f[~off]
        idx = (f.index.to_numpy(dtype="int64") - t0) // HOUR
        free = src[idx] < 0
        for c in cols:
            cols[c][idx[free]] = f[c].to_numpy()[free]
        src[idx[free]] = k
    # floor the USD venues' lows against the dense reference (the last frame), same hour
    ridx = (ref.index.to_numpy(dtype="int64") - t0) // HOUR
    from_venue = src[ridx] < len(frames) - 1
    i = ridx[from_venue]
    ref_low = ref["low"].to_numpy()[from_venue]
    ref_close = ref["close"].to_numpy()[from_venue]
    floor = ref_low * cols["close"][i] / ref_close * (1 - WICK_TOLERANCE)
    cols["low"][i] = np.maximum(cols["low"][i], np.minimum(floor, cols["close"][i]))
    floored = int((cols["low"][i] == np.minimum(floor, cols["close"][i])).sum())
    close = pd.Series(cols["close"]).ffill().to_numpy()
    for c in ("open", "high", "low"):
        cols[c] = np.where(np.isnan(cols[c]), close, cols[c])
    cols["low"] = np.minimum(cols["low"], np.minimum(cols["open"], close))
    return HourlyPath(
        asset,
        t0,
        cols["open"],
        cols["high"],
        cols["low"],
        close,
        src,
        tuple(x for x, _ in frames),
        floored,
    )


def load_hourly(data_dir: Path, assets: Sequence[str]) -> dict[str, HourlyPath]:
    """The USD hourly path per asset from ``data_dir/hourly`` (plain or gzipped files); an asset
    with no file at all is left out (the outcome then runs on daily bars, and says so)."""
    from agent.collectors.csv_import import find_file

    d = data_dir / HOURLY_SUBDIR
    out: dict[str, HourlyPath] = {}
    for a in assets:
        frames = []
        for fname, label in SOURCES.get(a, ()):
            p = find_file(d, fname)
            if p is not None:
                frames.append((label, _read(p)))
        if frames:
            out[a] = build_path(a, frames)
    return out
