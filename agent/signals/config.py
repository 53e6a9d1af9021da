"""Signal configuration: DESIGN.md section 2 defaults, every threshold configurable.

Units are in the field names: ``_fraction`` (0.08 = 8%), ``_apr``/``_apy`` (0.5 = 50% a year),
``_hours``/``_days``. ``extra="forbid"`` makes a typo in a config file an error.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S1Config(_Cfg):
    """TVL drawdown: ``tvl_t / max(tvl over [t - window, t]) - 1 <= -drawdown_fraction``, ``t``
    the latest point known at the evaluation (window anchored there, both ends inclusive).

    Coverage: at least ``min_points`` points in the window, the first of them at least
    ``min_coverage_fraction`` of the window before ``t``; the latest point no older than
    ``max_staleness_hours`` at the evaluation. On daily data the 48h window of day D holds the
    points stamped D-2, D-1 and D.
    """

    window_hours: float = Field(48.0, gt=0)
    drawdown_fraction: float = Field(0.08, gt=0, lt=1)
    min_points: int = Field(2, ge=2)
    min_coverage_fraction: float = Field(0.5, ge=0, le=1)
    max_staleness_hours: float = Field(26.0, gt=0)


class S2Config(_Cfg):
    """Macro rising: latest released print's YoY minus the previous print's YoY ``> min_yoy_change``
    (0 = strictly above), for CPI or PPI. A print without a release time counts from
    ``fallback_release_day`` of the month after its reference month, 00:00 UTC. The latest
    released print must be at most ``max_print_age_days`` old (by release time)."""

    min_yoy_change: float = 0.0
    fallback_release_day: int = Field(15, ge=1, le=28)
    max_print_age_days: float = Field(75.0, gt=0)


class S3Config(_Cfg):
    """Funding spike (annualised funding, fraction per year): ``abs(rate) >= abs_apr`` or its
    z-score vs the trailing ``z_window_days`` ``>= z_threshold``. The z-score's standard deviation
    is floored at ``z_min_std_apr`` (funding sits at a clamp for long stretches, std ~ 0).

    ``direction``: ``abs`` (the design) fires on either sign of the level and on z >= threshold;
    ``negative`` only on ``rate <= -abs_apr`` or ``z <= -threshold`` (shorts paying: stress);
    ``positive`` only on ``rate >= abs_apr`` or ``z >= threshold`` (longs paying: euphoria)."""

    direction: Literal["abs", "negative", "positive"] = "abs"
    abs_apr: float = Field(0.50, gt=0)
    z_threshold: float = Field(3.0, gt=0)
    z_window_days: float = Field(30.0, gt=0)
    z_min_points: int = Field(20, ge=3)
    z_min_coverage_fraction: float = Field(0.8, ge=0, le=1)
    z_min_std_apr: float = Field(0.01, ge=0)
    max_staleness_hours: float = Field(12.0, gt=0)


class S4Config(_Cfg):
    """Stablecoin rate differential per reserve: fires when the borrow-supply spread's z-score vs
    its trailing ``z_window_days`` ``>= spread_z_threshold``, or borrow APY ``>= borrow_apy``, or
    utilisation ``>= utilisation``. Borrow APY >= supply APY on Aave, so a supply APY at or above
    ``borrow_apy`` proves the borrow condition when no borrow series is given."""

    spread_z_threshold: float = Field(3.0, gt=0)
    borrow_apy: float = Field(0.15, gt=0)
    utilisation: float = Field(0.92, gt=0, le=1)
    z_window_days: float = Field(30.0, gt=0)
    z_min_points: int = Field(20, ge=3)
    z_min_coverage_fraction: float = Field(0.8, ge=0, le=1)
    z_min_std: float = Field(0.0005, ge=0)  # 0.05 percentage points
    max_staleness_hours: float = Field(26.0, gt=0)


class S5Config(_Cfg):
    """Liquidations: USD volume in the last ``window_hours`` vs the mean daily volume over the
    ``baseline_days`` before it; fires at ``>= ratio``. The baseline is floored at
    ``min_baseline_daily_usd`` (a quiet week must not make one liquidation a spike)."""

    ratio: float = Field(3.0, gt=0)
    window_hours: float = Field(24.0, gt=0)
    baseline_days: int = Field(7, ge=1)
    min_baseline_daily_usd: float = Field(1000.0, ge=0)
    max_staleness_hours: float = Field(2.0, gt=0)
    min_coverage_fraction: float = Field(0.9, ge=0, le=1)


class S6Config(_Cfg):
    """Collateral volatility: realised vol of the last ``window_hours`` of hourly log returns
    (annualised with ``periods_per_year``) vs the trailing ``baseline_days`` level; fires at
    ``>= ratio``."""

    ratio: float = Field(2.0, gt=0)
    window_hours: float = Field(24.0, gt=0)
    baseline_days: float = Field(30.0, gt=0)
    periods_per_year: float = Field(8760.0, gt=0)
    min_window_returns: int = Field(20, ge=2)
    min_coverage_fraction: float = Field(0.8, ge=0, le=1)
    max_staleness_hours: float = Field(2.0, gt=0)


class S7Config(_Cfg):
    """Technical: RSI(``rsi_period``, Wilder) of daily closes ``<= rsi_threshold``, or the
    MACD(fast, slow, signal) histogram turning negative (``< 0`` today, ``>= 0`` the day before).
    Only the last ``lookback_days`` closes are used (indicators converge well before that)."""

    rsi_period: int = Field(14, ge=2)
    rsi_threshold: float = Field(30.0, ge=0, le=100)
    macd_fast: int = Field(12, ge=1)
    macd_slow: int = Field(26, ge=2)
    macd_signal: int = Field(9, ge=1)
    lookback_days: int = Field(250, ge=60)
    min_closes: int = Field(60, ge=30)
    max_staleness_days: float = Field(2.0, gt=0)


class S8Config(_Cfg):
    """Cross-domain beta: daily log returns of BTC/ETH vs the S&P 500 on S&P trading days (the
    crypto close of the same UTC date), beta = cov/var over the last ``short_window`` and
    ``long_window`` paired returns; rising when beta_short > beta_long."""

    short_window: int = Field(30, ge=5)
    long_window: int = Field(90, ge=10)
    max_staleness_days: float = Field(5.0, gt=0)


class S9Config(_Cfg):
    """VIX term structure: backwardation when the VIX close is above the VIX3M close of the same
    day (``VIX / VIX3M > ratio``, default 1.0). Only days both series have count (VIXCLS has
    holiday prints VXVCLS lacks); the latest common day must be at most ``max_staleness_days``
    old."""

    ratio: float = Field(1.0, gt=0)
    max_staleness_days: float = Field(5.0, gt=0)


class S10Config(_Cfg):
    """Implied volatility high: the latest VIX close's percentile rank among the last
    ``window_closes`` VIX closes (itself included) is ``>= percentile`` (0.70)."""

    percentile: float = Field(0.70, gt=0, le=1)
    window_closes: int = Field(90, ge=10)
    min_closes: int = Field(60, ge=5)
    max_staleness_days: float = Field(5.0, gt=0)


class S11Config(_Cfg):
    """Bearish MACD divergence of the S&P 500: the latest close is at or within
    ``price_tolerance_fraction`` of the highest close of the ``lookback_closes`` before it (the
    last ``min_gap_closes`` excluded), while the MACD(fast, slow) line is below its value on
    that highest close. MACD over the last ``history_closes`` closes (as S7)."""

    macd_fast: int = Field(12, ge=1)
    macd_slow: int = Field(26, ge=2)
    lookback_closes: int = Field(40, ge=5)
    min_gap_closes: int = Field(5, ge=1)
    price_tolerance_fraction: float = Field(0.01, ge=0, lt=1)
    history_closes: int = Field(250, ge=60)
    min_closes: int = Field(80, ge=30)
    max_staleness_days: float = Field(5.0, gt=0)


class SignalsConfig(_Cfg):
    s1: S1Config = S1Config()
    s2: S2Config = S2Config()
    s3: S3Config = S3Config()
    s4: S4Config = S4Config()
    s5: S5Config = S5Config()
    s6: S6Config = S6Config()
    s7: S7Config = S7Config()
    s8: S8Config = S8Config()
    # The S&P 500 side (agent.signals.spx; read by the SPX layer rule, not by the DeFi layer).
    s9: S9Config = S9Config()
    s10: S10Config = S10Config()
    s11: S11Config = S11Config()
