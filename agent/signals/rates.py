"""S4 — stablecoin rate differential, per reserve.

Inputs per reserve (all APY/utilisation as fractions; any may be missing): ``supply_apy``,
``borrow_apy``, ``utilisation``. Conditions, each evaluated only when its inputs are present:

* spread: ``borrow - supply`` at the latest common timestamp; its z-score vs the trailing
  ``z_window_days`` of the spread ``>= spread_z_threshold`` (3 sigma above the 30-day mean);
* borrow: ``borrow_apy >= 15%``. Without a borrow series, ``supply_apy >= 15%`` proves it (on Aave
  the borrow rate is never below the supply rate), so it fires then;
* utilisation: ``utilisation >= 92%``.

Status: firing if any evaluable condition fires; quiet only when all three could be evaluated and
none fires; otherwise insufficient_data, with the missing inputs named (never a silent quiet).
``value`` = borrow APY (or the supply APY proving it), ``threshold`` = 15%.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from agent.signals.base import (
    FIRING,
    INSUFFICIENT,
    QUIET,
    InputRef,
    SignalResult,
    fmt_pct,
    insufficient,
    ref,
    result,
    upto,
)
from agent.signals.config import S4Config
from agent.signals.funding import trailing_z

NAME = "stablecoin rate differential"


@dataclass(frozen=True)
class ReserveRates:
    """Series for one stablecoin reserve (any may be None)."""

    supply_apy: pd.Series | None = None
    borrow_apy: pd.Series | None = None
    utilisation: pd.Series | None = None


def _latest(
    s: pd.Series | None, at: pd.Timestamp, stale: pd.Timedelta
) -> tuple[float, InputRef] | None:
    if s is None:
        return None
    w = upto(s, at, at - stale)
    if len(w) == 0:
        return None
    return float(w.iloc[-1]), ref(w, len(w) - 1)


def s4_reserve(r: ReserveRates, at: pd.Timestamp, cfg: S4Config, subject: str) -> SignalResult:
    stale = pd.Timedelta(hours=cfg.max_staleness_hours)
    sup, bor, util = (
        _latest(r.supply_apy, at, stale),
        _latest(r.borrow_apy, at, stale),
        _latest(r.utilisation, at, stale),
    )
    fired: list[str] = []
    missing: list[str] = []
    parts: list[str] = []
    inputs: list[InputRef] = [x[1] for x in (sup, bor, util) if x is not None]
    sev = 0.0
    z: float | None = None
    # spread z-score
    if (
        r.supply_apy is not None
        and r.borrow_apy is not None
        and sup is not None
        and bor is not None
    ):
        span = pd.Timedelta(days=cfg.z_window_days)
        spread = (
            upto(r.borrow_apy, at, at - span - stale) - upto(r.supply_apy, at, at - span - stale)
        ).dropna()
        if len(spread) >= 2:
            last_t = spread.index[-1]
            trail = spread.iloc[:-1]
            trail = trail[trail.index >= last_t - span]
            z, why = trailing_z(
                trail,
                float(spread.iloc[-1]),
                cfg.z_min_points,
                span,
                cfg.z_min_coverage_fraction,
                cfg.z_min_std,
                last_t,
            )
            parts.append(
                f"spread {fmt_pct(float(spread.iloc[-1]))} z {'n/a' if z is None else f'{z:.2f}'} ({why})"
            )
            if z is None:
                missing.append("spread history")
            else:
                sev = max(sev, z / cfg.spread_z_threshold)
                if z >= cfg.spread_z_threshold:
                    fired.append("spread z")
        else:
            missing.append("spread history")
    else:
        missing.append("supply and borrow APY (spread)")
    # borrow level
    value: float | None = None
    if bor is not None:
        value = bor[0]
        parts.append(f"borrow {fmt_pct(bor[0])}")
        sev = max(sev, bor[0] / cfg.borrow_apy)
        if bor[0] >= cfg.borrow_apy:
            fired.append("borrow APY")
    elif sup is not None and sup[0] >= cfg.borrow_apy:
        value = sup[0]
        parts.append(f"supply {fmt_pct(sup[0])} >= borrow threshold, so borrow is too")
        sev = max(sev, sup[0] / cfg.borrow_apy)
        fired.append("borrow APY (via supply)")
    else:
        if sup is not None:
            value = sup[0]
            parts.append(f"supply {fmt_pct(sup[0])} (no borrow series)")
        missing.append("borrow APY")
    # utilisation
    if util is not None:
        parts.append(f"utilisation {fmt_pct(util[0])}")
        sev = max(sev, util[0] / cfg.utilisation)
        if util[0] >= cfg.utilisation:
            fired.append("utilisation")
    else:
        missing.append("utilisation")
    status = FIRING if fired else (INSUFFICIENT if missing else QUIET)
    detail = "; ".join(parts) + (f" -> fired: {', '.join(fired)}" if fired else "")
    if missing and not fired:
        detail += f" -> missing: {', '.join(missing)}"
    return result(
        "S4",
        NAME,
        subject,
        status,
        value,
        cfg.borrow_apy,
        detail,
        inputs,
        {"spread_z": z, "severity": sev},
    )


def s4_rate_differential(
    reserves: Mapping[str, ReserveRates], at: pd.Timestamp, cfg: S4Config
) -> list[SignalResult]:
    if not reserves:
        return [insufficient("S4", NAME, "none", cfg.borrow_apy, "no reserve rates given")]
    return [s4_reserve(r, at, cfg, subject) for subject, r in reserves.items()]
