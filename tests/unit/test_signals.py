"""Signals S1..S7 against values computed by hand on small series (S8: test_beta.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.core.models import Observation
from agent.signals import (
    ReserveRates,
    S1Config,
    S2Config,
    S3Config,
    S4Config,
    S5Config,
    S6Config,
    S7Config,
    SignalInputs,
    SignalsConfig,
    aggregate_status,
    evaluate_signals,
    macd_histogram,
    macro_prints,
    macro_prints_from_observations,
    rsi_wilder,
    s1_tvl_drawdown,
    s1_tvl_drawdown_one,
    s2_index,
    s3_funding_one,
    s4_reserve,
    s5_liquidations_one,
    s6_volatility_one,
    s7_technical_one,
)

UTC = "UTC"


def daily(values: list[float], start: str = "2024-01-01", name: str = "k") -> pd.Series:
    s = pd.Series(
        values,
        index=pd.date_range(start, periods=len(values), freq="D", tz=UTC),
        name=name,
        dtype="float64",
    )
    s.attrs["source"] = "test"
    return s


def hourly(
    values: list[float] | np.ndarray, start: str = "2024-01-01", name: str = "k"
) -> pd.Series:
    return pd.Series(
        values,
        index=pd.date_range(start, periods=len(values), freq="h", tz=UTC),
        name=name,
        dtype="float64",
    )


def eod(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz=UTC) + pd.Timedelta(hours=23, minutes=59, seconds=59)


# -- S1 ---------------------------------------------------------------------------------------


def test_s1_daily_window_is_48h_back_from_the_latest_point() -> None:
    tvl = daily([200.0, 100.0, 110.0, 100.0], name="tvl.x")  # Jan 1..4
    r = s1_tvl_drawdown_one(tvl, eod("2024-01-04"), S1Config(), "x")
    # anchored at the Jan 4 point: [Jan 2, Jan 4] holds 100, 110, 100; Jan 1's 200 is 72h back
    assert r.firing and r.value == pytest.approx(100 / 110 - 1)  # -9.09%
    assert r.threshold == -0.08
    assert [(i.ts, i.value) for i in r.inputs] == [
        (int(pd.Timestamp("2024-01-04", tz=UTC).timestamp()), 100.0),
        (int(pd.Timestamp("2024-01-03", tz=UTC).timestamp()), 110.0),
    ]
    assert r.inputs[0].key == "tvl.x" and r.inputs[0].source == "test"
    quiet = s1_tvl_drawdown_one(daily([100.0, 95.0]), eod("2024-01-02"), S1Config(), "x")
    assert quiet.status == "quiet" and quiet.value == pytest.approx(-0.05)
    exact = s1_tvl_drawdown_one(daily([100.0, 92.0]), eod("2024-01-02"), S1Config(), "x")
    assert exact.firing  # -8% exactly fires (<=)


def test_s1_daily_window_reaches_the_point_exactly_48h_back() -> None:
    """The point 48h before the latest one is in the window (inclusive), whatever the time of
    the evaluation: D-2's 110 against D's 100 fires, though D-1 vs D is only -4.8%."""
    tvl = daily([110.0, 105.0, 100.0])  # Jan 1..3
    noon = pd.Timestamp("2024-01-03 12:00", tz=UTC)
    for at in (pd.Timestamp("2024-01-03", tz=UTC), noon, eod("2024-01-03")):
        r = s1_tvl_drawdown_one(tvl, at, S1Config(), "x")
        assert r.firing and r.value == pytest.approx(100 / 110 - 1), at
        assert r.metric("points") == 3.0
    # a point one second more than 48h before the latest one is out
    idx = pd.DatetimeIndex(
        [
            pd.Timestamp("2024-01-01", tz=UTC) - pd.Timedelta(seconds=1),
            pd.Timestamp("2024-01-02", tz=UTC),
            pd.Timestamp("2024-01-03", tz=UTC),
        ]
    )
    r = s1_tvl_drawdown_one(
        pd.Series([110.0, 105.0, 100.0], index=idx), eod("2024-01-03"), S1Config(), "x"
    )
    assert r.status == "quiet" and r.value == pytest.approx(100 / 105 - 1)


def test_s1_staleness_is_measured_at_the_evaluation() -> None:
    # latest point Jan 3 00:00; at Jan 4 02:00 it is 26h old (allowed), at 02:00:01 stale
    tvl = daily([110.0, 105.0, 100.0])
    ok = s1_tvl_drawdown_one(tvl, pd.Timestamp("2024-01-04 02:00", tz=UTC), S1Config(), "x")
    assert ok.firing
    stale = s1_tvl_drawdown_one(tvl, pd.Timestamp("2024-01-04 02:00:01", tz=UTC), S1Config(), "x")
    assert stale.status == "insufficient_data" and "older than 26h" in stale.detail


def test_s1_hourly_48h_window() -> None:
    v = [100.0] * 100
    v[40] = 120.0  # 59h before the last point: outside the 48h window
    v[60] = 108.0  # inside
    r = s1_tvl_drawdown_one(hourly(v), hourly(v).index[-1], S1Config(), "p")
    assert r.value == pytest.approx(100 / 108 - 1) and r.status == "quiet"


def test_s1_insufficient() -> None:
    one = s1_tvl_drawdown_one(daily([100.0]), eod("2024-01-01"), S1Config(), "x")
    assert one.status == "insufficient_data" and not one.firing and one.value is None
    stale = s1_tvl_drawdown_one(daily([100.0, 50.0]), eod("2024-01-04"), S1Config(), "x")
    assert stale.status == "insufficient_data"
    assert s1_tvl_drawdown({}, eod("2024-01-04"), S1Config())[0].status == "insufficient_data"


def test_s1_ignores_points_after_at() -> None:
    tvl = daily([100.0, 100.0, 50.0])
    assert s1_tvl_drawdown_one(tvl, eod("2024-01-02"), S1Config(), "x").status == "quiet"


# -- S2 ---------------------------------------------------------------------------------------


def monthly(values: list[float], start: str = "2022-01-01") -> pd.Series:
    return pd.Series(
        values, index=pd.date_range(start, periods=len(values), freq="MS", tz=UTC), name="macro.cpi"
    )


def test_s2_yoy_change_by_hand() -> None:
    # 2022-01..2023-03: base 100 for 2022, 2023-01 105 (+5%), 2023-02 106 (+6%), 2023-03 106.5 (+6.5%)
    v = [100.0] * 12 + [105.0, 106.0, 106.5]
    p = macro_prints(monthly(v))
    # At 2023-04-14 the March print is not out yet (fallback release 2023-04-15): Feb vs Jan
    r = s2_index(p, pd.Timestamp("2023-04-14 23:00", tz=UTC), S2Config(), "cpi")
    assert r.firing and r.value == pytest.approx(0.06 - 0.05)
    assert r.metric("yoy_latest") == pytest.approx(0.06)
    assert {i.value for i in r.inputs} == {106.0, 100.0, 105.0}
    # From 2023-04-15 00:00 the March print counts: +6.5% vs +6%
    r2 = s2_index(p, pd.Timestamp("2023-04-15", tz=UTC), S2Config(), "cpi")
    assert r2.value == pytest.approx(0.065 - 0.06) and r2.firing


def test_s2_falling_is_quiet_and_release_times_are_used() -> None:
    v = [100.0] * 13 + [106.0, 105.0]  # 2021-12 .. 2023-02
    rel = pd.Series(
        [pd.Timestamp("2023-02-10", tz=UTC), pd.Timestamp("2023-03-10", tz=UTC)],
        index=pd.DatetimeIndex(
            [pd.Timestamp("2023-01-01", tz=UTC), pd.Timestamp("2023-02-01", tz=UTC)]
        ),
    )
    p = macro_prints(monthly(v, "2021-12-01"), rel)
    assert s2_index(
        p, pd.Timestamp("2023-03-09", tz=UTC), S2Config(), "cpi"
    ).value == pytest.approx(0.06 - 0.0)
    r = s2_index(p, pd.Timestamp("2023-03-10", tz=UTC), S2Config(), "cpi")
    assert r.status == "quiet" and r.value == pytest.approx(0.05 - 0.06)


def test_s2_vintages_and_missing_month() -> None:
    base = pd.Timestamp("2021-12-01", tz=UTC)
    obs = [
        Observation(
            "macro.cpi", int((base + pd.DateOffset(months=i)).timestamp()), 100.0, "index", "fred"
        )
        for i in range(13)
    ]
    jan23 = int(pd.Timestamp("2023-01-01", tz=UTC).timestamp())
    mar23 = int(pd.Timestamp("2023-03-01", tz=UTC).timestamp())
    first = int(pd.Timestamp("2023-02-10", tz=UTC).timestamp())
    revised = int(pd.Timestamp("2023-03-20", tz=UTC).timestamp())
    obs += [
        Observation("macro.cpi", jan23, 104.0, "index", "bls", first),
        Observation("macro.cpi", jan23, 103.0, "index", "bls", revised),  # revision, later vintage
        # Feb 2023 never published; March released Apr 12
        Observation(
            "macro.cpi",
            mar23,
            104.5,
            "index",
            "bls",
            int(pd.Timestamp("2023-04-12", tz=UTC).timestamp()),
        ),
    ]
    p = macro_prints_from_observations(obs)
    # Apr 13: latest = Mar 2023 (+4.5%), previous print = Jan 2023 (Feb missing) in its revised vintage (+3%)
    r = s2_index(p, pd.Timestamp("2023-04-13", tz=UTC), S2Config(), "cpi")
    assert r.value == pytest.approx(0.045 - 0.03) and r.firing
    # Mar 1: only Jan's first vintage is out; previous is Dec 2022 (+0%) -> +4%
    r0 = s2_index(p, pd.Timestamp("2023-03-01", tz=UTC), S2Config(), "cpi")
    assert r0.value == pytest.approx(0.04)


def test_s2_insufficient() -> None:
    p = macro_prints(monthly([100.0] * 12))
    r = s2_index(p, pd.Timestamp("2023-06-01", tz=UTC), S2Config(), "cpi")
    assert r.status == "insufficient_data"  # no print 12 months earlier
    old = macro_prints(monthly([100.0] * 12 + [101.0, 102.0]))
    r2 = s2_index(old, pd.Timestamp("2024-01-01", tz=UTC), S2Config(), "cpi")
    assert r2.status == "insufficient_data" and "older than" in r2.detail
    assert (
        s2_index(old, pd.Timestamp("2020-01-01", tz=UTC), S2Config(), "cpi").status
        == "insufficient_data"
    )


# -- S3 ---------------------------------------------------------------------------------------


def funding(values: list[float]) -> pd.Series:
    s = pd.Series(
        values,
        index=pd.date_range("2024-01-01", periods=len(values), freq="8h", tz=UTC),
        name="funding.x",
    )
    return s


def test_s3_level_and_z() -> None:
    base = [0.10, 0.12] * 45  # 30 days of 8h prints: mean 0.11, std(ddof=1) ~ 0.01005
    at = funding([*base, 0.0]).index[-1]
    quiet = s3_funding_one(funding([*base, 0.12]), at, S3Config(), "m")
    mean, std = 0.11, float(np.std(base, ddof=1))
    assert quiet.status == "quiet" and quiet.metric("z") == pytest.approx((0.12 - mean) / std)
    zfire = s3_funding_one(funding([*base, 0.20]), at, S3Config(), "m")
    assert zfire.firing and zfire.metric("z") == pytest.approx((0.20 - mean) / std)  # ~8.96 >= 3
    level = s3_funding_one(
        funding([0.11] * 3 + [-0.6]), funding([0.0] * 4).index[-1], S3Config(), "m"
    )
    assert level.firing and level.value == -0.6  # |rate| >= 50% even without z history
    short = s3_funding_one(
        funding([0.11] * 3 + [0.2]), funding([0.0] * 4).index[-1], S3Config(), "m"
    )
    assert short.status == "insufficient_data"  # not at level, z not computable
    stale = s3_funding_one(funding([*base, 0.12]), at + pd.Timedelta(hours=13), S3Config(), "m")
    assert stale.status == "insufficient_data"


def test_s3_direction() -> None:
    base = [0.10, 0.12] * 45
    at = funding([*base, 0.0]).index[-1]
    mean, std = 0.11, float(np.std(base, ddof=1))
    neg, pos = S3Config(direction="negative"), S3Config(direction="positive")
    # +60% APR: fires under abs and positive, not under negative (z +48.8 is the wrong way)
    euphoric = funding([*base, 0.60])
    assert s3_funding_one(euphoric, at, S3Config(), "m").firing
    assert s3_funding_one(euphoric, at, pos, "m").firing
    r = s3_funding_one(euphoric, at, neg, "m")
    assert r.status == "quiet" and r.metric("severity") == 0.0
    # -60% APR: fires under abs and negative (severity 1.2 from the level; -z = 66.7 / 3)
    stress = funding([*base, -0.60])
    r = s3_funding_one(stress, at, neg, "m")
    z = (-0.60 - mean) / std
    assert r.firing and r.metric("severity") == pytest.approx(max(0.6 / 0.5, -z / 3))
    assert s3_funding_one(stress, at, S3Config(), "m").firing
    assert s3_funding_one(stress, at, pos, "m").status == "quiet"
    # a z-score plunge below -3 without the level fires only under negative
    dip = funding([*base, 0.05])  # z = (0.05 - 0.11) / 0.01005 = -5.97
    assert s3_funding_one(dip, at, neg, "m").firing
    assert s3_funding_one(dip, at, S3Config(), "m").status == "quiet"
    assert s3_funding_one(dip, at, pos, "m").status == "quiet"
    with pytest.raises(ValidationError):
        S3Config(direction="up")  # type: ignore[arg-type]


# -- S4 ---------------------------------------------------------------------------------------


def test_s4_conditions() -> None:
    cfg = S4Config()
    at = eod("2024-02-09")
    sup = daily([0.03] * 40)
    assert s4_reserve(ReserveRates(supply_apy=sup), at, cfg, "usdc").status == "insufficient_data"
    high = s4_reserve(ReserveRates(supply_apy=daily([0.03] * 39 + [0.16])), at, cfg, "usdc")
    assert high.firing and "via supply" in high.detail
    full = ReserveRates(
        supply_apy=sup, borrow_apy=daily([0.05, 0.051] * 20), utilisation=daily([0.80] * 40)
    )
    q = s4_reserve(full, at, cfg, "usdc")
    assert q.status == "quiet" and q.value == pytest.approx(0.051)
    util = s4_reserve(
        ReserveRates(
            supply_apy=sup, borrow_apy=daily([0.05] * 40), utilisation=daily([0.80] * 39 + [0.93])
        ),
        at,
        cfg,
        "u",
    )
    assert util.firing and "utilisation" in util.detail
    spread = ReserveRates(
        supply_apy=sup,
        borrow_apy=daily([0.05, 0.051] * 19 + [0.05, 0.09]),
        utilisation=daily([0.8] * 40),
    )
    s = s4_reserve(spread, at, cfg, "u")
    trail = (np.array([0.05, 0.051] * 19 + [0.05]) - 0.03)[-30:]
    z = (0.06 - trail.mean()) / trail.std(ddof=1)
    assert s.firing and s.metric("spread_z") == pytest.approx(z)
    borrow = s4_reserve(ReserveRates(borrow_apy=daily([0.05] * 39 + [0.15])), at, cfg, "u")
    assert borrow.firing and borrow.value == 0.15


# -- S5 ---------------------------------------------------------------------------------------


def test_s5_ratio() -> None:
    base = [1000.0] * (7 * 24)  # 24,000 USD per day
    at_ix = hourly([0.0] * (8 * 24)).index[-1]
    calm = s5_liquidations_one(hourly(base + [1000.0] * 24), at_ix, S5Config(), "aave")
    assert calm.status == "quiet" and calm.value == pytest.approx(1.0)
    spike = s5_liquidations_one(hourly(base + [3000.0] * 24), at_ix, S5Config(), "aave")
    assert spike.firing and spike.value == pytest.approx(3.0)
    short = s5_liquidations_one(
        hourly([1000.0] * 48), hourly([0.0] * 48).index[-1], S5Config(), "aave"
    )
    assert short.status == "insufficient_data"


# -- S6 ---------------------------------------------------------------------------------------


def test_s6_vol_ratio() -> None:
    rng = np.random.default_rng(1)
    r_base = rng.normal(0, 0.005, 30 * 24)
    r_new = rng.normal(0, 0.02, 24)
    lr = np.concatenate([[0.0], r_base, r_new])
    prices = hourly(100 * np.exp(np.cumsum(lr)))
    r = s6_volatility_one(prices, prices.index[-1], S6Config(), "eth")
    expect = np.std(r_new, ddof=1) / np.std(r_base, ddof=1)
    assert r.firing and r.value == pytest.approx(expect)
    d = daily(list(100 * np.exp(np.cumsum(rng.normal(0, 0.02, 60)))))
    assert s6_volatility_one(d, d.index[-1], S6Config(), "eth").status == "insufficient_data"


# -- S7 ---------------------------------------------------------------------------------------


def test_rsi_by_hand() -> None:
    closes = np.array(
        [100.0 + x for x in [0, 1, 2, 3, 4, 5, 6, 7, 6, 5, 4, 3, 2, 1, 0]]
    )  # 7 up, 7 down
    assert rsi_wilder(closes, 14) == pytest.approx(50.0)
    closes2 = np.append(closes, 102.0)  # +2: ag=(0.5*13+2)/14, al=0.5*13/14
    ag, al = (0.5 * 13 + 2) / 14, 0.5 * 13 / 14
    assert rsi_wilder(closes2, 14) == pytest.approx(100 - 100 / (1 + ag / al))
    assert rsi_wilder(np.arange(1.0, 20.0), 14) == 100.0


def test_macd_matches_pandas_ewm() -> None:
    x = np.array([10, 11, 12, 11, 13, 12, 14, 15, 13, 12, 11, 12, 13, 12, 11, 10] * 4, dtype=float)
    s = pd.Series(x)
    macd = s.ewm(span=12, adjust=False).mean() - s.ewm(span=26, adjust=False).mean()
    hist = macd - macd.ewm(span=9, adjust=False).mean()
    assert np.allclose(macd_histogram(x, 12, 26, 9), hist.to_numpy())


def test_s7_rsi_and_macd_turn() -> None:
    cfg = S7Config(min_closes=30)
    falling = daily([100.0 - i for i in range(60)])
    r = s7_technical_one(falling, eod("2024-02-29"), cfg, "eth")
    assert r.firing and r.value == pytest.approx(0.0)
    up_then_down = [100.0 + i for i in range(50)] + [149.0 - 3 * i for i in range(1, 11)]
    s = daily(up_then_down)
    x = s.to_numpy()
    hist = macd_histogram(x, 12, 26, 9)
    turn_ix = int(np.argmax(hist < 0))  # first negative histogram day
    at = eod(str(s.index[turn_ix].date()))
    t = s7_technical_one(s, at, cfg, "eth")
    assert t.firing and "MACD histogram turned negative" in t.detail
    assert t.metric("macd_hist_prev") == pytest.approx(hist[turn_ix - 1]) and t.metric(
        "macd_hist"
    ) == pytest.approx(hist[turn_ix])
    assert (
        s7_technical_one(daily([100.0] * 10), eod("2024-01-10"), cfg, "eth").status
        == "insufficient_data"
    )


# -- shared behaviour ---------------------------------------------------------------------------


def test_aggregate_status_and_config_typos() -> None:
    r = s1_tvl_drawdown_one(daily([100.0]), eod("2024-01-01"), S1Config(), "x")
    assert (
        aggregate_status([r]) == "insufficient_data" and aggregate_status([]) == "insufficient_data"
    )
    with pytest.raises(ValidationError):
        SignalsConfig.model_validate({"s1": {"drawdown_fraktion": 0.1}})
    with pytest.raises(ValidationError):
        S1Config(drawdown_fraction=2)


def test_missing_inputs_are_insufficient_not_quiet() -> None:
    res = evaluate_signals(SignalInputs(), eod("2024-01-01"), SignalsConfig())
    assert {r.id for r in res} == {f"S{i}" for i in range(1, 9)}
    assert all(r.status == "insufficient_data" for r in res)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(min_value=1.0, max_value=1e6), min_size=5, max_size=40),
    st.integers(min_value=0, max_value=39),
)
def test_no_look_ahead_truncation(values: list[float], cut: int) -> None:
    """Evaluating at day D with the series cut after D equals evaluating with the full series."""
    cut = min(cut, len(values) - 1)
    s = daily(values)
    at = eod(str(s.index[cut].date()))
    cfg = SignalsConfig()
    full = evaluate_signals(
        SignalInputs(tvl_usd={"p": s}, daily_closes={"eth": s}, funding_apr={"m": s / 1e6}), at, cfg
    )
    cut_s = s.iloc[: cut + 1]
    part = evaluate_signals(
        SignalInputs(
            tvl_usd={"p": cut_s}, daily_closes={"eth": cut_s}, funding_apr={"m": cut_s / 1e6}
        ),
        at,
        cfg,
    )
    assert full == part
