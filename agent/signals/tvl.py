"""S1 — TVL drawdown: ``tvl_t / max(tvl over [t - 48h, t]) - 1``; fires at ``<= -8%``.

``t`` is the time of the latest point known at ``at`` (not ``at`` itself): the window
``[t - 48h, t]`` is anchored at that point and inclusive at both ends, and the max runs over every
point in it (including ``tvl_t``), so the value is always ``<= 0``. On daily data (points
stamped 00:00 UTC) the window of day D holds the points of D-2, D-1 and D: a true 48-hour change,
whenever in the day the evaluation runs. Staleness (``at - t``) and coverage (the first point of the window
at least ``min_coverage_fraction`` of the window before ``t``) are checked separately.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from agent.signals.base import (
    FIRING,
    QUIET,
    SignalResult,
    fmt_pct,
    insufficient,
    ref,
    result,
    series_key,
    upto,
)
from agent.signals.config import S1Config

NAME = "TVL drawdown"


def s1_tvl_drawdown_one(
    tvl_usd: pd.Series, at: pd.Timestamp, cfg: S1Config, subject: str | None = None
) -> SignalResult:
    """S1 for one protocol's TVL series (USD)."""
    subject = subject or series_key(tvl_usd, "tvl")
    window = pd.Timedelta(hours=cfg.window_hours)
    thr = -cfg.drawdown_fraction
    known = upto(tvl_usd, at)
    if len(known) == 0:
        return insufficient("S1", NAME, subject, thr, "no TVL point known yet")
    anchor = pd.Timestamp(known.index[-1])
    if (at - anchor) > pd.Timedelta(hours=cfg.max_staleness_hours):
        return insufficient(
            "S1",
            NAME,
            subject,
            thr,
            f"latest TVL point {anchor.isoformat()} is older than {cfg.max_staleness_hours:g}h",
        )
    w = upto(known, anchor, anchor - window)  # [t - 48h, t], both ends inclusive
    if len(w) < cfg.min_points:
        return insufficient(
            "S1",
            NAME,
            subject,
            thr,
            f"{len(w)} TVL point(s) in the {cfg.window_hours:g}h window, need {cfg.min_points}",
        )
    first = w.index[0]
    if (anchor - first) < window * cfg.min_coverage_fraction:
        return insufficient(
            "S1",
            NAME,
            subject,
            thr,
            f"window not covered: first point {first.isoformat()} is less than "
            f"{cfg.min_coverage_fraction:.0%} of {cfg.window_hours:g}h before the latest point "
            f"{anchor.isoformat()}",
        )
    vals = w.to_numpy(dtype="float64")
    imax = int(vals.argmax())
    peak, now = float(vals[imax]), float(vals[-1])
    if peak <= 0:
        return insufficient("S1", NAME, subject, thr, f"window max TVL is {peak:g} (not positive)")
    dd = now / peak - 1.0
    # compared multiplicatively so an exact -8% fires despite float rounding of now/peak - 1
    status = FIRING if now <= peak * (1.0 + thr) else QUIET
    inputs = (ref(w, len(w) - 1), ref(w, imax)) if imax != len(w) - 1 else (ref(w, len(w) - 1),)
    return result(
        "S1",
        NAME,
        subject,
        status,
        dd,
        thr,
        f"TVL ${now:,.0f} vs {cfg.window_hours:g}h max ${peak:,.0f}: {fmt_pct(dd)} "
        f"({'<=' if status == FIRING else '>'} {fmt_pct(thr)})",
        inputs,
        {"tvl_usd": now, "window_max_usd": peak, "points": float(len(w)), "severity": dd / thr},
    )


def s1_tvl_drawdown(
    tvl_by_protocol: Mapping[str, pd.Series], at: pd.Timestamp, cfg: S1Config
) -> list[SignalResult]:
    """S1 for every watched protocol (subject = mapping key). An empty mapping gives one
    insufficient_data result, so "no protocol watched" is visible, not a silent quiet."""
    if not tvl_by_protocol:
        return [insufficient("S1", NAME, "none", -cfg.drawdown_fraction, "no TVL series given")]
    return [s1_tvl_drawdown_one(s, at, cfg, subject) for subject, s in tvl_by_protocol.items()]
