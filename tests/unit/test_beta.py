"""S8 (cross-domain beta) against an independent least-squares fit, and on the real history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agent.collectors.csv_import import SHIPPED_DIR
from agent.signals import S8Config, paired_log_returns, s8_beta_one

DATA = SHIPPED_DIR  # the history shipped with the project (gzipped)


def lstsq_beta(x: np.ndarray, y: np.ndarray) -> float:
    a = np.column_stack([x, np.ones_like(x)])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(coef[0])


def synthetic(n_days: int = 220, seed: int = 7) -> tuple[pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    days = pd.date_range("2023-01-02", periods=n_days, freq="D", tz="UTC")
    crypto = pd.Series(
        30000 * np.exp(np.cumsum(rng.normal(0, 0.03, n_days))), index=days, name="close.btc"
    )
    trading = days[days.dayofweek < 5]
    spx_r = rng.normal(0, 0.01, len(trading))
    spx = pd.Series(4000 * np.exp(np.cumsum(spx_r)), index=trading, name="close.spx")
    # make crypto co-move with the index on trading days (beta rising over time)
    k = np.linspace(0.5, 2.5, len(trading))
    crypto.loc[trading] *= np.exp(np.cumsum(k * spx_r))
    return crypto, spx


def test_pairing_uses_sp500_days_and_spans_weekends() -> None:
    crypto, spx = synthetic(30)
    lr = paired_log_returns(crypto, spx)
    assert all(d.dayofweek < 5 for d in lr.index)
    monday = next(d for d in lr.index if d.dayofweek == 0)
    friday = monday - pd.Timedelta(days=3)
    assert lr.loc[monday, "crypto"] == pytest.approx(np.log(crypto[monday] / crypto[friday]))
    assert lr.loc[monday, "spx"] == pytest.approx(np.log(spx[monday] / spx[friday]))


def test_beta30_beta90_match_lstsq() -> None:
    crypto, spx = synthetic()
    at = crypto.index[-1] + pd.Timedelta(hours=23)
    r = s8_beta_one(crypto, spx, at, S8Config(), "btc")
    lr = paired_log_returns(crypto, spx)
    x, y = lr["spx"].to_numpy(), lr["crypto"].to_numpy()
    assert r.metric("beta_short") == pytest.approx(lstsq_beta(x[-30:], y[-30:]), rel=1e-9)
    assert r.metric("beta_long") == pytest.approx(lstsq_beta(x[-90:], y[-90:]), rel=1e-9)
    assert r.value == r.metric("beta_short") and r.threshold == r.metric("beta_long")
    assert r.firing == (r.metric("beta_short") > r.metric("beta_long"))  # type: ignore[operator]
    assert r.firing  # the synthetic beta rises over time


def test_beta_insufficient_and_no_look_ahead() -> None:
    crypto, spx = synthetic()
    early = crypto.index[60]
    assert s8_beta_one(crypto, spx, early, S8Config(), "btc").status == "insufficient_data"
    at = crypto.index[180] + pd.Timedelta(hours=23)
    full = s8_beta_one(crypto, spx, at, S8Config(), "btc")
    cut = s8_beta_one(crypto[crypto.index <= at], spx[spx.index <= at], at, S8Config(), "btc")
    assert full == cut
    stale = s8_beta_one(crypto, spx, crypto.index[-1] + pd.Timedelta(days=10), S8Config(), "btc")
    assert stale.status == "insufficient_data"


def test_calendar_year_beta_matches_provenance_sanity_check() -> None:
    """PROVENANCE.md: calendar-year OLS beta of log returns on ^GSPC trading days:
    BTC 2020 0.99, 2021 1.58, 2022 1.52, 2023 0.56; ETH 2020 1.39, 2021 1.63, 2022 2.01, 2023 0.57."""
    from agent.backtest.data import load_history

    data = load_history(DATA)
    spx = data.series("close.spx")
    expected = {
        "btc": {2020: 0.99, 2021: 1.58, 2022: 1.52, 2023: 0.56},
        "eth": {2020: 1.39, 2021: 1.63, 2022: 2.01, 2023: 0.57},
    }
    for asset, years in expected.items():
        lr = paired_log_returns(data.series(f"close.{asset}"), spx)
        for year, beta in years.items():
            sub = lr[lr.index.year == year]
            assert lstsq_beta(sub["spx"].to_numpy(), sub["crypto"].to_numpy()) == pytest.approx(
                beta, abs=0.011
            ), (asset, year)
