"""The guarded outcome (agent/backtest/guarded.py) on crafted hourly paths, every number by hand.

Position throughout: ETH collateral, USDC debt $1,000,000, LT 80%, bonus 5%, opened at HF 1.5
at $100: collateral C = 1.5 x 1e6 / 0.8 / 100 = 18,750 ETH. Liquidation price 1e6 / (18,750 x
0.8) = 66.667; guard price (HF 1.30) 1.3 x 1e6 / 15,000 = 86.667. Guard: trigger 1.30, target
1.60, budget $100,000 a day, gap 100 bps, gas $20 a transaction, swap cost 30 bps; no interest
(fallback APR 0) unless a test says so.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agent.backtest.guard_table import parse_hf_range
from agent.backtest.guarded import Bar, GuardedPath, GuardModel, simulate_guarded
from agent.backtest.outcome import PositionSpec
from agent.core.units import WAD
from agent.policy.guard import GuardConfig

POS = PositionSpec("t", "eth", "usdc", 1_000_000.0, 1.5, 8000, 500)
C0 = 18_750.0
T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
GUARD = GuardConfig(budget_usd=Decimal(100_000), stress_trigger_hf_wad=None)
AUTO = GuardModel(guard=GUARD, stress_aware=False)


def hours(*ohlc: tuple[float, float, float]) -> list[Bar]:
    """(open, low, close) per hour from 2024-01-01 00:00 UTC."""
    return [Bar(T0 + 3600 * i, o, lo, c, True) for i, (o, lo, c) in enumerate(ohlc)]


def run(bars: list[Bar], model: GuardModel | None = AUTO, **kw: Any) -> GuardedPath:
    return simulate_guarded(POS, bars, model, borrow_apr_fallback=0.0, **kw)


def test_wick_through_the_guard_price_that_recovers() -> None:
    bars = hours(
        (100, 100, 100),
        (100, 85, 99),  # the low crosses 86.667 (HF 1.275), the hour closes at 99
        (99, 98, 99),  # HF ~1.6 at the low: re-armed
        (99, 80, 99),  # above the new guard price 79.633: nothing
        (99, 99, 99),
    )
    g = run(bars)
    (act,) = g.actions
    # fills at the close less the gap: 99 x 0.99 = 98.01; HF there 18,750 x 98.01 x 0.8 / 1e6
    assert act.price_usd == pytest.approx(98.01, rel=1e-12)
    assert act.health_factor_before == pytest.approx(1.47015, rel=1e-12)
    # repay to 1.6: 1e6 - 18,750 x 98.01 x 0.8 / 1.6 = 1e6 - 918,843.75 = 81,156.25 (in budget)
    assert act.repay_usd == pytest.approx(81_156.25, abs=1e-6)
    assert act.collateral_sold == 0 and act.swap_cost_usd == 0 and act.gas_usd == 20
    assert act.health_factor_after == pytest.approx(1.6, rel=1e-9)
    assert act.at == T0 + 2 * 3600  # the end of the wick's hour
    # the real lowest HF: at the wick, 18,750 x 85 x 0.8 / 1e6 = 1.275
    assert g.lowest_health_factor == pytest.approx(1.275, rel=1e-12)
    assert not g.liquidations and g.own_cost_usd == 20
    # the 80 wick: HF 18,750 x 80 x 0.8 / 918,843.75 = 1.30598 > 1.30: the guard holds still
    assert pytest.approx(1.30598, abs=1e-5) == 18_750 * 80 * 0.8 / 918_843.75
    without = run(bars, None)
    assert not without.liquidations
    assert without.lowest_health_factor == pytest.approx(1.2, rel=1e-12)


def test_the_budget_runs_out_and_the_rest_is_a_deleverage() -> None:
    bars = hours(
        (100, 100, 100),
        (100, 85, 99),  # repays 81,156.25 (as above)
        (99, 98, 99),  # re-armed
        (99, 79, 95),  # HF at 79: 18,750 x 79 x 0.8 / 918,843.75 = 1.2897 <= 1.30: protect
    )
    g = run(bars)
    first, second = g.actions
    assert first.repay_usd == pytest.approx(81_156.25, abs=1e-6)
    # fill 95 x 0.99 = 94.05; collateral 18,750 x 94.05 = 1,763,437.50; needs a repay of
    # 918,843.75 - 1,763,437.5 x 0.8 / 1.6 = 37,125, but only 100,000 - 81,156.25 = 18,843.75
    # of the day's budget is left: debt 900,000 after it
    assert second.price_usd == pytest.approx(94.05, rel=1e-12)
    assert second.repay_usd == pytest.approx(18_843.75, abs=1e-6)
    # then sell x: (1.6 x 900,000 - 1,763,437.5 x 0.8) / (1.6 x 0.997 - 0.8) = 29,250 / 0.7952
    x = 29_250 / 0.7952
    assert second.collateral_sold_usd == pytest.approx(x, abs=1e-6)
    assert second.collateral_sold == pytest.approx(x / 94.05, rel=1e-9)
    assert second.swap_cost_usd == pytest.approx(x * 0.003, rel=1e-9)
    assert second.gas_usd == 40  # a repay and a swap
    assert second.health_factor_after == pytest.approx(1.6, rel=1e-9)
    assert g.guard_repaid_usd == pytest.approx(100_000, abs=1e-6)
    # an automation service: 0.05% of every transaction + 0.25% of every swap
    fee = (81_156.25 + 18_843.75 + x) * 0.0005 + x * 0.0025
    assert g.service_fee_usd(5, 25) == pytest.approx(fee, rel=1e-9)


def test_a_one_hour_drop_past_the_margin_liquidates_first() -> None:
    bars = hours((100, 100, 100), (100, 60, 70))
    g = run(bars)
    (liq,) = g.liquidations
    # oracle step: the HF-1 price 66.667 less 0.5% = 66.333; HF there 0.995 > 0.95: 50% repaid
    p = 1e6 / 15_000 * 0.995
    assert liq.collateral_price_usd == pytest.approx(p, rel=1e-12)
    assert liq.debt_repaid_usd == pytest.approx(500_000, rel=1e-12)
    seized = 525_000 / p
    assert liq.collateral_seized == pytest.approx(seized, rel=1e-12)
    assert g.bonus_lost_usd == pytest.approx(25_000, rel=1e-9)
    # the real lowest HF is at the hour's low, before the liquidation: 18,750 x 60 x 0.8 / 1e6
    assert g.lowest_health_factor == pytest.approx(0.9, rel=1e-12)
    # then the guard (HF at 60 on what is left: 1.04 <= 1.30) fills at 70 x 0.99 = 69.3:
    (act,) = g.actions
    c = 18_750 - seized
    assert act.price_usd == pytest.approx(69.3, rel=1e-12)
    assert act.repay_usd == pytest.approx(100_000, abs=1e-6)  # the whole budget
    x = (1.6 * 400_000 - c * 69.3 * 0.8) / (1.6 * 0.997 - 0.8)
    assert act.collateral_sold_usd == pytest.approx(x, rel=1e-9)
    assert act.health_factor_after == pytest.approx(1.6, rel=1e-9)


def test_signers_fill_after_their_delay_at_that_hour_close() -> None:
    bars = hours((100, 100, 100), (100, 85, 99), (99, 90, 97), (97, 96, 96), (96, 96, 96))
    g = run(bars, GuardModel(guard=GUARD, stress_aware=False, execution="signers", delay_hours=2))
    (act,) = g.actions
    # proposed at the end of hour 1, sized at 98.01 (a repay of 81,156.25), lands at the end
    # of hour 3 at 96 x 0.99 = 95.04 with the amount it was signed for
    assert (act.proposed_at, act.at) == (T0 + 2 * 3600, T0 + 4 * 3600)
    assert act.price_usd == pytest.approx(95.04, rel=1e-12)
    assert act.repay_usd == pytest.approx(81_156.25, abs=1e-6)
    assert act.health_factor_after == pytest.approx(18_750 * 95.04 * 0.8 / 918_843.75, rel=1e-9)


def test_stress_raises_the_trigger_from_the_next_day_on_no_look_ahead() -> None:
    guard = GuardConfig(budget_usd=Decimal(100_000))  # stress trigger 1.45
    model = GuardModel(guard=guard)
    assert guard.stress_trigger_hf_wad == 145 * WAD // 100
    # HF 1.44 at the low (price 96): above 1.30, below 1.45
    day0 = hours((100, 100, 100), (100, 96, 100))
    stress = {date(2024, 1, 1): frozenset({"S1"})}
    assert not run(day0, model, stress=stress).actions
    nxt = [Bar(b.t + 86_400, b.open, b.low, b.close, True) for b in day0]
    g = run([*day0, *nxt], model, stress=stress)
    (act,) = g.actions
    assert act.at == T0 + 86_400 + 2 * 3600  # on 01-02, from 01-01's signals
    assert "market stress" in act.reason


def test_interest_accrues_daily() -> None:
    days = [Bar(T0 + 86_400 * i, 100, 100, 100, True) for i in range(3)]
    g = simulate_guarded(POS, days, None, rates={date(2024, 1, 1): 0.0365})
    # two day boundaries: 1e6 x 0.0001, then on 1,000,100 x 0.05 / 365 (the fallback)
    first = 1e6 * 0.0365 / 365
    assert g.interest_usd == pytest.approx(first + (1e6 + first) * 0.05 / 365, rel=1e-12)


def test_opening_hf_range() -> None:
    hfs = parse_hf_range("1.30:2.00:0.005")
    assert len(hfs) == 141 and hfs[0] == 1.3 and hfs[-1] == 2.0 and hfs[1] == 1.305
    assert parse_hf_range("1.45") == (1.45,)
    with pytest.raises(ValueError, match="LO:HI:STEP"):
        parse_hf_range("1.3:2")
    with pytest.raises(ValueError, match="1 < LO"):
        parse_hf_range("0.9:2:0.1")


def test_execution_modes_parse() -> None:
    from agent.backtest.command import parse_execution
    from agent.core.errors import ConfigError

    assert parse_execution("autonomous") == ("autonomous", 0)
    assert parse_execution("signers") == ("signers", 24)  # today's behaviour: one day
    assert parse_execution("signers:4h") == ("signers", 4)
    assert parse_execution("signers:2d") == ("signers", 48)
    with pytest.raises(ConfigError, match="signers:<N>h"):
        parse_execution("signers:soon")


def test_cli_guarded_outcome_on_the_shipped_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One cheap smoke run on real data: May 2022, three starts, signers with a 4-hour delay."""
    from agent.cli import build_parser

    md, js = tmp_path / "guard.md", tmp_path / "out.json"
    args = build_parser().parse_args(
        [
            *["backtest", "--from", "2022-05-01", "--to", "2022-05-31", "--outcome"],
            *["--opening-hf", "1.40:1.50:0.05", "--execution", "signers:4h"],
            *["--guard-markdown", str(md), "--json", str(js)],
        ]
    )
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "Guarded outcome, position 'eth'" in out and "execution signers, 4h delay" in out
    assert "note: May 2022 (Terra): bitstamp ETH/USD 744h" in out
    assert "robustness: lows 5% deeper (total)" in out and "baseline, the same guard" in out
    text = md.read_text()
    assert text.startswith("##### Execution: signers, 4h delay\n")
    assert "| May 2022 (Terra) (05-01..05-31) | 3 |" in text
    assert "Hourly prices: May 2022 (Terra): bitstamp ETH/USD 744h." in text
    (rep,) = json.loads(js.read_text())["guarded_outcomes"]
    (w,) = rep["windows"]
    assert w["starts"] == 3 and [s["opening_hf"] for s in w["per_start"]] == [1.4, 1.45, 1.5]
    assert w["liquidated_with"] <= w["liquidated_without"]


def test_daily_bar_acts_at_the_guard_price_less_the_gap_then_checks_the_low() -> None:
    # a day with no hourly price: open 100, low 80, close 95. The guard price (HF 1.30) is
    # 1.3 x 1e6 / (18,750 x 0.8) = 86.667; the guard fills there less 1%: 85.8
    day = [Bar(T0, 100, 100, 100, True), Bar(T0 + 3600, 100, 80, 95, False)]
    g = run(day)
    (act,) = g.actions
    assert act.price_usd == pytest.approx(1.3e6 / 15_000 * 0.99, rel=1e-9)
    # HF there 18,750 x 85.8 x 0.8 / 1e6 = 1.287; to 1.6 needs a repay of 195,625: the budget
    # repays 100,000, then sells (1.6 x 900,000 - 18,750 x 85.8 x 0.8) / 0.7952 of collateral
    assert act.repay_usd == pytest.approx(100_000, abs=1e-6)
    x = (1.6 * 900_000 - 18_750 * 85.8 * 0.8) / 0.7952
    assert act.collateral_sold_usd == pytest.approx(x, rel=1e-6)
    # re-checked: the new guard price (~69.7) is below the day's low, so no second action, and
    # the liquidation check at 80 finds HF 1.49
    coll, debt = 18_750 - x / 85.8, 900_000 - x * 0.997
    assert not g.liquidations
    assert coll * 80 * 0.8 / debt == pytest.approx(1.4918, abs=1e-4)
    assert g.bars_daily == 1 and g.bars_hourly == 1
