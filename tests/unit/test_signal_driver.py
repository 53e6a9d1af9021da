"""One signal driver: the daemon (``agent.pipeline.evaluate``: inputs read from the store) and the
backtest (``SignalInputs`` from history) both run ``agent.signals.evaluate_signals``; missing
S&P 500 data reads the same on both paths (each asset's beta is insufficient data)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from agent.config import Settings
from agent.core.market import MarketLayout
from agent.core.models import Observation
from agent.pipeline.evaluate import gather_signals, signal_inputs
from agent.signals import SignalInputs, evaluate_signals
from agent.store.sqlite import Store

DAY = 86_400
AT = 1_720_000_000 // DAY * DAY
LAYOUT = MarketLayout("devnet", "aave-v3", "0x" + "1" * 40, "0x" + "1" * 40, "0x" + "1" * 40,
                      (), (), {}, {}, {})  # fmt: skip


def closes(n: int = 120) -> list[Observation]:
    out = []
    for i in range(n):
        ts = AT - (n - i) * DAY
        out += [
            Observation("close.btc", ts, 60_000.0 + 10 * i, "usd", "test"),
            Observation("close.eth", ts, 3_000.0 + i, "usd", "test"),
        ]
    return out


def s8(results: list) -> list[tuple[str, str, str]]:  # type: ignore[type-arg]
    return [(r.subject, r.status, r.detail) for r in results if r.id == "S8"]


def test_missing_spx_reads_the_same_on_both_paths(tmp_path: Path) -> None:
    settings = Settings()
    with Store(tmp_path / "s.sqlite") as store:
        store.upsert(closes())
        inputs = signal_inputs(store, settings, LAYOUT, AT)
        daemon = gather_signals(store, settings, LAYOUT, AT)
    assert inputs.spx_closes is None
    at = pd.Timestamp(AT, unit="s", tz="UTC")
    backtest = evaluate_signals(
        SignalInputs(beta_assets=inputs.beta_assets, daily_closes=inputs.daily_closes),
        at,
        settings.signals,
    )
    assert s8(daemon) == s8(backtest)
    assert [(subject, status) for subject, status, _ in s8(daemon)] == [
        ("eth", "insufficient_data"),
        ("btc", "insufficient_data"),
    ]
    empty = SignalInputs(
        beta_assets=inputs.beta_assets,
        spx_closes=pd.Series(dtype=float, index=pd.DatetimeIndex([], tz="UTC")),
    )
    assert s8(evaluate_signals(empty, at, settings.signals)) == s8(backtest)


def test_the_daemon_evaluates_through_the_shared_driver(tmp_path: Path) -> None:
    settings = Settings()
    with Store(tmp_path / "s.sqlite") as store:
        store.upsert(closes())
        store.upsert([Observation("close.spx", o.ts, 5_000.0 + o.value / 1e3, "usd", "test")
                      for o in closes() if o.key == "close.btc"])  # fmt: skip
        inputs = signal_inputs(store, settings, LAYOUT, AT)
        daemon = gather_signals(store, settings, LAYOUT, AT)
    assert inputs.spx_closes is not None and len(inputs.spx_closes) == 120
    direct = evaluate_signals(inputs, pd.Timestamp(AT, unit="s", tz="UTC"), settings.signals)
    assert [r.as_dict() for r in daemon] == [r.as_dict() for r in direct]
