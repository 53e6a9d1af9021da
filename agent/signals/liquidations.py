"""S5 — liquidations: lending-protocol liquidation volume (USD per hour, e.g. summed Aave
``LiquidationCall`` values) over the last 24h vs the mean daily volume of the 7 days before;
fires at ``>= 3x``. Hours without liquidations must be present as 0 (the collector writes
them), so gaps are told apart from calm: the series must cover the whole 8 days
(``min_coverage_fraction`` of the hourly slots) and its last point be fresh. The baseline is
floored at ``min_baseline_daily_usd``.
"""

from __future__ import annotations

from collections.abc import Mapping

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
from agent.signals.config import S5Config

NAME = "liquidations"


def s5_liquidations_one(
    volume_usd_per_hour: pd.Series, at: pd.Timestamp, cfg: S5Config, subject: str | None = None
) -> SignalResult:
    subject = subject or series_key(volume_usd_per_hour, "liquidations")
    win = pd.Timedelta(hours=cfg.window_hours)
    base = pd.Timedelta(days=cfg.baseline_days)
    s = upto(volume_usd_per_hour, at, at - win - base + pd.Timedelta(microseconds=1))
    expected = (win + base) / pd.Timedelta(hours=1)
    if len(s) == 0 or len(s) < expected * cfg.min_coverage_fraction:
        return insufficient(
            "S5",
            NAME,
            subject,
            cfg.ratio,
            f"{len(s)} hourly points in {cfg.baseline_days}d+{cfg.window_hours:g}h, need {expected * cfg.min_coverage_fraction:.0f}",
        )
    if at - s.index[-1] > pd.Timedelta(hours=cfg.max_staleness_hours):
        return insufficient(
            "S5", NAME, subject, cfg.ratio, f"latest point {s.index[-1].isoformat()} is stale"
        )
    recent = s[s.index > at - win]
    before = s[s.index <= at - win]
    vol24 = float(recent.sum())
    mean_daily = float(before.sum()) / cfg.baseline_days
    denom = max(mean_daily, cfg.min_baseline_daily_usd)
    ratio = vol24 / denom if denom > 0 else float("inf") if vol24 > 0 else 0.0
    status = FIRING if ratio >= cfg.ratio else QUIET
    return result(
        "S5",
        NAME,
        subject,
        status,
        ratio,
        cfg.ratio,
        f"${vol24:,.0f} liquidated in {cfg.window_hours:g}h vs ${mean_daily:,.0f}/day over the prior {cfg.baseline_days}d: {ratio:.2f}x",
        (ref(s, len(s) - 1),),
        {
            "volume_window_usd": vol24,
            "baseline_daily_usd": mean_daily,
            "severity": ratio / cfg.ratio,
        },
    )


def s5_liquidations(
    volume_by_protocol: Mapping[str, pd.Series], at: pd.Timestamp, cfg: S5Config
) -> list[SignalResult]:
    if not volume_by_protocol:
        return [insufficient("S5", NAME, "none", cfg.ratio, "no liquidation series given")]
    return [s5_liquidations_one(s, at, cfg, p) for p, s in volume_by_protocol.items()]
