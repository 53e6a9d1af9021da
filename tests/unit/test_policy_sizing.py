"""The policy's pure sizing functions that the backtest calls instead of restating them, against
hand values. Position: collateral $1,500,000, debt $1,000,000, LT 80% -> HF 1.2; target 1.6."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agent.backtest.outcome import needed_usd
from agent.core.units import WAD
from agent.policy import PositionSnapshot, layer_trigger
from agent.policy.decide import (
    health_factor_wad,
    required_deleverage_base,
    required_repay_base,
    required_topup_base,
)
from agent.signals.base import SignalResult, result

E8 = 10**8
C, D, LT, H = 1_500_000 * E8, 1_000_000 * E8, 8000, 16 * WAD // 10


def test_topup_repay_deleverage_to_target_by_hand() -> None:
    snap = PositionSnapshot("0xa", C, D, LT, health_factor_wad(C, D, LT))
    assert snap.health_factor_wad == 12 * WAD // 10
    # top-up: 1.6 * 1e6 / 0.8 - 1.5e6 = 500,000
    assert required_topup_base(snap, H) == 500_000 * E8
    # repay: 1e6 - 1.5e6 * 0.8 / 1.6 = 250,000
    assert required_repay_base(C, D, LT, H) == 250_000 * E8
    # deleverage at 30 bps: (1.6e6 - 1.2e6) / (1.6 * 0.997 - 0.8) = 400,000 / 0.7952 = 503,018.108...
    x = required_deleverage_base(C, D, LT, H, 30)
    assert x is not None and x == -(-400_000 * E8 * 10_000 // 7_952)
    assert Decimal(x) / E8 == pytest.approx(Decimal("503018.10865191"), abs=Decimal("0.00000001"))
    # and the HF after selling x and repaying x * 0.997 is the target (to the base unit)
    hf_after = (C - x) * 0.8 / (D - x * 0.997)
    assert hf_after == pytest.approx(1.6, abs=1e-12)
    # free of cost the sale is (1.6e6 - 1.2e6) / (1.6 - 0.8) = 500,000
    assert required_deleverage_base(C, D, LT, H, 0) == 500_000 * E8


def test_nothing_needed_above_target_and_impossible_deleverage() -> None:
    assert required_repay_base(C, D, LT, 11 * WAD // 10) == 0
    assert required_deleverage_base(C, D, LT, 11 * WAD // 10, 30) == 0
    assert required_repay_base(C, 0, LT, H) == 0
    # a sale whose cost leaves (1 - cost) * H <= LT cannot raise HF: 1.6 * (1 - 0.5) = 0.8
    assert required_deleverage_base(C, D, LT, H, 5_000) is None


def test_backtest_needed_usd_is_the_policy_sizing() -> None:
    topup, repay, delev = needed_usd(1_500_000.0, 1_000_000.0, LT, 1.6, 30)
    assert topup == 500_000.0 and repay == 250_000.0
    assert delev == pytest.approx(400_000 / 0.7952, abs=1e-8)


def _fire(*ids: str) -> list[SignalResult]:
    return [
        result(s, s, s.lower(), "firing" if s in ids else "quiet", 1.0, 0.5, "")
        for s in ("S1", "S2", "S3", "S4")
    ]


def test_layer_trigger_paths() -> None:
    assert layer_trigger(_fire("S1", "S2")).paths == ("S1+S2",)
    assert layer_trigger(_fire("S3", "S4")).paths == ("S3+S4",)
    assert not layer_trigger(_fire("S1", "S3")).fired
    assert layer_trigger(_fire("S1", "S2", "S3", "S4")).paths == ("S1+S2", "S3+S4")


def test_required_topup_and_repay_are_the_exact_minimum() -> None:
    """``required_topup_base`` and ``required_repay_base`` against exact rational arithmetic:
    the amount reaches the target and one base unit less does not (mutation audit: a floor
    where a ceiling belongs lands the position a hair below target)."""
    import random

    from agent.policy.decide import required_repay_base, required_topup_base
    from agent.policy.models import PositionSnapshot

    bps = 10_000
    # A case by hand: C = 0, D = 1, LT = 1 bp, target 1 + 1e-18. Need x with x*1*WAD >= (WAD+1)*BPS
    # i.e. x >= 10000.00...01: x = 10001.
    p = PositionSnapshot("0xa", 0, 1, 1, 0)
    assert required_topup_base(p, WAD + 1) == 10_001
    rng = random.Random(24)
    for _ in range(3_000):
        c = rng.randrange(0, 10**12)
        d = rng.randrange(1, 10**12)
        lt = rng.choice([1, 7, 8250, rng.randrange(1, bps)])
        t = rng.randrange(WAD, 3 * WAD)
        hf = c * lt * WAD // (d * bps)
        x = required_topup_base(PositionSnapshot("0xa", c, d, lt, hf), t)

        # (C' * LT / BPS) / D' >= t / WAD, exactly
        def reaches(cc: int, dd: int) -> bool:
            return dd <= 0 or cc * lt * WAD >= t * dd * bps  # noqa: B023 (called in this pass)

        if reaches(c, d):
            assert x == 0
        else:
            assert reaches(c + x, d) and not reaches(c + x - 1, d), (c, d, lt, t, x)
        y = required_repay_base(c, d, lt, t)
        if reaches(c, d):
            assert y == 0
        else:
            assert reaches(c, d - y) and not reaches(c, d - y + 1), (c, d, lt, t, y)
