from decimal import Decimal

import pytest

from agent.core.units import (
    RAY,
    per_second_wad_to_apr,
    ray_apr_to_apy,
    token_to_float,
)


def test_ray_apr_to_apy_matches_compounding_formula() -> None:
    # 5% APR in ray, compounded per second over 365 days.
    rate = 5 * RAY // 100
    expected = (1 + Decimal("0.05") / 31536000) ** 31536000 - 1
    assert ray_apr_to_apy(rate) == pytest.approx(float(expected), rel=1e-12)
    assert ray_apr_to_apy(rate) == pytest.approx(0.051271096, rel=1e-6)


def test_zero_rate_is_zero_apy() -> None:
    assert ray_apr_to_apy(0) == 0.0


def test_comet_per_second_rate_to_apr() -> None:
    # 1e18-scaled per-second rate of 1.585489599e-9 ≈ 5% APR
    assert per_second_wad_to_apr(1_585_489_599) == pytest.approx(0.05, rel=1e-8)


def test_token_to_float_keeps_precision_for_large_amounts() -> None:
    assert token_to_float(123_456_789_012_345_678_901_234_567, 18) == pytest.approx(
        123456789.01234567
    )
    assert token_to_float(1, 6) == 1e-6


def test_ray_and_wad_to_float_divide_by_their_own_unit() -> None:
    # A ray read as a wad (or the reverse) is off by 1e9: pin both against the hand value.
    from agent.core.units import RAY, WAD, ray_to_float, wad_to_float

    assert ray_to_float(3 * RAY // 2) == 1.5
    assert ray_to_float(5 * RAY // 100) == 0.05  # a 5% APR as Aave stores it
    assert wad_to_float(3 * WAD // 2) == 1.5
