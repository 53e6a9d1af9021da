"""S7 — technical, on daily closes of the collateral asset: RSI(14) ``<= 30``, or the
MACD(12, 26, 9) histogram turning negative (``< 0`` on the latest close, ``>= 0`` on the one
before).

* RSI is Wilder's: the first average gain/loss is the simple mean of the first 14 changes, then
  ``avg = (avg * 13 + x) / 14``; ``RSI = 100 - 100 / (1 + avg_gain / avg_loss)`` (100 when there
  is no loss).
* MACD = EMA12 - EMA26 of closes (as ``ewm(span, adjust=False)``, seeded with the first close);
  signal = EMA9 of MACD; histogram = MACD - signal.
* Only the last ``lookback_days`` closes before ``at`` are used, so the result depends on a
  fixed window (and the replay stays fast); at least ``min_closes`` are needed.

value = RSI, threshold = 30; ``macd_hist``/``macd_hist_prev`` are in the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from agent.signals.base import (
    FIRING,
    QUIET,
    SignalResult,
    insufficient,
    ref,
    result,
    series_key,
    upto,
)
from agent.signals.config import S7Config

NAME = "technical"


def rsi_wilder(closes: np.ndarray, period: int) -> float:
    """RSI of the last close (Wilder smoothing over the whole array)."""
    d = np.diff(closes.astype("float64"))
    if len(d) < period:
        raise ValueError(f"RSI({period}) needs {period + 1} closes, got {len(closes)}")
    gains, losses = np.clip(d, 0, None), np.clip(-d, 0, None)
    ag, al = float(gains[:period].mean()), float(losses[:period].mean())
    # plain floats in the loop: numpy scalars there cost more than the arithmetic
    for g, lo in zip(gains[period:].tolist(), losses[period:].tolist(), strict=True):
        ag = (ag * (period - 1) + g) / period
        al = (al * (period - 1) + lo) / period
    if al == 0:
        return 100.0 if ag > 0 else 50.0
    return 100.0 - 100.0 / (1.0 + ag / al)


def ema(x: np.ndarray, span: int) -> np.ndarray:
    """``ewm(span, adjust=False).mean()``: ``e_0 = x_0``, ``e_t = a x_t + (1 - a) e_{t-1}``, ``a = 2/(span+1)``."""
    a = 2.0 / (span + 1.0)
    b = 1.0 - a
    vals = np.asarray(x, dtype="float64").tolist()
    out: list[float] = []
    e = vals[0] if vals else 0.0
    for v in vals:
        e = a * v + b * e if out else e
        out.append(e)
    return np.array(out, dtype="float64")


def macd_histogram(closes: np.ndarray, fast: int, slow: int, signal: int) -> np.ndarray:
    """MACD histogram for each close: ``(EMA_fast - EMA_slow) - EMA_signal(EMA_fast - EMA_slow)``."""
    x = np.asarray(closes, dtype="float64")
    macd: np.ndarray = ema(x, fast) - ema(x, slow)
    hist: np.ndarray = macd - ema(macd, signal)
    return hist


def s7_technical_one(
    closes: pd.Series, at: pd.Timestamp, cfg: S7Config, subject: str | None = None
) -> SignalResult:
    subject = subject or series_key(closes, "close")
    c = upto(closes, at)
    c = c.iloc[-cfg.lookback_days :]
    if len(c) < cfg.min_closes:
        return insufficient(
            "S7", NAME, subject, cfg.rsi_threshold, f"{len(c)} daily closes, need {cfg.min_closes}"
        )
    if at - c.index[-1] > pd.Timedelta(days=cfg.max_staleness_days):
        return insufficient(
            "S7", NAME, subject, cfg.rsi_threshold, f"latest close {c.index[-1].date()} is stale"
        )
    rsi = rsi_wilder(c.to_numpy(dtype="float64"), cfg.rsi_period)
    hist = macd_histogram(
        c.to_numpy(dtype="float64"), cfg.macd_fast, cfg.macd_slow, cfg.macd_signal
    )
    h_now, h_prev = float(hist[-1]), float(hist[-2])
    rsi_fire = rsi <= cfg.rsi_threshold
    turn = h_now < 0 <= h_prev
    status = FIRING if rsi_fire or turn else QUIET
    why = [w for w, on in (("RSI", rsi_fire), ("MACD histogram turned negative", turn)) if on]
    sev = max(cfg.rsi_threshold / rsi if rsi > 0 else float("inf"), 1.0 if turn else 0.0)
    return result(
        "S7",
        NAME,
        subject,
        status,
        rsi,
        cfg.rsi_threshold,
        f"RSI{cfg.rsi_period} {rsi:.1f} (<= {cfg.rsi_threshold:g} fires), MACD hist {h_prev:.4g} -> {h_now:.4g}"
        + (f" -> fired: {', '.join(why)}" if why else ""),
        (ref(c, len(c) - 1), ref(c, len(c) - 2)),
        {"macd_hist": h_now, "macd_hist_prev": h_prev, "severity": sev},
    )


def s7_technical(
    closes_by_asset: Mapping[str, pd.Series], at: pd.Timestamp, cfg: S7Config
) -> list[SignalResult]:
    if not closes_by_asset:
        return [insufficient("S7", NAME, "none", cfg.rsi_threshold, "no close series given")]
    return [s7_technical_one(s, at, cfg, a) for a, s in closes_by_asset.items()]
