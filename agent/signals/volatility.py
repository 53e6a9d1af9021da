"""S6 — collateral volatility: realised volatility of the last 24h of hourly log returns,
annualised (``std(ddof=1) * sqrt(8760)``), vs the same over the trailing 30 days before that
24h window; fires at ``>= 2x``. Needs ``min_window_returns`` returns in the 24h and
``min_coverage_fraction`` of the 30 days' hourly returns. Daily closes are not enough (one
return per day): on daily-only data this signal is insufficient_data.
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
from agent.signals.config import S6Config

NAME = "collateral volatility"


def s6_volatility_one(
    prices: pd.Series, at: pd.Timestamp, cfg: S6Config, subject: str | None = None
) -> SignalResult:
    subject = subject or series_key(prices, "price")
    win = pd.Timedelta(hours=cfg.window_hours)
    base = pd.Timedelta(days=cfg.baseline_days)
    p = upto(prices, at, at - win - base - pd.Timedelta(hours=1))
    p = p[p > 0]
    if len(p) < 3:
        return insufficient("S6", NAME, subject, cfg.ratio, f"{len(p)} price points")
    if at - p.index[-1] > pd.Timedelta(hours=cfg.max_staleness_hours):
        return insufficient(
            "S6", NAME, subject, cfg.ratio, f"latest price {p.index[-1].isoformat()} is stale"
        )
    r = pd.Series(np.diff(np.log(p.to_numpy(dtype="float64"))), index=p.index[1:])
    recent = r[r.index > at - win]
    before = r[(r.index <= at - win) & (r.index > at - win - base)]
    need_base = base / pd.Timedelta(hours=1) * cfg.min_coverage_fraction
    if len(recent) < cfg.min_window_returns or len(before) < need_base:
        return insufficient(
            "S6",
            NAME,
            subject,
            cfg.ratio,
            f"{len(recent)} returns in {cfg.window_hours:g}h (need {cfg.min_window_returns}), "
            f"{len(before)} in the {cfg.baseline_days:g}d baseline (need {need_base:.0f}); hourly prices required",
        )
    k = float(np.sqrt(cfg.periods_per_year))
    vol_now = float(recent.std(ddof=1)) * k
    vol_base = float(before.std(ddof=1)) * k
    ratio = vol_now / vol_base if vol_base > 0 else float("inf")
    status = FIRING if ratio >= cfg.ratio else QUIET
    return result(
        "S6",
        NAME,
        subject,
        status,
        ratio,
        cfg.ratio,
        f"realised vol {vol_now:.1%} ({cfg.window_hours:g}h) vs {vol_base:.1%} ({cfg.baseline_days:g}d): {ratio:.2f}x",
        (ref(p, len(p) - 1),),
        {"vol_window": vol_now, "vol_baseline": vol_base, "severity": ratio / cfg.ratio},
    )


def s6_collateral_volatility(
    prices_by_asset: Mapping[str, pd.Series], at: pd.Timestamp, cfg: S6Config
) -> list[SignalResult]:
    if not prices_by_asset:
        return [insufficient("S6", NAME, "none", cfg.ratio, "no price series given")]
    return [s6_volatility_one(s, at, cfg, a) for a, s in prices_by_asset.items()]
