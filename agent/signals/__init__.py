"""Signals S1..S8: pure functions of pandas series (see :mod:`agent.signals.base` for the
conventions). :func:`evaluate_signals` runs every signal over one :class:`SignalInputs` bundle;
the daemon (``agent.pipeline.evaluate``, inputs read from the store) and the backtest (inputs from the
shipped history) both call it, so they share the exact same code path."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd
from pydantic import BaseModel

from agent.signals.base import (
    SIGNAL_IDS,
    InputRef,
    SignalResult,
    Status,
    aggregate_status,
    to_utc,
)
from agent.signals.beta import paired_log_returns, s8_beta, s8_beta_one
from agent.signals.config import (
    S1Config,
    S2Config,
    S3Config,
    S4Config,
    S5Config,
    S6Config,
    S7Config,
    S8Config,
    SignalsConfig,
)
from agent.signals.funding import s3_funding_one, s3_funding_spike
from agent.signals.liquidations import s5_liquidations, s5_liquidations_one
from agent.signals.macro import (
    macro_prints,
    macro_prints_from_observations,
    s2_index,
    s2_macro_rising,
)
from agent.signals.rates import ReserveRates, s4_rate_differential, s4_reserve
from agent.signals.technical import macd_histogram, rsi_wilder, s7_technical, s7_technical_one
from agent.signals.tvl import s1_tvl_drawdown, s1_tvl_drawdown_one
from agent.signals.volatility import s6_collateral_volatility, s6_volatility_one


def _empty() -> dict[str, pd.Series]:
    return {}


def _no_series() -> pd.Series:
    return pd.Series(dtype=float, index=pd.DatetimeIndex([], tz="UTC"))


@dataclass(frozen=True)
class SignalInputs:
    """Every series the signals read, keyed by subject. Missing inputs make the corresponding
    signal insufficient_data (never quiet)."""

    tvl_usd: Mapping[str, pd.Series] = field(default_factory=_empty)  # S1, per protocol
    macro_prints: Mapping[str, pd.DataFrame] = field(default_factory=dict)  # S2, "cpi"/"ppi"
    funding_apr: Mapping[str, pd.Series] = field(default_factory=_empty)  # S3, per market
    reserve_rates: Mapping[str, ReserveRates] = field(default_factory=dict)  # S4, per reserve
    liquidations_usd_per_hour: Mapping[str, pd.Series] = field(default_factory=_empty)  # S5
    hourly_prices: Mapping[str, pd.Series] = field(default_factory=_empty)  # S6, per asset
    daily_closes: Mapping[str, pd.Series] = field(default_factory=_empty)  # S7, per asset
    beta_assets: Mapping[str, pd.Series] = field(
        default_factory=_empty
    )  # S8 crypto closes ("btc", "eth")
    spx_closes: pd.Series | None = None  # S8 S&P 500 closes


def _s8(inputs: SignalInputs, at: pd.Timestamp, cfg: SignalsConfig) -> list[SignalResult]:
    # No S&P 500 series is the same as an empty one: each crypto asset's beta is insufficient
    # data, named by its subject (the daemon and the backtest report it alike).
    spx = inputs.spx_closes if inputs.spx_closes is not None else _no_series()
    return s8_beta(inputs.beta_assets, spx, at, cfg.s8)


SignalStep = Callable[[SignalInputs, pd.Timestamp, SignalsConfig], list[SignalResult]]

# One step per signal id, in id order; each reads only its own config section (``cfg.s1`` for
# S1, ...), so a replay can reuse a signal's results while another signal's config changes.
SIGNAL_STEPS: dict[str, SignalStep] = {
    "S1": lambda i, at, c: s1_tvl_drawdown(i.tvl_usd, at, c.s1),
    "S2": lambda i, at, c: s2_macro_rising(i.macro_prints, at, c.s2),
    "S3": lambda i, at, c: s3_funding_spike(i.funding_apr, at, c.s3),
    "S4": lambda i, at, c: s4_rate_differential(i.reserve_rates, at, c.s4),
    "S5": lambda i, at, c: s5_liquidations(i.liquidations_usd_per_hour, at, c.s5),
    "S6": lambda i, at, c: s6_collateral_volatility(i.hourly_prices, at, c.s6),
    "S7": lambda i, at, c: s7_technical(i.daily_closes, at, c.s7),
    "S8": _s8,
}


def signal_config(cfg: SignalsConfig, sid: str) -> BaseModel:
    """The config section signal ``sid`` reads (``cfg.s1`` for S1, ...)."""
    section: BaseModel = getattr(cfg, sid.lower())
    return section


def evaluate_signals(
    inputs: SignalInputs, at: pd.Timestamp, cfg: SignalsConfig
) -> list[SignalResult]:
    """All eight signals at ``at``, in id order (one result per subject)."""
    at = to_utc(at)
    out: list[SignalResult] = []
    for step in SIGNAL_STEPS.values():
        out += step(inputs, at, cfg)
    return out


__all__ = [
    "SIGNAL_IDS",
    "SIGNAL_STEPS",
    "InputRef",
    "ReserveRates",
    "S1Config",
    "S2Config",
    "S3Config",
    "S4Config",
    "S5Config",
    "S6Config",
    "S7Config",
    "S8Config",
    "SignalInputs",
    "SignalResult",
    "SignalsConfig",
    "Status",
    "aggregate_status",
    "evaluate_signals",
    "macd_histogram",
    "macro_prints",
    "macro_prints_from_observations",
    "paired_log_returns",
    "rsi_wilder",
    "s1_tvl_drawdown",
    "s1_tvl_drawdown_one",
    "s2_index",
    "s2_macro_rising",
    "s3_funding_one",
    "s3_funding_spike",
    "s4_rate_differential",
    "s4_reserve",
    "s5_liquidations",
    "s5_liquidations_one",
    "s6_collateral_volatility",
    "s6_volatility_one",
    "s7_technical",
    "s7_technical_one",
    "s8_beta",
    "s8_beta_one",
    "signal_config",
]
