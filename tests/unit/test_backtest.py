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
from agent.backtest.engine import build_inputs
from agent.collectors.csv_import import SHIPPED_DIR
from agent.core.errors import AgentError, ConfigError
from agent.core.models import Observation

DATA = SHIPPED_DIR  # the history shipped with the project (gzipped)


@pytest.fixture(scope="module")
def data() -> HistoricalData:
    return load_history(DATA)


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
    assert elapsed < 30, f"2019-2025 replay took {elapsed:.1f}s"
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


def test_named_episodes_default_thresholds(data: HistoricalData) -> None:
    res = run_backtest(data, "2019-01-01", "2025-07-31", gate=True)
    acted = set(res.acted_days())
    # March 2020: S1 -13.3% on 03-12 with CPI/PPI rising -> acts, DeFi first (S8 rising)
    assert date(2020, 3, 12) in acted and res.day("2020-03-12").decision.priority == "defi_first"
    # Terra: acts on 05-10 (S1 -13.4%), 05-12, 05-13
    assert {date(2022, 5, 10), date(2022, 5, 12), date(2022, 5, 13)} <= acted
    # Celsius/3AC 06-14 and FTX 11-09/10: S1 fires but S2 does not hold (prints falling) -> no trigger
    for d in ("2022-06-14", "2022-11-09", "2022-11-10"):
        rec = res.day(d)
        assert any(s.id == "S1" and s.firing for s in rec.signals)
        assert not rec.decision.trigger
    # 2023: calm, never fired
    assert not [d for d in res.trigger_days() if d.year == 2023]
    # the design gate never blocks (both trigger paths span two families)
    ungated = run_backtest(data, "2019-01-01", "2025-07-31", gate=False)
    assert ungated.acted_days() == res.acted_days()


def test_position_and_budget_are_configurable(data: HistoricalData) -> None:
    from agent.policy import PolicyConfig

    res = run_backtest(
        data,
        "2020-03-12",
        "2020-03-12",
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
