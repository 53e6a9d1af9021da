"""S2 — macro rising: the latest *released* CPI print's YoY change is above the previous print's
YoY, or the same for PPI (final demand).

Input: a **prints frame** per index (build it with :func:`macro_prints` or
:func:`macro_prints_from_observations`), one row per (reference month, vintage):

=============  =======================================================================
column         meaning
=============  =======================================================================
ref_period     reference month, tz-aware UTC Timestamp of the month's first day
value          index level (float)
released_at    when that value became public (tz-aware UTC); NaT = unknown
source         where it came from (str), recorded in the InputRefs
=============  =======================================================================

Rules, evaluated at ``at``:

* A row counts only if ``released_at <= at``; an unknown release time is taken as the 15th of the
  month after the reference month, 00:00 UTC (``S2Config.fallback_release_day``). Where several
  vintages of one month are released, the latest released one is used (what a reader saw then).
* The latest print L is the released row with the latest reference month; the previous print P is
  the released row with the reference month just before L's (a month with no print, such as the
  unpublished Oct 2025 CPI, is skipped). ``yoy(m) = value(m) / value(m - 12 months) - 1``.
* value = ``yoy(L) - yoy(P)`` (a fraction: 0.001 = +0.1 percentage points); fires when it is
  ``> min_yoy_change`` (default 0: strictly above). Insufficient when L, P or either base month is
  missing, or when L was released more than ``max_print_age_days`` before ``at``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from agent.core.models import Observation
from agent.signals.base import (
    FIRING,
    QUIET,
    InputRef,
    SignalResult,
    fmt_pct,
    insufficient,
    result,
    to_utc,
    unix,
)
from agent.signals.config import S2Config

NAME = "macro rising"
COLUMNS = ("ref_period", "value", "released_at", "source")


def _month_starts(ts: pd.DatetimeIndex | pd.Series) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(pd.to_datetime(ts, utc=True))
    return pd.DatetimeIndex(
        [pd.Timestamp(year=t.year, month=t.month, day=1, tz="UTC") for t in idx],
        dtype="datetime64[ns, UTC]",
    )


def macro_prints(
    values: pd.Series,
    released_at: pd.Series | None = None,
    source: str | None = None,
) -> pd.DataFrame:
    """Prints frame from index levels indexed by reference month (``values``) and, optionally,
    release times (tz-aware) indexed by reference month too (a missing entry = unknown)."""
    ref = _month_starts(pd.DatetimeIndex(values.index))
    rel = pd.Series(pd.NaT, index=ref, dtype="datetime64[ns, UTC]")
    if released_at is not None:
        known = dict(
            zip(
                _month_starts(pd.DatetimeIndex(released_at.index)),
                pd.to_datetime(released_at, utc=True),
                strict=True,
            )
        )
        rel = pd.Series([known.get(m, pd.NaT) for m in ref], index=ref, dtype="datetime64[ns, UTC]")
    src = source or str(
        values.attrs.get("source", values.name if values.name is not None else "unknown")
    )
    return pd.DataFrame(
        {
            "ref_period": pd.Series(ref),
            "value": values.to_numpy(dtype="float64"),
            "released_at": rel.reset_index(drop=True),
            "source": src,
        }
    )


def macro_prints_from_observations(observations: Iterable[Observation]) -> pd.DataFrame:
    """Prints frame from store observations: ``ts`` = reference month, ``known_at`` = release."""
    rows = [(o.ts, o.value, o.known_at, o.source) for o in observations]
    df = pd.DataFrame(rows, columns=["ts", "value", "known_at", "source"])
    return pd.DataFrame(
        {
            "ref_period": pd.Series(_month_starts(pd.to_datetime(df["ts"], unit="s", utc=True))),
            "value": df["value"].astype("float64"),
            "released_at": pd.to_datetime(df["known_at"].astype("float64"), unit="s", utc=True),
            "source": df["source"].astype(str),
        }
    )


def fallback_release(ref_period: pd.Series, day: int) -> pd.Series:
    """The ``day``-th of the month after each reference month, 00:00 UTC."""
    nxt = ref_period + pd.offsets.MonthBegin(1)
    return nxt + pd.Timedelta(days=day - 1)


def _view_arrays(
    prints: pd.DataFrame, at: pd.Timestamp, cfg: S2Config
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(month index, value, release ns, original row) of the rows released by ``at``, one per
    reference month (latest released vintage), sorted by month. numpy: the replay calls this
    once per day per index."""
    # UTC-aware columns straight to naive UTC datetime64 (10x cheaper than via DatetimeIndex)
    months = prints["ref_period"].to_numpy(dtype="datetime64[ns]").astype("datetime64[M]")
    rel = prints["released_at"].to_numpy(dtype="datetime64[ns]")
    fallback = (months + 1).astype("datetime64[ns]") + np.timedelta64(
        cfg.fallback_release_day - 1, "D"
    )
    rel = np.where(np.isnat(rel), fallback, rel)
    at_ns = at.tz_convert(None).to_datetime64().astype("datetime64[ns]")
    rows = np.flatnonzero(rel <= at_ns)
    m = months[rows].astype("int64")
    r = rel[rows]
    order = np.lexsort((r.astype("int64"), m))
    rows, m, r = rows[order], m[order], r[order]
    last = np.r_[m[1:] != m[:-1], True] if len(m) else np.zeros(0, dtype=bool)
    rows, m, r = rows[last], m[last], r[last]
    vals = prints["value"].to_numpy(dtype="float64")[rows]
    return m, vals, r, rows


def released_view(prints: pd.DataFrame, at: pd.Timestamp, cfg: S2Config) -> pd.DataFrame:
    """Rows released at or before ``at``, latest vintage per month, sorted by reference month,
    with the effective release time in ``released_at``."""
    _, _, rel, rows = _view_arrays(prints, to_utc(at), cfg)
    out = prints.iloc[rows].reset_index(drop=True)
    out["released_at"] = pd.DatetimeIndex(rel).tz_localize("UTC")
    return out


def _month_str(m: int) -> str:
    return f"{m // 12 + 1970:04d}-{m % 12 + 1:02d}"


def s2_index(prints: pd.DataFrame, at: pd.Timestamp, cfg: S2Config, subject: str) -> SignalResult:
    """S2 for one index (subject "cpi" or "ppi")."""
    at = to_utc(at)
    thr = cfg.min_yoy_change
    months, vals, rel, rows = _view_arrays(prints, at, cfg)
    n = len(months)
    if n < 2:
        return insufficient(
            "S2", NAME, subject, thr, f"{n} {subject.upper()} print(s) released by {at.date()}"
        )
    li, pi = n - 1, n - 2
    latest_rel = pd.Timestamp(rel[li]).tz_localize("UTC")
    prev_rel = pd.Timestamp(rel[pi]).tz_localize("UTC")
    if at - latest_rel > pd.Timedelta(days=cfg.max_print_age_days):
        return insufficient(
            "S2",
            NAME,
            subject,
            thr,
            f"latest {subject.upper()} print released {latest_rel.date()}, older than {cfg.max_print_age_days:g} days",
        )
    sources = prints["source"].to_numpy()

    def row_ref(i: int) -> InputRef:
        ts = unix(
            pd.Timestamp(np.datetime64(int(months[i]), "M").astype("datetime64[ns]")).tz_localize(
                "UTC"
            )
        )
        return InputRef(f"macro.{subject}", str(sources[rows[i]]), ts, float(vals[i]))

    def yoy(i: int) -> tuple[float, int] | None:
        j = int(np.searchsorted(months, months[i] - 12))
        if j >= n or months[j] != months[i] - 12:
            return None
        return float(vals[i]) / float(vals[j]) - 1.0, j

    yl, yp = yoy(li), yoy(pi)
    lm, pm = _month_str(int(months[li])), _month_str(int(months[pi]))
    if yl is None or yp is None:
        missing = lm if yl is None else pm
        return insufficient(
            "S2",
            NAME,
            subject,
            thr,
            f"{subject.upper()} {missing}: no print 12 months earlier for YoY",
        )
    change = yl[0] - yp[0]
    status = FIRING if change > thr else QUIET
    inputs = (row_ref(li), row_ref(yl[1]), row_ref(pi), row_ref(yp[1]))
    return result(
        "S2",
        NAME,
        subject,
        status,
        change,
        thr,
        f"{subject.upper()} YoY {lm} {fmt_pct(yl[0])} (released {latest_rel.date()}) vs "
        f"{pm} {fmt_pct(yp[0])} (released {prev_rel.date()}): {change * 100:+.2f}pp",
        inputs,
        {"yoy_latest": yl[0], "yoy_previous": yp[0]},
    )


def s2_macro_rising(
    prints_by_index: Mapping[str, pd.DataFrame], at: pd.Timestamp, cfg: S2Config
) -> list[SignalResult]:
    """S2 for each index (keys such as "cpi", "ppi"); the signal holds when any result fires."""
    if not prints_by_index:
        return [insufficient("S2", NAME, "none", cfg.min_yoy_change, "no CPI/PPI prints given")]
    return [s2_index(p, at, cfg, subject) for subject, p in prints_by_index.items()]
