"""The outcome replay on short crafted price paths, every number recomputed by hand here.

Position used throughout: ETH collateral, USDC debt $1,000,000, LT 80%, bonus 5%, opened at HF 1.5
at $100: collateral = 1.5 * 1e6 / 0.8 / 100 = 18,750 ETH.
"""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from pathlib import Path
from statistics import NormalDist, stdev

import pytest

from agent.backtest.outcome import (
    OutcomeConfig,
    PositionSpec,
    PriceBook,
    Proposal,
    PutOrder,
    liquidate,
    proposal_from_actions,
    simulate,
)

D0 = date(2024, 1, 1)
POS = PositionSpec("t", "eth", "usdc", 1_000_000.0, 1.5, 8000, 500)
COLL = 18_750.0


def day(i: int) -> date:
    return D0 + timedelta(days=i)


def book(closes: list[float], lows: dict[int, float] | None = None) -> PriceBook:
    return PriceBook(
        {"eth": {day(i): c for i, c in enumerate(closes)}},
        {"eth": {day(i): lo for i, lo in (lows or {}).items()}},
    )


# crash on day 3: low $60, close $70
CRASH_D3 = book([100, 100, 100, 70, 70], {1: 99, 2: 98, 3: 60})
TOPUP_D1 = Proposal(day(1), topup_usd=500_000.0, target_health_factor=2.0)


def test_crash_liquidates_the_unprotected_position_not_the_protected_one() -> None:
    without = simulate(POS, CRASH_D3, day(0), day(4))
    # HF 1 at p1 = D / (C * LT) = 1e6 / (18750 * 0.8) = 66.67; the first oracle update past it is
    # 0.5% lower (inside the day's range down to 60)
    p_liq = 1e6 / (COLL * 0.8) * 0.995
    assert p_liq == pytest.approx(66.3333333, rel=1e-9)
    (liq,) = without.liquidations
    assert liq.day == day(3)
    assert liq.collateral_price_usd == pytest.approx(p_liq, rel=1e-12)
    assert liq.health_factor_before == pytest.approx(0.995, rel=1e-12)
    assert liq.close_factor == 0.5  # HF 0.995 > 0.95
    assert liq.debt_repaid_usd == pytest.approx(500_000, rel=1e-12)
    seized = 500_000 * 1.05 / p_liq  # 7,914.57 ETH
    assert liq.collateral_seized == pytest.approx(seized, rel=1e-12)
    assert liq.collateral_seized_usd == pytest.approx(525_000, rel=1e-12)
    assert liq.bonus_usd == pytest.approx(25_000, rel=1e-9)
    # after it: (18750 - 7914.57) ETH vs $500k: HF at the low 60 = 1.040, no second call
    assert liq.health_factor_after == pytest.approx((COLL - seized) * p_liq * 0.8 / 500_000)
    assert (COLL - seized) * 60 * 0.8 / 500_000 == pytest.approx(1.0402, abs=1e-4)
    assert without.bonus_lost_usd == pytest.approx(25_000, rel=1e-9)
    assert without.lowest_health_factor == pytest.approx(0.995, rel=1e-12)

    with_agent = simulate(POS, CRASH_D3, day(0), day(4), [TOPUP_D1])
    assert with_agent.liquidations == ()
    (ex,) = with_agent.executions
    # sized on day 1: need 2.0 * 1e6 / 0.8 - 18750 * 100 = 625,000 > proposed 500,000 -> 500,000
    assert (ex.proposed_on, ex.day, ex.kind) == (day(1), day(2), "top-up")
    assert ex.amount_usd == 500_000
    assert ex.health_factor_after == pytest.approx((COLL + 5_000) * 100 * 0.8 / 1e6)  # 1.9
    assert with_agent.capital_committed_usd == 500_000
    # the crash day's low: 23,750 ETH * 60 * 0.8 / 1e6 = 1.14
    assert with_agent.lowest_health_factor == pytest.approx(1.14, rel=1e-12)
    assert with_agent.days[3].health_factor_low == pytest.approx(1.14, rel=1e-12)


def test_top_up_is_cut_to_what_reaches_the_target() -> None:
    big = Proposal(day(1), topup_usd=2_000_000.0, target_health_factor=2.0)
    res = simulate(POS, CRASH_D3, day(0), day(4), [big])
    (ex,) = res.executions
    assert ex.amount_usd == pytest.approx(625_000, rel=1e-12)  # not the $2M proposed
    assert ex.health_factor_after == pytest.approx(2.0, rel=1e-12)  # price unchanged (100)


def test_day_low_model_liquidates_everything_at_the_low_with_the_full_close_factor() -> None:
    res = simulate(POS, CRASH_D3, day(0), day(4), cfg=OutcomeConfig(liquidation_model="day-low"))
    (liq,) = res.liquidations
    # HF at 60 = 18750 * 60 * 0.8 / 1e6 = 0.9 <= 0.95: close factor 100%
    assert liq.health_factor_before == pytest.approx(0.9, rel=1e-12)
    assert liq.close_factor == 1.0
    assert liq.debt_repaid_usd == pytest.approx(1_000_000, rel=1e-12)
    assert liq.collateral_seized == pytest.approx(17_500, rel=1e-12)  # 1e6 * 1.05 / 60
    assert liq.bonus_usd == pytest.approx(50_000, rel=1e-9)
    assert res.days[-1].collateral == pytest.approx(1_250, rel=1e-9)
    assert res.days[-1].debt == 0


def test_execution_delay_moves_the_top_up_past_the_crash_day() -> None:
    crash_d2 = book([100, 100, 70, 70], {1: 99, 2: 60})
    late = simulate(POS, crash_d2, day(0), day(3), [TOPUP_D1])  # default delay: 1 day
    alone = simulate(POS, crash_d2, day(0), day(3))
    # the top-up lands at day 2's close, after the low that liquidated the position
    assert [liq.day for liq in late.liquidations] == [day(2)]
    assert late.liquidations == alone.liquidations
    (ex,) = late.executions
    assert ex.day == day(2) and ex.price_usd == 70
    assert ex.amount_usd == 500_000  # sized on day 1, bought at day 2's price
    seized = 500_000 * 1.05 / (1e6 / (COLL * 0.8) * 0.995)
    assert ex.health_factor_before == pytest.approx((COLL - seized) * 70 * 0.8 / 500_000)
    assert late.days[-1].collateral == pytest.approx(COLL - seized + 500_000 / 70, rel=1e-12)

    now = simulate(POS, crash_d2, day(0), day(3), [TOPUP_D1], OutcomeConfig(execution_delay_days=0))
    assert now.liquidations == ()
    assert now.executions[0].day == day(1)
    assert now.days[2].health_factor_low == pytest.approx((COLL + 5_000) * 60 * 0.8 / 1e6)


def test_close_factor_switches_at_hf_095() -> None:
    d = day(0)
    # 1000 ETH, LT 80%, $800,000 debt: HF = 1000 * p * 0.8 / 800000 = p / 1000
    _, debt, at = liquidate(1000, 800_000, 950, 1.0, 8000, 500, d)
    assert at.health_factor_before == pytest.approx(0.95) and at.close_factor == 1.0  # HF <= 0.95
    assert debt == pytest.approx(0.0, abs=1e-6) and at.debt_repaid_usd == pytest.approx(800_000)
    _, debt, above = liquidate(1000, 800_000, 951, 1.0, 8000, 500, d)
    assert above.close_factor == 0.5 and debt == pytest.approx(400_000)
    assert above.collateral_seized == pytest.approx(400_000 * 1.05 / 951, rel=1e-12)
    _, _, below = liquidate(1000, 800_000, 949, 1.0, 8000, 500, d)
    assert below.close_factor == 1.0
    # under $2,000 of debt (Aave v3.3+): 100% even at HF 0.99
    _, debt, small = liquidate(2.0, 1_584.0, 990, 1.0, 8000, 500, d)
    assert small.health_factor_before == pytest.approx(1.0) and small.close_factor == 1.0


def test_short_collateral_is_seized_in_full_and_repays_what_it_covers() -> None:
    coll, debt, liq = liquidate(1000, 800_000, 500, 1.0, 8000, 500, day(0))  # HF 0.5
    assert coll == 0 and liq.collateral_seized == 1000
    assert liq.debt_repaid_usd == pytest.approx(500_000 / 1.05, rel=1e-12)
    assert debt == pytest.approx(800_000 - 500_000 / 1.05, rel=1e-12)
    assert liq.bonus_usd == pytest.approx(500_000 - 500_000 / 1.05, rel=1e-12)


def _bs_put_by_hand(s: float, k: float, vol: float, t: float, r: float = 0.0) -> float:
    n = NormalDist()
    d1 = (math.log(s / k) + (r + vol**2 / 2) * t) / (vol * math.sqrt(t))
    d2 = d1 - vol * math.sqrt(t)
    return k * math.exp(-r * t) * n.cdf(-d2) - s * n.cdf(-d1)


def test_put_bought_after_the_delay_pays_at_expiry() -> None:
    closes = [100.0, 110.0, 99.0, 99, 99, 99, 99, 99, 99, 80.0]  # expiry day 9 (7 days after day 2)
    order = PutOrder("short", "eth", 0.10, 7, 7, 1_000.0)
    hedged = PositionSpec("h", "eth", "usdc", 1_000_000.0, 10.0, 8000, 500)
    cfg = OutcomeConfig(vol_window_days=2)
    res = simulate(hedged, book(closes), day(0), day(9), [Proposal(day(1), puts=(order,))], cfg)
    (put,) = res.puts
    assert (put.bought_on, put.expiry, put.dte_days) == (day(2), day(9), 7)
    # realised vol of the last 2 daily log returns up to day 2, annualised with 365 days
    vol = stdev([math.log(110 / 100), math.log(99 / 110)]) * math.sqrt(365)
    assert put.vol == pytest.approx(vol, rel=1e-12)
    assert put.spot_usd == 99 and put.strike_usd == pytest.approx(89.1, rel=1e-12)
    unit = _bs_put_by_hand(99, 89.1, vol, 7 / 365)
    assert put.contracts == pytest.approx(1_000 / unit, rel=1e-9)
    assert put.settle_usd == 80
    assert put.payoff_usd == pytest.approx(1_000 / unit * (89.1 - 80), rel=1e-9)
    assert res.premiums_usd == 1_000 and res.put_payoff_usd == put.payoff_usd
    # a put whose expiry is past the data stays open (no payoff invented)
    short = simulate(
        hedged, book(closes[:9]), day(0), day(8), [Proposal(day(1), puts=(order,))], cfg
    )
    assert short.puts[0].payoff_usd is None and short.put_payoff_usd == 0


def test_proposal_read_from_the_action_records() -> None:
    p = proposal_from_actions(
        day(0),
        [
            {
                "kind": "collateral_top_up",
                "max_spend_usd": "150000.00",
                "target_health_factor": 1.6,
            },
            {
                "kind": "option_put",
                "horizon": "short",
                "underlying": "WETH",
                "dte_min": 0,
                "dte_max": 7,
                "otm_fraction": "0.10",
                "spend_usd": "40000.00",
            },
            {"kind": "something_new", "spend_usd": "1"},
        ],
    )
    assert p.topup_usd == 150_000 and p.target_health_factor == 1.6
    assert p.puts == (PutOrder("short", "eth", 0.10, 0, 7, 40_000.0),)
    assert p.puts[0].dte("mid") == 4 and p.puts[0].dte("min") == 1  # never a 0-day put
    assert p.unmodelled == ("something_new",)


def test_real_history_proposals_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.backtest import load_history, run_backtest
    from agent.backtest.outcome import proposals_from_backtest
    from agent.cli import build_parser
    from agent.collectors.csv_import import SHIPPED_DIR
    from agent.core.errors import ConfigError

    data = load_history(SHIPPED_DIR)
    # the shipped Yahoo file has the day's low: 2020-03-13 traded down to $95.18, closed $133.20
    assert data.series("low.eth")["2020-03-13"] == pytest.approx(95.184303, rel=1e-6)
    # the thin interface passes on whatever the rule proposed (whatever its sizing rules are)
    res = run_backtest(data, "2022-06-10", "2022-06-16")
    props = proposals_from_backtest(res)
    acted = [r.decision for r in res.days if r.decision.actions]
    assert props and len(props) == len(acted)
    for p, d in zip(props, acted, strict=True):
        assert p.day.isoformat() == d.session_id
        assert p.topup_usd == float(sum(t.max_spend_usd for t in d.topups()))
        assert [(o.horizon, o.underlying, o.otm_fraction, o.premium_usd) for o in p.puts] == [
            (o.horizon, "eth", float(o.otm_fraction), float(o.spend_usd)) for o in d.options()
        ]

    out, md = tmp_path / "bt.json", tmp_path / "outcome.md"
    args = build_parser().parse_args(
        [
            *["backtest", "--from", "2022-05-01", "--to", "2022-05-31", "--outcome"],
            *("--json", str(out), "--outcome-markdown", str(md)),
        ]
    )
    assert args.handler(args) == 0
    text = capsys.readouterr().out
    assert "without the agent" in text and "May 2022 (Terra)" in text
    (rep,) = json.loads(out.read_text())["outcomes"]
    assert rep["position"]["name"] == "eth" and rep["config"]["execution_delay_days"] == 1
    (ep,) = rep["episodes"]
    days = json.loads(out.read_text())["days"]
    assert ep["proposal_days"] == [r["date"] for r in days if r["actions"]]
    assert ep["without_agent"]["totals"]["liquidations"] > 0
    assert "| May 2022 (Terra) (05-01..05-31) |" in md.read_text()

    bad = build_parser().parse_args(
        [
            "backtest",
            "--from",
            "2022-05-01",
            "--to",
            "2022-05-02",
            "--outcome",
            "--execution-delay-days",
            "-1",
        ]
    )
    with pytest.raises(ConfigError, match="execution delay"):
        bad.handler(bad)


def test_without_the_intraday_low_the_wick_is_missed() -> None:
    closes_only = book([100, 100, 100, 70, 70])  # HF at the close 70: 18750 * 70 * 0.8 / 1e6 = 1.05
    assert simulate(POS, closes_only, day(0), day(4)).liquidations == ()


def test_repay_and_deleverage_sized_to_the_target_with_the_swap_cost() -> None:
    flat = book([100, 100, 100, 100])
    # repay: D - C * LT / H* = 1e6 - 1.875e6 * 0.8 / 2 = 250,000
    rep = simulate(
        POS, flat, day(0), day(3), [Proposal(day(1), repay_usd=900_000.0, target_health_factor=2.0)]
    )
    (ex,) = rep.executions
    assert ex.kind == "repay" and ex.amount_usd == pytest.approx(250_000, rel=1e-12)
    assert rep.days[-1].debt == pytest.approx(750_000, rel=1e-12)
    assert ex.health_factor_after == pytest.approx(2.0, rel=1e-12)
    assert rep.capital_committed_usd == pytest.approx(250_000, rel=1e-12)
    # deleverage x: (C - x) * LT / (D - x * (1 - s)) = H* -> x = (H* D - C LT) / (H* (1 - s) - LT)
    x = (2.0 * 1e6 - 1.875e6 * 0.8) / (2.0 * (1 - 0.003) - 0.8)  # 418,760.47
    dl = simulate(
        POS,
        flat,
        day(0),
        day(3),
        [Proposal(day(1), deleverage_usd=900_000.0, target_health_factor=2.0)],
    )
    (ex,) = dl.executions
    assert ex.kind == "deleverage" and ex.amount_usd == pytest.approx(x, rel=1e-12)
    assert ex.swap_cost_usd == pytest.approx(x * 0.003, rel=1e-12)
    assert dl.days[-1].collateral == pytest.approx(COLL - x / 100, rel=1e-12)
    assert dl.days[-1].debt == pytest.approx(1e6 - x * 0.997, rel=1e-12)
    assert ex.health_factor_after == pytest.approx(2.0, rel=1e-12)
    assert dl.capital_committed_usd == 0 and dl.swap_cost_usd == pytest.approx(x * 0.003)


def test_yahoo_low_is_imported_with_the_close(tmp_path: Path) -> None:
    from agent.collectors.csv_import import import_file

    f = tmp_path / "eth_usd_daily_yahoo.csv"
    f.write_text(
        "Date,Close,High,Low,Open,Volume\n"
        "2024-03-01,3000,3100,2900,2950,1\n"
        "2024-03-02,3050,3100,3060,3000,1\n"  # a low above the close (bad row): capped at the close
        "2024-03-03,3100,3200,2000,3050,1\n"  # the partial last bar: close and low both dropped
    )
    obs = import_file(f).observations
    lows = {o.ts: o for o in obs if o.key == "low.eth"}
    day1 = 1709251200  # 2024-03-01 00:00 UTC
    assert [lows[t].value for t in sorted(lows)] == [2900, 3050]
    assert lows[day1].known_at == day1 + 86_399  # known when the day ends, like the close
    assert {o.key for o in obs} == {"close.eth", "low.eth"} and len(obs) == 4


def test_a_deeper_fall_liquidates_again_at_the_next_oracle_step() -> None:
    res = simulate(POS, book([100, 60, 60], {1: 55}), day(0), day(2))
    first, second = res.liquidations  # and no third: HF at 55 after the second is 1.10
    p1 = 1e6 / (COLL * 0.8) * 0.995
    c1 = COLL - 500_000 * 1.05 / p1  # 10,835.43 ETH, $500k debt left
    p2 = 500_000 / (c1 * 0.8) * 0.995  # 57.39: the next update past HF 1, above the low 55
    assert second.collateral_price_usd == pytest.approx(p2, rel=1e-12)
    assert second.health_factor_before == pytest.approx(0.995, rel=1e-12)
    assert second.close_factor == 0.5 and second.debt_repaid_usd == pytest.approx(250_000)
    assert second.collateral_seized == pytest.approx(250_000 * 1.05 / p2, rel=1e-12)
    c2 = c1 - 250_000 * 1.05 / p2
    assert c2 * 55 * 0.8 / 250_000 == pytest.approx(1.1021, abs=1e-4)
    assert first.bonus_usd + second.bonus_usd == pytest.approx(25_000 + 12_500, rel=1e-9)
    assert res.days[1].collateral == pytest.approx(c2, rel=1e-12)
    assert res.days[1].health_factor_low == pytest.approx(0.995, rel=1e-12)
    assert res.days[1].health_factor_close == pytest.approx(c2 * 60 * 0.8 / 250_000, rel=1e-12)
