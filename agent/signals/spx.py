"""S9-S11 — the S&P 500 side's signals, read by the SPX layer rule (:mod:`agent.policy.spx`).

Same conventions as S1-S8 (:mod:`agent.signals.base`): pure, cut at ``at``, insufficient_data with
a reason when a window is not covered, every input recorded.

* **S9 VIX term structure in backwardation**: on the latest day that *both* the VIX close
  (``close.vix``, FRED ``VIXCLS``) and the VIX3M close (``close.vix3m``, FRED ``VXVCLS``) exist,
  ``VIX / VIX3M > 1``. The methodology names VIX futures; VIX3M (the 3-month implied volatility
  index) is the public proxy for the futures curve's back. Days only one series has (VIXCLS has
  holiday prints VXVCLS lacks) are skipped, never paired with another day's value.
  value = VIX / VIX3M, threshold = 1.0.
* **S10 implied volatility high**: the latest VIX close's percentile rank among the last 90 VIX
  closes, itself included — ``#{closes <= latest} / n`` — is ``>= 0.70``. (The rank, not the
  position in the min-max range, which one outlier would stretch; that position is recorded as
  the metric ``range_position``.) value = rank, threshold = 0.70.
* **S11 MACD diverging from price** (bearish divergence) on S&P 500 daily closes: let ``t`` be the
  latest close and ``p`` the highest close among the 40 closes before it, the last 5 excluded
  (positions ``t-40 .. t-5``; the earliest if tied). It fires when price is back at that high,
  ``close_t >= close_p * (1 - 1%)``, while the MACD line (EMA12 - EMA26 of closes, as S7) is lower
  than it was then, ``macd_t < macd_p``: price retests its high on weaker momentum.
  value = ``macd_t - macd_p`` (index points), threshold = 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from agent.signals.base import (
    FIRING,
    QUIET,
    InputRef,
    SignalResult,
    insufficient,
    result,
    series_key,
    series_source,
    to_utc,
)
from agent.signals.config import S9Config, S10Config, S11Config, SignalsConfig
from agent.signals.technical import ema

SPX_SIGNAL_IDS = ("S9", "S10", "S11")
S9_NAME = "VIX term structure backwardation"
S10_NAME = "implied volatility percentile"
S11_NAME = "S&P 500 MACD divergence"


@dataclass(frozen=True)
class SpxInputs:
    """The series S9-S11 read: VIX and VIX3M closes, S&P 500 closes (any may be missing)."""

    vix: pd.Series | None = None
    vix3m: pd.Series | None = None
    spx: pd.Series | None = None


@dataclass(frozen=True)
class _Cut:
    """A series cut at ``at`` as plain arrays (unix seconds, values; NaNs dropped). The replay
    evaluates these signals every day over decades of rows: numpy slicing keeps that cheap."""

    key: str
    source: str
    ts: np.ndarray
    v: np.ndarray

    def __len__(self) -> int:
        return len(self.v)

    def ref(self, i: int) -> InputRef:
        return InputRef(self.key, self.source, int(self.ts[i]), float(self.v[i]))

    def day(self, i: int) -> date:
        return datetime.fromtimestamp(int(self.ts[i]), UTC).date()


def _cut(
    s: pd.Series, at: pd.Timestamp, default_key: str, since: pd.Timestamp | None = None
) -> _Cut:
    """Points with ``since <= t <= at`` (as :func:`agent.signals.base.upto`)."""
    idx = s.index
    if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None:
        raise TypeError(f"series {s.name!r} needs a tz-aware (UTC) DatetimeIndex")
    ns = np.asarray(idx.values, dtype="datetime64[ns]").view("int64")  # UTC nanoseconds
    hi = int(np.searchsorted(ns, at.value, side="right"))
    lo = 0 if since is None else int(np.searchsorted(ns, since.value, side="left"))
    v = s.to_numpy(dtype="float64")[lo:hi]
    t = ns[lo:hi] // 1_000_000_000
    ok = ~np.isnan(v)
    if not ok.all():
        v, t = v[ok], t[ok]
    return _Cut(series_key(s, default_key), series_source(s), t, v)


def _stale(last_ts: int, at: pd.Timestamp, max_days: float) -> bool:
    return at.value // 1_000_000_000 - last_ts > max_days * 86_400


def s9_term_structure(
    vix: pd.Series | None, vix3m: pd.Series | None, at: pd.Timestamp, cfg: S9Config
) -> SignalResult:
    at = to_utc(at)
    if vix is None or vix3m is None:
        missing = " and ".join(n for n, s in (("VIX", vix), ("VIX3M", vix3m)) if s is None)
        return insufficient("S9", S9_NAME, "vix", cfg.ratio, f"no {missing} series")
    # The latest common day is among the last few rows of each (older ones would be stale).
    since = at - pd.Timedelta(days=cfg.max_staleness_days + 1)
    v, v3 = _cut(vix, at, "close.vix", since), _cut(vix3m, at, "close.vix3m", since)
    common = np.intersect1d(v.ts, v3.ts)
    if len(common) == 0:
        return insufficient(
            "S9",
            S9_NAME,
            "vix",
            cfg.ratio,
            f"no day with both VIX and VIX3M since {since.date()} (missing or stale)",
        )
    day_ts = int(common[-1])
    i, j = int(np.searchsorted(v.ts, day_ts)), int(np.searchsorted(v3.ts, day_ts))
    day = v.day(i)
    if _stale(day_ts, at, cfg.max_staleness_days):
        return insufficient(
            "S9", S9_NAME, "vix", cfg.ratio, f"latest day with both VIX and VIX3M {day} is stale"
        )
    x, y = float(v.v[i]), float(v3.v[j])
    if y <= 0:
        return insufficient("S9", S9_NAME, "vix", cfg.ratio, f"VIX3M {y} <= 0")
    ratio = x / y
    fire = ratio > cfg.ratio
    return result(
        "S9",
        S9_NAME,
        "vix",
        FIRING if fire else QUIET,
        ratio,
        cfg.ratio,
        f"{day}: VIX {x:.2f} / VIX3M {y:.2f} = {ratio:.4f} (> {cfg.ratio:g} fires: backwardation)",
        (v.ref(i), v3.ref(j)),
        {"vix": x, "vix3m": y, "spread": x - y, "severity": ratio / cfg.ratio},
    )


def percentile_rank(window: np.ndarray) -> float:
    """Share of the window's values at or below its last value (the last value included)."""
    w = np.asarray(window, dtype="float64")
    return float(np.count_nonzero(w <= w[-1]) / len(w))


def s10_implied_vol(vix: pd.Series | None, at: pd.Timestamp, cfg: S10Config) -> SignalResult:
    at = to_utc(at)
    if vix is None:
        return insufficient("S10", S10_NAME, "vix", cfg.percentile, "no VIX series")
    c = _cut(vix, at, "close.vix")
    w = _Cut(c.key, c.source, c.ts[-cfg.window_closes :], c.v[-cfg.window_closes :])
    if len(w) < cfg.min_closes:
        return insufficient(
            "S10", S10_NAME, "vix", cfg.percentile, f"{len(w)} VIX closes, need {cfg.min_closes}"
        )
    if _stale(int(w.ts[-1]), at, cfg.max_staleness_days):
        return insufficient(
            "S10", S10_NAME, "vix", cfg.percentile, f"latest VIX close {w.day(len(w) - 1)} is stale"
        )
    arr = w.v
    rank = percentile_rank(arr)
    lo, hi, last = float(arr.min()), float(arr.max()), float(arr[-1])
    pos = (last - lo) / (hi - lo) if hi > lo else 1.0
    fire = rank >= cfg.percentile
    return result(
        "S10",
        S10_NAME,
        "vix",
        FIRING if fire else QUIET,
        rank,
        cfg.percentile,
        f"VIX {last:.2f} ranks {rank * 100:.1f}% of the last {len(arr)} closes "
        f"(range {lo:.2f}..{hi:.2f}; >= {cfg.percentile * 100:g}% fires)",
        (w.ref(len(w) - 1), w.ref(0)),
        {
            "vix": last,
            "window_min": lo,
            "window_max": hi,
            "range_position": pos,
            "closes": len(arr),
        },
    )


def macd_line(closes: np.ndarray, fast: int, slow: int) -> np.ndarray:
    """EMA_fast - EMA_slow of closes (``ewm(span, adjust=False)``, seeded with the first close)."""
    x = np.asarray(closes, dtype="float64")
    out: np.ndarray = ema(x, fast) - ema(x, slow)
    return out


def s11_macd_divergence(spx: pd.Series | None, at: pd.Timestamp, cfg: S11Config) -> SignalResult:
    at = to_utc(at)
    if spx is None:
        return insufficient("S11", S11_NAME, "spx", 0.0, "no S&P 500 series")
    full = _cut(spx, at, "close.spx")
    c = _Cut(full.key, full.source, full.ts[-cfg.history_closes :], full.v[-cfg.history_closes :])
    need = max(cfg.min_closes, cfg.lookback_closes + 1)
    if len(c) < need:
        return insufficient("S11", S11_NAME, "spx", 0.0, f"{len(c)} S&P 500 closes, need {need}")
    if _stale(int(c.ts[-1]), at, cfg.max_staleness_days):
        return insufficient(
            "S11", S11_NAME, "spx", 0.0, f"latest S&P 500 close {c.day(len(c) - 1)} is stale"
        )
    arr = c.v
    m = macd_line(arr, cfg.macd_fast, cfg.macd_slow)
    t = len(arr) - 1
    lo, hi = t - cfg.lookback_closes, t - cfg.min_gap_closes
    p = lo + int(np.argmax(arr[lo : hi + 1]))
    price_vs_peak = arr[t] / arr[p] - 1.0
    at_high = arr[t] >= arr[p] * (1.0 - cfg.price_tolerance_fraction)
    weaker = m[t] < m[p]
    fire = bool(at_high and weaker)
    return result(
        "S11",
        S11_NAME,
        "spx",
        FIRING if fire else QUIET,
        float(m[t] - m[p]),
        0.0,
        f"close {arr[t]:.2f} vs high {arr[p]:.2f} on {c.day(p)} ({price_vs_peak * 100:+.2f}%; "
        f"back at the high: {'yes' if at_high else 'no'}, within {cfg.price_tolerance_fraction * 100:g}%); "
        f"MACD {m[p]:.2f} -> {m[t]:.2f}" + (" -> fired: bearish divergence" if fire else ""),
        (c.ref(t), c.ref(p)),
        {
            "macd": float(m[t]),
            "macd_at_high": float(m[p]),
            "price_vs_high": float(price_vs_peak),
            "high_close": float(arr[p]),
        },
    )


def evaluate_spx_signals(
    inputs: SpxInputs, at: pd.Timestamp, cfg: SignalsConfig
) -> list[SignalResult]:
    """S9, S10, S11 at ``at`` (one result each)."""
    at = to_utc(at)
    return [
        s9_term_structure(inputs.vix, inputs.vix3m, at, cfg.s9),
        s10_implied_vol(inputs.vix, at, cfg.s10),
        s11_macd_divergence(inputs.spx, at, cfg.s11),
    ]


def latest_close(
    closes: pd.Series | None, at: pd.Timestamp, max_staleness_days: float
) -> InputRef | None:
    """The latest close known at ``at`` as an input reference (the ticket's reference spot), or
    None when there is none or it is older than ``max_staleness_days``."""
    if closes is None:
        return None
    at = to_utc(at)
    c = _cut(closes, at, "close.spx", at - pd.Timedelta(days=max_staleness_days + 1))
    if len(c) == 0 or _stale(int(c.ts[-1]), at, max_staleness_days):
        return None
    return c.ref(len(c) - 1)
