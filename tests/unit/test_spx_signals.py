"""S9-S11 against values computed by hand (independent arithmetic, not the module's helpers)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from agent.signals import SignalsConfig
from agent.signals.config import S9Config, S10Config, S11Config
from agent.signals.spx import (
    SpxInputs,
    evaluate_spx_signals,
    macd_line,
    percentile_rank,
    s9_term_structure,
    s10_implied_vol,
    s11_macd_divergence,
)


def series(points: dict[str, float], name: str) -> pd.Series:
    s = pd.Series(
        list(points.values()),
        index=pd.DatetimeIndex([pd.Timestamp(d, tz="UTC") for d in points]),
        name=name,
        dtype="float64",
    )
    s.attrs["source"] = f"test:{name}"
    return s


def daily(values: list[float], start: str = "2024-01-01", name: str = "close.spx") -> pd.Series:
    s = pd.Series(
        values,
        index=pd.date_range(start, periods=len(values), freq="D", tz="UTC"),
        name=name,
        dtype="float64",
    )
    s.attrs["source"] = "test"
    return s


def end_of(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1) - pd.Timedelta(seconds=1)


# -- S9 --------------------------------------------------------------------------------------


def test_s9_backwardation_uses_the_latest_common_day_not_a_holiday_print() -> None:
    # 2024-01-15 (Martin Luther King Day): VIXCLS printed, VXVCLS did not. The holiday VIX must
    # not be paired with Friday's VIX3M: S9 reads Friday's pair, 14.00 / 13.00.
    vix = series({"2024-01-11": 12.0, "2024-01-12": 14.0, "2024-01-15": 30.0}, "close.vix")
    vix3m = series({"2024-01-11": 13.0, "2024-01-12": 13.0}, "close.vix3m")
    r = s9_term_structure(vix, vix3m, end_of("2024-01-15"), S9Config())
    assert r.status == "firing"
    assert r.value == pytest.approx(14.0 / 13.0, abs=1e-12)
    assert r.metric("spread") == pytest.approx(1.0)
    assert [(i.key, i.value, i.ts) for i in r.inputs] == [
        ("close.vix", 14.0, int(pd.Timestamp("2024-01-12", tz="UTC").timestamp())),
        ("close.vix3m", 13.0, int(pd.Timestamp("2024-01-12", tz="UTC").timestamp())),
    ]
    assert r.inputs[0].source == "test:close.vix"


def test_s9_contango_equal_and_cut_at_at() -> None:
    vix = series({"2024-01-11": 12.0, "2024-01-12": 20.0}, "close.vix")
    vix3m = series({"2024-01-11": 14.0, "2024-01-12": 20.0}, "close.vix3m")
    # 01-12: equal levels is not backwardation (strictly above).
    r = s9_term_structure(vix, vix3m, end_of("2024-01-12"), S9Config())
    assert (r.status, r.value) == ("quiet", 1.0)
    # At the end of 01-11 the 01-12 row does not exist yet: 12 / 14.
    r = s9_term_structure(vix, vix3m, end_of("2024-01-11"), S9Config())
    assert r.status == "quiet" and r.value == pytest.approx(12 / 14)


def test_s9_insufficient_states() -> None:
    vix = series({"2024-01-02": 30.0}, "close.vix")
    vix3m = series({"2024-01-02": 20.0}, "close.vix3m")
    assert s9_term_structure(None, vix3m, end_of("2024-01-02"), S9Config()).insufficient
    assert "VIX3M" in s9_term_structure(vix, None, end_of("2024-01-02"), S9Config()).detail
    stale = s9_term_structure(vix, vix3m, end_of("2024-01-09"), S9Config())
    assert stale.insufficient and "stale" in stale.detail
    other_days = series({"2024-01-03": 20.0}, "close.vix3m")
    assert s9_term_structure(vix, other_days, end_of("2024-01-03"), S9Config()).insufficient


# -- S10 -------------------------------------------------------------------------------------


def test_percentile_rank_by_hand() -> None:
    # 10 values, last 19: values <= 19 are all but 20 -> 9/10.
    assert percentile_rank(np.array([12, 15, 11, 20, 18, 14, 13, 16, 17, 19.0])) == 0.9
    # last 14: 12, 11, 14, 13, 14 -> 5/10.
    assert percentile_rank(np.array([12, 15, 11, 20, 18, 14, 13, 16, 17, 14.0])) == 0.5


def test_s10_window_rank_threshold() -> None:
    cfg = S10Config(window_closes=10, min_closes=5)
    # 12 closes; the window is the last 10: [11, 20, 18, 14, 13, 16, 17, 15, 19, 16]
    # (the first two, 99 and 98, are out of it). Last 16: <= 16 are 11, 14, 13, 16, 15, 16 -> 6/10.
    vals = [99, 98, 11, 20, 18, 14, 13, 16, 17, 15, 19, 16.0]
    vix = daily(vals, name="close.vix")
    r = s10_implied_vol(vix, end_of("2024-01-12"), cfg)
    assert r.status == "quiet" and r.value == pytest.approx(0.6)
    assert r.metric("window_min") == 11 and r.metric("window_max") == 20
    assert r.metric("range_position") == pytest.approx((16 - 11) / (20 - 11))
    # One day earlier the window is [98, 11, 20, 18, 14, 13, 16, 17, 15, 19]: 19 -> 8/10 >= 0.7.
    r = s10_implied_vol(vix, end_of("2024-01-11"), cfg)
    assert r.status == "firing" and r.value == pytest.approx(0.8)
    # Exactly at the threshold fires ("at or above"): last 17 in [11, 20, 18, 14, 13, 16, 17]
    # with window 7... use a window where 7 of 10 are <= last.
    r = s10_implied_vol(
        daily([1, 2, 3, 4, 5, 6, 7, 9, 10, 7.5], name="close.vix"), end_of("2024-01-10"), cfg
    )
    assert r.value == pytest.approx(0.8)
    r = s10_implied_vol(
        daily([1, 2, 3, 4, 5, 6, 8, 9, 10, 6.5], name="close.vix"), end_of("2024-01-10"), cfg
    )
    assert r.status == "firing" and r.value == pytest.approx(0.7)


def test_s10_insufficient() -> None:
    cfg = S10Config(window_closes=10, min_closes=5)
    assert s10_implied_vol(None, end_of("2024-01-02"), cfg).insufficient
    short = s10_implied_vol(daily([1, 2, 3, 4.0], name="close.vix"), end_of("2024-01-04"), cfg)
    assert short.insufficient and "4 VIX closes, need 5" in short.detail
    stale = s10_implied_vol(daily([1, 2, 3, 4, 5.0], name="close.vix"), end_of("2024-01-20"), cfg)
    assert stale.insufficient and "stale" in stale.detail


# -- S11 -------------------------------------------------------------------------------------


def test_macd_line_by_hand_on_a_short_series() -> None:
    # EMA2 (a = 2/3) and EMA3 (a = 1/2) of 10, 11, 12, 11, seeded with the first close:
    # EMA2 = 10, 32/3, 104/9, 302/27; EMA3 = 10, 21/2, 45/4, 89/8.
    # MACD = 0, 1/6, 11/36, 13/216.
    m = macd_line(np.array([10.0, 11.0, 12.0, 11.0]), 2, 3)
    want = [Fraction(0), Fraction(1, 6), Fraction(11, 36), Fraction(13, 216)]
    assert m.tolist() == pytest.approx([float(w) for w in want], abs=1e-12)


def _ema_by_hand(xs: list[float], span: int) -> list[float]:
    a = 2 / (span + 1)
    out = [xs[0]]
    for x in xs[1:]:
        out.append(a * x + (1 - a) * out[-1])
    return out


def _divergence_series(last: float) -> list[float]:
    # 60 closes rising 100 -> 130 (strong momentum), a drop to 120 over 10 closes, then a slow
    # climb back towards the high: price retests 130 with a much flatter MACD.
    up = [100 + 30 * i / 59 for i in range(60)]
    down = [130 - i for i in range(1, 11)]
    back = [120 + (last - 120) * i / 30 for i in range(1, 31)]
    return up + down + back


def test_s11_bearish_divergence_fires_against_hand_macd() -> None:
    closes = _divergence_series(129.5)
    cfg = S11Config(min_closes=60)
    r = s11_macd_divergence(daily(closes), end_of("2024-04-09"), cfg)  # 100 closes from 01-01
    t = len(closes) - 1
    p = 59  # the highest close among positions t-40 .. t-5 (59 .. 94) is the end of the rise
    assert max(closes[t - 40 : t - 4]) == closes[p] == 130.0
    macd = [f - s for f, s in zip(_ema_by_hand(closes, 12), _ema_by_hand(closes, 26), strict=True)]
    assert macd[t] < macd[p]
    assert r.status == "firing"
    assert r.value == pytest.approx(macd[t] - macd[p], abs=1e-9)
    assert r.metric("price_vs_high") == pytest.approx(129.5 / 130 - 1)
    assert r.metric("high_close") == 130.0
    assert [i.value for i in r.inputs] == [129.5, 130.0]


def test_s11_quiet_when_price_is_not_back_at_its_high_or_momentum_is_stronger() -> None:
    cfg = S11Config(min_closes=60)
    # 128.6 is more than 1% below 130 (130 * 0.99 = 128.7): not a retest of the high.
    r = s11_macd_divergence(daily(_divergence_series(128.6)), end_of("2024-04-09"), cfg)
    assert r.status == "quiet"
    # A steady rise: each new close is the high and the MACD keeps pace (constant slope, MACD
    # converges upwards), so no divergence.
    r = s11_macd_divergence(daily([100 + i for i in range(100)]), end_of("2024-04-09"), cfg)
    assert r.status == "quiet" and r.value is not None and r.value > 0


def test_s11_insufficient() -> None:
    cfg = S11Config(min_closes=60)
    assert s11_macd_divergence(None, end_of("2024-01-01"), cfg).insufficient
    short = s11_macd_divergence(daily([100.0] * 59), end_of("2024-02-28"), cfg)
    assert short.insufficient and "59 S&P 500 closes, need 60" in short.detail
    stale = s11_macd_divergence(daily([100.0] * 60), end_of("2024-03-20"), cfg)
    assert stale.insufficient and "stale" in stale.detail


def test_evaluate_spx_signals_ids_in_order() -> None:
    out = evaluate_spx_signals(SpxInputs(), end_of("2024-01-02"), SignalsConfig())
    assert [r.id for r in out] == ["S9", "S10", "S11"]
    assert all(r.insufficient for r in out)
