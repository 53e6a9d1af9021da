"""One PNG: TVL, its 48h drawdown (S1), the macro state (S2), beta30/beta90 (S8) and trigger days."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from agent.backtest.engine import BacktestResult
from agent.backtest.outcome import OutcomeReport
from agent.core.errors import ConfigError


def _series(result: BacktestResult, sid: str, subject: str, metric: str | None = None) -> pd.Series:
    idx, vals = [], []
    for r in result.days:
        for s in r.signals:
            if s.id == sid and s.subject == subject:
                v = s.value if metric is None else s.metric(metric)
                idx.append(pd.Timestamp(r.day))
                vals.append(float("nan") if v is None else v)
    return pd.Series(vals, index=pd.DatetimeIndex(idx), dtype="float64")


def write_chart(
    result: BacktestResult, tvl: pd.Series, path: str | Path, ungated: BacktestResult | None = None
) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError(
            f"--chart needs matplotlib ({e}); install it with `pip install matplotlib`"
        ) from None

    days = pd.DatetimeIndex([pd.Timestamp(r.day) for r in result.days])
    lo, hi = days[0], days[-1]
    t = tvl[
        (tvl.index >= lo.tz_localize("UTC"))
        & (tvl.index <= hi.tz_localize("UTC") + pd.Timedelta(days=1))
    ]
    t.index = pd.DatetimeIndex(t.index).tz_localize(None)
    acted = [pd.Timestamp(d) for d in result.acted_days()]
    trig = [pd.Timestamp(d) for d in (ungated or result).trigger_days()]

    fig, axes = plt.subplots(
        4, 1, figsize=(14, 12), sharex=True, gridspec_kw={"height_ratios": [3, 2, 2, 2]}
    )
    ax = axes[0]
    ax.plot(
        t.index, t.to_numpy() / 1e9, color="tab:blue", lw=1, label="total DeFi TVL ($bn, DefiLlama)"
    )
    ax.set_yscale("log")
    ymin, ymax = ax.get_ylim()
    for i, d in enumerate(trig):
        ax.axvline(
            d,
            color="tab:orange",
            alpha=0.35,
            lw=1,
            label="layer trigger (ungated)" if i == 0 else None,
        )
    for i, d in enumerate(acted):
        ax.axvline(
            d,
            color="tab:red",
            alpha=0.8,
            lw=1.2,
            ls="--",
            label=f"acted ({'gated' if result.gate else 'ungated'}, {result.policy.gate_mode})"
            if i == 0
            else None,
        )
    ax.set_ylabel("TVL $bn (log)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(
        f"DeFi layer rule backtest {result.start} .. {result.end} (evaluated at the end of each UTC day)"
    )

    ax = axes[1]
    dd = _series(result, "S1", "defi-total")
    ax.plot(dd.index, dd.to_numpy() * 100, color="tab:blue", lw=0.8, label="S1: TVL vs 48h max (%)")
    ax.axhline(-result_threshold(result) * 100, color="tab:red", lw=1, ls=":", label="S1 threshold")
    ax.set_ylim(max(-40.0, float(dd.min() * 100) - 2) if len(dd.dropna()) else -40.0, 5)
    ax.set_ylabel("drawdown %")
    ax.legend(loc="lower left", fontsize=8)

    ax = axes[2]
    for subj, color in (("cpi", "tab:purple"), ("ppi", "tab:brown")):
        y = _series(result, "S2", subj, "yoy_latest")
        ax.plot(
            y.index,
            y.to_numpy() * 100,
            color=color,
            lw=1,
            label=f"{subj.upper()} YoY of latest released print (%)",
        )
    s2 = pd.Series(
        [any(s.id == "S2" and s.firing for s in r.signals) for r in result.days], index=days
    )
    ymin, ymax = ax.get_ylim()
    ax.fill_between(
        s2.index,
        ymin,
        ymax,
        where=s2.to_numpy(),
        color="tab:green",
        alpha=0.15,
        step="mid",
        label="S2 rising",
    )
    ax.set_ylim(ymin, ymax)
    ax.set_ylabel("YoY %")
    ax.legend(loc="upper left", fontsize=8)

    ax = axes[3]
    for subj, color in (("btc", "tab:orange"), ("eth", "tab:gray")):
        b30 = _series(result, "S8", subj, "beta_short")
        b90 = _series(result, "S8", subj, "beta_long")
        ax.plot(b30.index, b30.to_numpy(), color=color, lw=1, label=f"{subj.upper()} beta30")
        ax.plot(
            b90.index, b90.to_numpy(), color=color, lw=1, ls="--", label=f"{subj.upper()} beta90"
        )
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("beta vs S&P 500")
    ax.legend(loc="upper left", fontsize=8, ncol=2)

    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def result_threshold(result: BacktestResult) -> float:
    for r in result.days:
        for s in r.signals:
            if s.id == "S1" and s.threshold is not None:
                return -s.threshold
    return 0.08


def write_outcome_chart(report: OutcomeReport, path: str | Path) -> Path:
    """The health factor without and with the agent (at the day's low), the proposal days and
    the liquidations: the whole range on top, then one panel per named episode."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError(f"--chart needs matplotlib ({e})") from None
    runs = (report.whole, *report.episodes)
    rows = 1 + (len(report.episodes) + 1) // 2
    fig = plt.figure(figsize=(14, 3.2 * rows))
    grid = fig.add_gridspec(rows, 2)
    for i, run in enumerate(runs):
        # Any, as plt.subplots gives above: the stubs type dates on the x axis as floats
        ax: Any = fig.add_subplot(grid[0, :] if i == 0 else grid[1 + (i - 1) // 2, (i - 1) % 2])
        # "with" under "without" (dashed), so both show where the paths coincide
        for res, color, ls, label in (
            (run.with_agent, "tab:green", "-", "with the agent"),
            (run.without, "tab:red", "--", "without the agent"),
        ):
            x = pd.DatetimeIndex([pd.Timestamp(d.day) for d in res.days])
            y = [min(d.health_factor_low, 10.0) for d in res.days]
            ax.plot(x, y, color=color, lw=1.2, ls=ls, label=f"HF at the day's low, {label}")
            liq = pd.DatetimeIndex([pd.Timestamp(q.day) for q in res.liquidations])
            ax.scatter(
                liq,
                [q.health_factor_before for q in res.liquidations],
                color=color,
                marker="x",
                s=30,
                zorder=3,
                label=f"liquidation, {label}" if len(liq) else None,
            )
        for j, d in enumerate(run.proposal_days):
            ax.axvline(
                pd.Timestamp(d),
                color="tab:blue",
                alpha=0.5,
                lw=1,
                ls="--",
                label="proposal day" if j == 0 else None,
            )
        ax.axhline(1.0, color="black", lw=0.7, ls=":")
        if i == 0:
            ax.set_yscale("log")
        ax.set_title(run.label, fontsize=9)
        if i > 0:
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.set_ylabel("health factor" + (" (log, cut at 10)" if i == 0 else ""))
        if i == 0:
            ax.legend(loc="upper left", fontsize=7, ncol=2)
    fig.suptitle(
        f"Position '{report.position.name}': {report.position.describe()}; "
        f"execution delay {report.config.execution_delay_days} day(s)",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
