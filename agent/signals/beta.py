"""S8 — cross-domain beta of BTC and ETH vs the S&P 500.

* Pairing: S&P 500 trading days (the dates of the index's daily closes, UTC date of the stamp);
  each is paired with the crypto close of the same UTC date. Days where either is missing are
  dropped (the return spans from the previous *paired* day).
* Returns: daily log returns between consecutive paired days: ``ln(p_t / p_prev)`` for both (so a
  Monday's crypto return spans the weekend, like the index's).
* ``beta_n = cov(r_crypto, r_spx) / var(r_spx)`` over the last n paired returns (same ddof in both),
  n = 30 and 90. Rising when ``beta30 > beta90``. Insufficient with fewer than 90 returns or when
  the latest pair is older than ``max_staleness_days``.

value = beta30, threshold = beta90.
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
from agent.signals.config import S8Config

NAME = "cross-domain beta"


def _by_day(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(UTC day number, value) keeping the last positive value of each day."""
    v = s.to_numpy(dtype="float64")
    idx = pd.DatetimeIndex(s.index)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    # UTC nanoseconds -> day number (floor), without building intermediate datetime arrays
    d = idx.to_numpy().astype("datetime64[ns]").astype("int64") // 86_400_000_000_000
    keep = v > 0
    d, v = d[keep], v[keep]
    last = np.r_[d[1:] != d[:-1], True] if len(d) else np.zeros(0, dtype=bool)
    return d[last], v[last]


def _paired(crypto: pd.Series, spx: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(UTC day number of the later day, crypto log return, S&P log return)."""
    cd, cv = _by_day(crypto)
    sd, sv = _by_day(spx)
    days, ci, si = np.intersect1d(cd, sd, assume_unique=True, return_indices=True)
    return days[1:], np.diff(np.log(cv[ci])), np.diff(np.log(sv[si]))


def paired_log_returns(crypto: pd.Series, spx: pd.Series) -> pd.DataFrame:
    """Columns ``crypto``, ``spx`` of log returns on consecutive paired S&P trading days, indexed
    by the UTC date (midnight) of the later day."""
    days, rc, rs = _paired(crypto, spx)
    idx = pd.DatetimeIndex(pd.to_datetime(days * 86_400, unit="s", utc=True))
    return pd.DataFrame({"crypto": rc, "spx": rs}, index=idx)


def beta(x: np.ndarray, y: np.ndarray) -> float:
    """OLS slope of y on x (with intercept): cov(x, y) / var(x)."""
    xm = x - x.mean()
    var = float((xm * xm).sum())
    if var == 0:
        return float("nan")
    return float((xm * (y - y.mean())).sum()) / var


def s8_beta_one(
    crypto: pd.Series, spx: pd.Series, at: pd.Timestamp, cfg: S8Config, subject: str | None = None
) -> SignalResult:
    subject = subject or series_key(crypto, "crypto")
    # enough history for long_window paired returns: ~1.6 calendar days per trading day, plus slack
    since = at - pd.Timedelta(days=int(cfg.long_window * 1.6) + 30)
    c, s = upto(crypto, at, since), upto(spx, at, since)
    days, y, x = _paired(c, s)
    if len(days) < cfg.long_window:
        return insufficient(
            "S8", NAME, subject, None, f"{len(days)} paired daily returns, need {cfg.long_window}"
        )
    last = pd.Timestamp(int(days[-1]) * 86_400, unit="s", tz="UTC")
    if at - last > pd.Timedelta(days=cfg.max_staleness_days):
        return insufficient("S8", NAME, subject, None, f"latest paired day {last.date()} is stale")
    b_s = beta(x[-cfg.short_window :], y[-cfg.short_window :])
    b_l = beta(x[-cfg.long_window :], y[-cfg.long_window :])
    if not (np.isfinite(b_s) and np.isfinite(b_l)):
        return insufficient("S8", NAME, subject, None, "S&P returns have zero variance")
    status = FIRING if b_s > b_l else QUIET
    nxt = last + pd.Timedelta(days=1)
    ci = int(c.index.searchsorted(nxt, side="left")) - 1
    si = int(s.index.searchsorted(nxt, side="left")) - 1
    return result(
        "S8",
        NAME,
        subject,
        status,
        b_s,
        b_l,
        f"beta{cfg.short_window} {b_s:.3f} {'>' if status == FIRING else '<='} beta{cfg.long_window} {b_l:.3f} "
        f"(daily log returns on S&P trading days, last {last.date()})",
        (ref(c, ci), ref(s, si)),
        {
            f"beta{cfg.short_window}": b_s,
            f"beta{cfg.long_window}": b_l,
            "beta_short": b_s,
            "beta_long": b_l,
            "severity": (b_s / b_l) if b_l > 0 else None,
        },
    )


def s8_beta(
    crypto_by_asset: Mapping[str, pd.Series], spx: pd.Series, at: pd.Timestamp, cfg: S8Config
) -> list[SignalResult]:
    if not crypto_by_asset:
        return [insufficient("S8", NAME, "none", None, "no crypto close series given")]
    return [s8_beta_one(s, spx, at, cfg, a) for a, s in crypto_by_asset.items()]
