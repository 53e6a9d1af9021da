"""The one put pricer (agent.policy.pricing) against hand values, and the three callers that
used to carry their own copy (backtest, SPX ticket, devnet pools) now all being that one."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest

from agent.backtest import outcome
from agent.devnet import pricing as devnet_pricing
from agent.policy import spx
from agent.policy.pricing import black_scholes_put, normal_cdf


def test_textbook_values() -> None:
    # Hull's example: S 42, K 40, r 10%, vol 20%, 6 months -> put 0.8086
    assert black_scholes_put(42, 40, 0.5, 0.2, 0.1) == pytest.approx(0.8086, abs=5e-5)
    # at the money, r = 0: S (2 N(vol sqrt(T) / 2) - 1) = 100 (2 N(0.1) - 1) = 7.9656
    assert black_scholes_put(100, 100, 1.0, 0.2) == pytest.approx(
        100 * (2 * NormalDist().cdf(0.1) - 1), rel=1e-12
    )
    assert black_scholes_put(100, 100, 1.0, 0.2) == pytest.approx(7.9656, abs=5e-5)


def test_at_and_past_expiry_the_put_is_its_intrinsic_value_whatever_the_rate() -> None:
    assert black_scholes_put(90, 100, 0.0, 0.8, 0.05) == 10.0
    assert black_scholes_put(90, 100, -0.01, 0.8, 0.05) == 10.0  # past expiry: not discounted
    assert black_scholes_put(110, 100, 0.0, 0.8) == 0.0


def test_zero_vol_before_expiry_is_the_discounted_intrinsic_value_of_the_forward() -> None:
    # K e^{-rT} - S = 100 e^{-0.05} - 90 = 5.1229...
    assert black_scholes_put(90, 100, 1.0, 0.0, 0.05) == pytest.approx(
        100 * math.exp(-0.05) - 90, rel=1e-12
    )
    assert black_scholes_put(96, 100, 1.0, 0.0, 0.05) == 0.0  # 95.12 < 96: worthless
    # and the formula tends to that limit as vol -> 0
    assert black_scholes_put(90, 100, 1.0, 1e-6, 0.05) == pytest.approx(
        100 * math.exp(-0.05) - 90, rel=1e-9
    )


def test_close_to_expiry_the_formula_meets_the_intrinsic_value() -> None:
    assert black_scholes_put(90, 100, 1e-9, 0.8, 0.05) == pytest.approx(10.0, abs=1e-3)
    assert black_scholes_put(110, 100, 1e-9, 0.8, 0.05) == pytest.approx(0.0, abs=1e-12)


def test_far_tail_keeps_digits() -> None:
    # N(-10) = 7.62e-24: 1 + erf(-10/sqrt 2) would round to 0
    assert normal_cdf(-10) == pytest.approx(7.619853024160527e-24, rel=1e-9)


def test_put_call_parity() -> None:
    s, k, t, v, r = 3000.0, 2700.0, 30 / 365, 0.8, 0.04
    d1 = (math.log(s / k) + (r + v * v / 2) * t) / (v * math.sqrt(t))
    d2 = d1 - v * math.sqrt(t)
    call = s * NormalDist().cdf(d1) - k * math.exp(-r * t) * NormalDist().cdf(d2)
    assert call - black_scholes_put(s, k, t, v, r) == pytest.approx(s - k * math.exp(-r * t))


def test_bad_spot_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="spot 0"):
        black_scholes_put(0, 100, 1.0, 0.2)


def test_every_caller_uses_the_one_pricer() -> None:
    assert spx.black_scholes_put is black_scholes_put
    assert devnet_pricing.black_scholes_put is black_scholes_put
    assert outcome.black_scholes_put is black_scholes_put
    assert not hasattr(outcome, "bs_put")
