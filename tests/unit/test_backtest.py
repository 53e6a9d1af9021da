"""The backtest on the real history shipped in data/history."""

from __future__ import annotations

import json
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from agent.backtest import BacktestPosition, HistoricalData, load_history, run_backtest
from agent.backtest.engine import BacktestResult, Replay, build_inputs
from agent.collectors.csv_import import SHIPPED_DIR
from agent.core.errors import AgentError, ConfigError
from agent.core.models import Observation
from agent.policy import OptionAction, PolicyConfig, TopUpAction

DATA = SHIPPED_DIR  # the history shipped with the project (gzipped)


@pytest.fixture(scope="module")
def data() -> HistoricalData:
    return load_history(DATA)


@pytest.fixture(scope="module")
def replay(data: HistoricalData) -> Replay:
    """2019-01-01..2025-07-31: each signal computed once per config, shared by the tests."""
    return Replay(build_inputs(data), date(2019, 1, 1), date(2025, 7, 31))


@pytest.fixture(scope="module")
def full(data: HistoricalData, replay: Replay) -> BacktestResult:
    return run_backtest(data, "2019-01-01", "2025-07-31", replay=replay)


def test_missing_data_dir_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_history(tmp_path / "nope")
    with pytest.raises(ConfigError, match="missing"):
        load_history(tmp_path)


def test_series_interface_like_the_store() -> None:
    o = [
        Observation("macro.cpi", 100, 1.0, "index", "a", 500),
        Observation("macro.cpi", 100, 2.0, "index", "b", 900),
        Observation("macro.cpi", 200, 3.0, "index", "a", 600),
    ]
    h = HistoricalData({"macro.cpi": tuple(o)})
    assert h.series("macro.cpi", known_by=550).tolist() == [1.0]
    assert h.series("macro.cpi", known_by=700).tolist() == [1.0, 3.0]
    assert h.series("macro.cpi").tolist() == [2.0, 3.0]
    assert h.truncated(600).series("macro.cpi").tolist() == [1.0, 3.0]


def test_full_history_runs_in_seconds(data: HistoricalData) -> None:
    # CPU time of this process: the wall clock on a shared machine measures the other load too.
    t0 = time.process_time()
    res = run_backtest(data, "2019-01-01", "2025-07-31")
    elapsed = time.process_time() - t0
    assert len(res.days) == 2404
    assert elapsed < 30, f"2019-2025 replay took {elapsed:.1f}s of CPU"
    # every day has all eight signals and a decision; insufficient is explicit
    day = res.day("2023-06-01")
    assert {s.id for s in day.signals} == {f"S{i}" for i in range(1, 9)}
    assert day.signal_summary()["S5"]["status"] == "insufficient_data"


def test_no_look_ahead_truncation(data: HistoricalData) -> None:
    """Cutting the data after day D (keeping only what was known by D 23:59:59) changes no
    decision on or before D."""
    for cut in ("2020-03-13", "2022-05-12", "2022-11-10"):
        d = date.fromisoformat(cut)
        until = int(
            (pd.Timestamp(d, tz="UTC") + pd.Timedelta(days=1) - pd.Timedelta(seconds=1)).timestamp()
        )
        start = (pd.Timestamp(d) - pd.Timedelta(days=45)).date()
        full = run_backtest(data, start, "2022-12-31" if d.year == 2022 else "2020-06-30")
        part = run_backtest(data.truncated(until), start, d)
        for a, b in zip(part.days, full.days, strict=False):
            assert a.day == b.day
            assert a.signals == b.signals, a.day
            assert a.decision.summary() == b.decision.summary(), a.day


def _independent_s1_days(start: str, end: str, drawdown: float = 0.08) -> set[date]:
    """S1 from its definition, on the shipped daily TVL file read with plain pandas (not the
    project's importer or signal): for each day D with a TVL point, t = D 00:00 (the latest point
    known at D 23:59:59), fire when tvl_t / max(tvl over [t - 48h, t]) - 1 <= -8%. The window
    must hold >= 2 points, the first >= 24h before t (coverage), and the max must be positive."""
    raw = pd.read_csv(DATA / "defi_total_tvl_daily_defillama.csv.gz")
    tvl = pd.Series(
        raw["value"].astype(float).to_numpy(),
        index=pd.to_datetime(raw["as_of"], utc=True),
    ).sort_index()
    out: set[date] = set()
    for t, v in tvl.items():
        if not (pd.Timestamp(start, tz="UTC") <= t <= pd.Timestamp(end, tz="UTC")):
            continue
        w = tvl[(tvl.index >= t - pd.Timedelta(hours=48)) & (tvl.index <= t)]
        if len(w) < 2 or t - w.index[0] < pd.Timedelta(hours=24) or w.max() <= 0:
            continue
        if v <= w.max() * (1 - drawdown):
            out.add(t.date())
    return out


def test_s1_firing_days_match_an_independent_computation(full: BacktestResult) -> None:
    ours = {r.day for r in full.days if any(s.id == "S1" and s.firing for s in r.signals)}
    theirs = _independent_s1_days("2019-01-01", "2025-07-31")
    assert ours == theirs
    # the 48h (not 24h) window: Terra's 05-11 and the yen carry unwind's 08-05/06 fire
    assert {date(2022, 5, 11), date(2024, 8, 5), date(2024, 8, 6)} <= ours
    raw = pd.read_csv(DATA / "defi_total_tvl_daily_defillama.csv.gz", index_col="as_of")
    v = raw["value"].astype(float)
    want = v["2024-08-05"] / max(v["2024-08-03"], v["2024-08-04"], v["2024-08-05"]) - 1
    s1 = next(s for s in full.day("2024-08-05").signals if s.id == "S1")
    assert s1.value == pytest.approx(want, rel=1e-12) and s1.value == pytest.approx(
        -0.0927, abs=1e-4
    )


def test_named_episodes_default_thresholds(
    full: BacktestResult, replay: Replay, data: HistoricalData
) -> None:
    res = full
    assert res.policy.gate_mode == "independent"
    acted = set(res.acted_days())
    # March 2020, with the real release calendar: February's CPI (out 2020-03-11 08:30 ET) and
    # PPI turned S2 quiet, so 03-12 (S1 -13.3%, S7 confirming) has no S1+S2 trigger; only
    # 03-10 triggered, and the independent gate held it (nothing confirmed yet)
    rec = res.day("2020-03-12")
    assert any(s.id == "S1" and s.firing for s in rec.signals)
    assert not any(s.id == "S2" and s.firing for s in rec.signals)
    assert not rec.decision.trigger
    assert [d for d in res.trigger_days() if (d.year, d.month) == (2020, 3)] == [date(2020, 3, 10)]
    assert not [d for d in acted if (d.year, d.month) == (2020, 3)]
    # Terra: acts on 05-10 and 05-11 (S7 confirms); April's CPI (out 05-11) quietens S2 after
    assert sorted(d for d in acted if (d.year, d.month) == (2022, 5)) == [
        date(2022, 5, 10),
        date(2022, 5, 11),
    ]
    # Celsius/3AC: May's CPI came out 06-10 (the 15th fallback made it five days late), so the
    # rule acts 06-12..06-15 instead of 06-15 only
    assert sorted(d for d in acted if (d.year, d.month) == (2022, 6)) == [
        date(2022, 6, d) for d in (12, 13, 14, 15)
    ]
    # FTX: S1 fires but S2 does not hold; S3 and S4 fire on different days -> no trigger
    for d in ("2022-11-09", "2022-11-10"):
        rec = res.day(d)
        assert any(s.id == "S1" and s.firing for s in rec.signals)
        assert not rec.decision.trigger
    # Aug 2024: the 48h window fires on 08-05 and 08-06, S7 confirms
    assert {date(2024, 8, 5), date(2024, 8, 6)} <= acted
    # 2023: calm, never fired
    assert not [d for d in res.trigger_days() if d.year == 2023]
    # the independent gate blocks some triggers; the design gate never blocks
    assert len(res.acted_days()) < len(res.trigger_days())
    design = run_backtest(
        data, "2019-01-01", "2025-07-31", policy_cfg=PolicyConfig(gate_mode="design"), replay=replay
    )
    ungated = run_backtest(data, "2019-01-01", "2025-07-31", gate=False, replay=replay)
    assert design.acted_days() == ungated.acted_days() == design.trigger_days()


def test_open_layers_stay_within_b(full: BacktestResult) -> None:
    """B bounds all open layers: recomputed here from the proposals (a top-up open 30 days,
    a put until its maturity) on every day, and 2021 stays within B."""
    from agent.planner.options import preferred_maturities

    opened: list[tuple[int, int, Decimal]] = []
    for r in full.days:
        at = int(r.at.timestamp())
        open_before = sum((v for a, u, v in opened if a <= at < u), Decimal(0))
        assert r.decision.open_layers_usd == open_before, r.day
        for a in r.decision.actions:
            if isinstance(a, TopUpAction):
                opened.append((at, at + 30 * 86_400, a.spend_usd))
            else:
                assert isinstance(a, OptionAction)
                opened.append((at, preferred_maturities(at, a.dte_min, a.dte_max)[0], a.spend_usd))
        assert open_before + r.decision.proposed_spend_usd <= Decimal(1_000_000), r.day
    in_2021 = [r for r in full.days if r.day.year == 2021]
    peak = max(r.decision.open_layers_usd + r.decision.proposed_spend_usd for r in in_2021)
    assert peak <= Decimal(1_000_000)
    blocked = [r for r in in_2021 if r.decision.acted and not r.decision.actions]
    assert blocked, "2021 must hit the budget at least once"
    note = " ".join(blocked[0].decision.notes)
    assert "B used up" in note and "frees on" in note


def test_options_off_puts_the_whole_layer_into_protection(
    data: HistoricalData, replay: Replay
) -> None:
    res = run_backtest(
        data,
        "2019-01-01",
        "2025-07-31",
        options_enabled=False,
        replay=replay,
        position=BacktestPosition(debt_usd=Decimal(1_000_000), health_factor=Decimal("1.2")),
    )
    d = res.day("2022-06-14").decision
    assert d.options() == () and d.layer_usd == Decimal("250000.00")
    # needs 1e6 * (1.6 - 1.2) / 0.825 = 484,848.49 > layer: the whole layer is the top-up
    assert d.topups()[0].max_spend_usd == Decimal("250000.00")
    assert all(r.decision.options() == () for r in res.days)


def test_position_and_budget_are_configurable(data: HistoricalData) -> None:
    from agent.policy import PolicyConfig

    res = run_backtest(
        data,
        "2022-06-14",
        "2022-06-14",
        policy_cfg=PolicyConfig(budget_usd=Decimal(40_000)),
        position=BacktestPosition(debt_usd=Decimal(10_000), health_factor=Decimal("1.5")),
    )
    d = res.days[0].decision
    assert d.session_cap_usd == Decimal("10000.00")
    top = d.topups()[0]
    assert top.max_spend_usd == Decimal(
        "1212.13"
    )  # 10000 * (1.6 - 1.5) / 0.825 = 1212.12..., rounded up


def test_cli_backtest_and_beta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import build_parser

    out = tmp_path / "bt.json"
    args = build_parser().parse_args(
        [
            "backtest",
            "--data-dir",
            str(DATA),
            "--from",
            "2022-05-01",
            "--to",
            "2022-05-31",
            "--no-gate",
            "--json",
            str(out),
        ]
    )
    assert args.handler(args) == 0
    text = capsys.readouterr().out
    assert "2022-05-10" in text and "layer trigger on" in text
    payload = json.loads(out.read_text())
    rec = payload["days"][9]
    assert rec["date"] == "2022-05-10" and rec["layer_trigger"] and rec["signals"]["S1"]["firing"]
    for k in ("gate_passed", "priority", "proposed_spend_usd", "session_spend_usd"):
        assert k in rec
    assert payload["episodes"][0]["start"] == "2022-05-10"

    bout = tmp_path / "beta.json"
    args = build_parser().parse_args(
        [
            "beta",
            "--data-dir",
            str(DATA),
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-31",
            "--json",
            str(bout),
        ]
    )
    assert args.handler(args) == 0
    days = json.loads(bout.read_text())["days"]
    assert len(days) == 31 and days[0]["btc_beta30"] is not None and "eth_beta90" in days[0]

    bad = build_parser().parse_args(
        [
            "backtest",
            "--data-dir",
            str(tmp_path / "x"),
            "--from",
            "2022-05-01",
            "--to",
            "2022-05-02",
        ]
    )
    with pytest.raises(AgentError):
        bad.handler(bad)


def test_inputs_cover_the_design_series(data: HistoricalData) -> None:
    inp = build_inputs(data)
    assert set(inp.macro_prints) == {"cpi", "ppi"}
    assert set(inp.funding_apr) == {"binance:BTCUSDT", "bybit:BTCUSDT"}
    assert inp.spx_closes is not None and set(inp.beta_assets) == {"btc", "eth"}


def test_sweep_of_24_settings(full: BacktestResult, capsys: pytest.CaptureFixture[str]) -> None:
    """Loaded once, replayed fast: 24 settings over 2019-2025 in under 30 s (CPU time of this
    process, load included); the default setting's row equals the full day-by-day run."""
    from agent.backtest.sweep import parse_axis, run_sweep, sweep_table

    t0 = time.process_time()
    fresh = load_history(DATA)
    axes = [
        parse_axis("signals.s1.drawdown_fraction=0.06,0.08,0.10"),
        parse_axis("policy.gate_mode=independent,design"),
        parse_axis("signals.s3.direction=abs,negative"),
        parse_axis("policy.layer_hold_days=30,60"),
    ]
    rows = run_sweep(fresh, date(2019, 1, 1), date(2025, 7, 31), axes)
    elapsed = time.process_time() - t0
    assert len(rows) == 24 and elapsed < 30, f"sweep took {elapsed:.1f}s of CPU"
    default = next(
        r
        for r in rows
        if dict(r.setting)
        == {
            "signals.s1.drawdown_fraction": "0.08",
            "policy.gate_mode": "independent",
            "signals.s3.direction": "abs",
            "policy.layer_hold_days": "30",
        }
    )
    assert default.trigger_days == len(full.trigger_days())
    assert default.acted_days == len(full.acted_days())
    assert default.proposed_usd == sum(r.decision.proposed_spend_usd for r in full.days)
    assert default.episodes_acted == ("May2022", "Jun2022", "Aug2024")
    assert default.calm_acted_per_year == 0.0 and default.max_open_usd <= Decimal(1_000_000)
    # the design gate acts on every trigger day; negative funding drops the euphoric S3+S4 days
    by = {tuple(v for _, v in r.setting): r for r in rows}
    d = by[("0.08", "design", "abs", "30")]
    assert d.acted_days == d.trigger_days
    assert by[("0.08", "independent", "negative", "30")].trigger_days < default.trigger_days
    text = "\n".join(sweep_table(rows))
    assert "drawdown_fraction" in text and "Mar2020" in text
    with pytest.raises(ConfigError, match="unknown key"):
        run_sweep(fresh, date(2020, 1, 1), date(2020, 1, 2), [parse_axis("policy.nope=1")])
    with pytest.raises(ConfigError, match="direction"):
        run_sweep(
            fresh, date(2020, 1, 1), date(2020, 1, 2), [parse_axis("signals.s3.direction=up")]
        )
    with pytest.raises(ConfigError, match="KEY=V1"):
        parse_axis("policy.gate_mode")


def test_cli_sweep_and_no_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import build_parser

    out = tmp_path / "sweep.json"
    argv = ["backtest", "--from", "2022-05-01", "--to", "2022-06-30", "--json", str(out)]
    argv += [
        "--sweep",
        "policy.gate_mode=independent,design",
        "--sweep",
        "policy.layer_hold_days=30,90",
    ]
    args = build_parser().parse_args(argv)
    assert args.handler(args) == 0
    text = capsys.readouterr().out
    assert "gate_mode" in text and "layer_hold_days" in text and "4 setting(s)" in text
    rows = json.loads(out.read_text())["sweep"]
    assert rows[0]["setting"] == {
        "policy.gate_mode": "independent",
        "policy.layer_hold_days": "30",
    }
    assert all("May2022" in r["episodes_acted"] for r in rows)
    assert all(Decimal(r["max_open_layers_usd"]) <= Decimal(1_000_000) for r in rows)
    args = build_parser().parse_args(
        [
            "backtest",
            "--from",
            "2022-05-10",
            "--to",
            "2022-05-10",
            "--no-options",
            "--json",
            str(out),
        ]
    )
    assert args.handler(args) == 0
    (day,) = json.loads(out.read_text())["days"]
    assert [a["kind"] for a in day["actions"]] == ["collateral_top_up"]
    # all of the need, not 60% of the layer: 1e6 * (1.6 - 1.45) / 0.825 = 181,818.18.. -> up
    assert day["actions"][0]["max_spend_usd"] == "181818.19"
    bad = build_parser().parse_args(
        ["backtest", "--from", "2022-05-10", "--to", "2022-05-10", "--sweep", "policy.gate_mode=x"]
    )
    with pytest.raises(ConfigError, match="gate_mode=x"):
        bad.handler(bad)
