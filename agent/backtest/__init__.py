"""Backtest: replay the live signal and policy code day by day over real history."""

from agent.backtest.data import HistoricalData, default_data_dir, load_history
from agent.backtest.engine import (
    BacktestPosition,
    BacktestResult,
    DayRecord,
    Episode,
    build_inputs,
    run_backtest,
)

__all__ = [
    "BacktestPosition",
    "BacktestResult",
    "DayRecord",
    "Episode",
    "HistoricalData",
    "build_inputs",
    "default_data_dir",
    "load_history",
    "run_backtest",
]
