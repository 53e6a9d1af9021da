"""S3 — funding spike: perp funding, annualised (fraction per year, 0.5 = 50% APR).

For each watched market, ``rate`` = the latest funding point at or before ``at`` (no older than
``max_staleness_hours``); fires when ``abs(rate) >= abs_apr`` (50% APR), or when its z-score vs
the trailing ``z_window_days`` (the points in ``[t - 30d, t)``, excluding the latest) is
``>= z_threshold`` (3). The z-score uses ``std(ddof=1)`` floored at ``z_min_std_apr``. The
z-score needs ``z_min_points`` points covering ``z_min_coverage_fraction`` of the window; if it
cannot be computed the result is firing (level condition met) or insufficient_data, never quiet.
``severity`` = max(|rate| / abs_apr, z / z_threshold). ``cfg.direction`` restricts both
conditions to one sign (``negative``: ``rate <= -abs_apr`` or ``z <= -z_threshold``, severity from
``-rate`` and ``-z``; ``positive``: ``rate >= abs_apr`` or ``z >= z_threshold``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from agent.signals.base import (
    FIRING,
    INSUFFICIENT,
    QUIET,
    SignalResult,
    fmt_pct,
    insufficient,
    ref,
    result,
    series_key,
    upto,
)
from agent.signals.config import S3Config

NAME = "funding spike"
_LEVEL = {"abs": "|.| threshold", "negative": "fires at <= -", "positive": "fires at >="}


def trailing_z(
    window: pd.Series,
    x: float,
    min_points: int,
    span: pd.Timedelta,
    min_cov: float,
    min_std: float,
    at: pd.Timestamp,
) -> tuple[float | None, str]:
    """z-score of ``x`` vs ``window`` (mean, std ddof=1 floored at ``min_std``), or None + why."""
    if len(window) < min_points:
        return None, f"{len(window)} trailing points, need {min_points}"
    if at - window.index[0] < span * min_cov:
        return None, f"trailing window starts {window.index[0].date()}, covers < {min_cov:.0%}"
    v = window.to_numpy(dtype="float64")
    mean = float(v.mean())
    std = max(float(v.std(ddof=1)), min_std)
    if std == 0:
        return (0.0 if x == mean else float(np.sign(x - mean)) * float("inf")), "std 0"
    return (x - mean) / std, f"mean {mean:.4g}, std {std:.4g}"


def s3_funding_one(
    funding_apr: pd.Series, at: pd.Timestamp, cfg: S3Config, subject: str | None = None
) -> SignalResult:
    subject = subject or series_key(funding_apr, "funding")
    span = pd.Timedelta(days=cfg.z_window_days)
    s = upto(funding_apr, at, at - span - pd.Timedelta(hours=cfg.max_staleness_hours))
    if len(s) == 0:
        return insufficient("S3", NAME, subject, cfg.abs_apr, "no funding point in the window")
    last_t = s.index[-1]
    if at - last_t > pd.Timedelta(hours=cfg.max_staleness_hours):
        return insufficient(
            "S3",
            NAME,
            subject,
            cfg.abs_apr,
            f"latest funding {last_t.isoformat()} older than {cfg.max_staleness_hours:g}h",
        )
    rate = float(s.iloc[-1])
    # the trailing window [t - span, t), by position on the sorted index
    trail = s.iloc[int(s.index.searchsorted(last_t - span, side="left")) : len(s) - 1]
    z, zwhy = trailing_z(
        trail, rate, cfg.z_min_points, span, cfg.z_min_coverage_fraction, cfg.z_min_std_apr, last_t
    )
    # the rate and z-score as seen in the configured direction (positive = towards firing)
    if cfg.direction == "abs":
        lvl, zd = abs(rate), z
    elif cfg.direction == "negative":
        lvl, zd = -rate, (None if z is None else -z)
    else:
        lvl, zd = rate, z
    level = lvl >= cfg.abs_apr
    zfire = zd is not None and zd >= cfg.z_threshold
    sev = max(0.0, lvl / cfg.abs_apr, (zd / cfg.z_threshold) if zd is not None else 0.0)
    if level or zfire:
        status = FIRING
    elif z is None:
        status = INSUFFICIENT
    else:
        status = QUIET
    ztxt = "n/a" if z is None else f"{z:.2f}"
    return result(
        "S3",
        NAME,
        subject,
        status,
        rate,
        cfg.abs_apr,
        f"funding {fmt_pct(rate)} APR ({_LEVEL[cfg.direction]} {fmt_pct(cfg.abs_apr, 0)}), "
        f"z {ztxt} vs "
        f"{cfg.z_window_days:g}d (threshold {cfg.z_threshold:g}; {zwhy})",
        (ref(s, len(s) - 1),),
        {"z": z, "z_threshold": cfg.z_threshold, "severity": sev},
    )


def s3_funding_spike(
    funding_by_market: Mapping[str, pd.Series], at: pd.Timestamp, cfg: S3Config
) -> list[SignalResult]:
    if not funding_by_market:
        return [insufficient("S3", NAME, "none", cfg.abs_apr, "no funding series given")]
    return [s3_funding_one(s, at, cfg, m) for m, s in funding_by_market.items()]
