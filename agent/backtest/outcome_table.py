"""The outcome as text: a terminal table and a Markdown table (the README's)."""

from __future__ import annotations

from collections.abc import Sequence

from agent.backtest.outcome import OutcomeReport, OutcomeRun, PathResult
from agent.backtest.tables import markdown_table, text_table
from agent.backtest.tables import usd as _usd


def _hf(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _cells(run: OutcomeRun) -> list[str]:
    w, a = run.without, run.with_agent
    return [
        str(len(w.liquidations)),
        _usd(w.collateral_lost_usd),
        _usd(w.bonus_lost_usd),
        _hf(w.lowest_health_factor),
        str(len(a.liquidations)),
        _usd(a.collateral_lost_usd),
        _usd(a.bonus_lost_usd),
        _hf(a.lowest_health_factor),
        _usd(a.capital_committed_usd),
        _usd(a.premiums_usd),
        _usd(a.put_payoff_usd),
    ]


def _sum_cells(runs: Sequence[OutcomeRun]) -> list[str]:
    def tot(paths: Sequence[PathResult]) -> list[str]:
        lows = [p.lowest_health_factor for p in paths if p.lowest_health_factor is not None]
        return [
            str(sum(len(p.liquidations) for p in paths)),
            _usd(sum(p.collateral_lost_usd for p in paths)),
            _usd(sum(p.bonus_lost_usd for p in paths)),
            _hf(min(lows) if lows else None),
        ]

    a = [r.with_agent for r in runs]
    return (
        tot([r.without for r in runs])
        + tot(a)
        + [
            _usd(sum(p.capital_committed_usd for p in a)),
            _usd(sum(p.premiums_usd for p in a)),
            _usd(sum(p.put_payoff_usd for p in a)),
        ]
    )


HEAD = [
    "liq",
    "coll. lost $",
    "bonus lost $",
    "min HF",
    "liq",
    "coll. lost $",
    "bonus lost $",
    "min HF",
    "committed $",
    "premiums $ (est.)",
    "put payoff $",
]


def _rows(rep: OutcomeReport) -> list[tuple[str, list[str]]]:
    rows = [(f"{r.label} ({r.start:%m-%d}..{r.end:%m-%d})", _cells(r)) for r in rep.episodes]
    if rep.episodes:
        rows.append(("named episodes, total", _sum_cells(rep.episodes)))
    w = rep.whole
    rows.append((f"whole range {w.start}..{w.end}", _cells(w)))
    return rows


def header_lines(rep: OutcomeReport) -> list[str]:
    c = rep.config
    lines = [
        f"Outcome, position '{rep.position.name}': {rep.position.describe()}",
        f"each named episode opens a fresh position on its first day; the whole range opens it on {rep.whole.start}. "
        f"Proposals executed {c.execution_delay_days} day(s) later at the close; liquidations: {c.liquidation_model}"
        + (
            f" ({c.oracle_step_bps / 100:g}% oracle step)"
            if c.liquidation_model == "oracle-step"
            else ""
        )
        + f"; premiums are an ESTIMATE (Black-Scholes, realised {c.vol_window_days}-day vol); put DTE: {c.put_dte} of the horizon",
    ]
    return lines + [f"note: {n}" for n in rep.notes]


def _banner(w0: int, widths: list[int]) -> str:
    left = sum(widths[:4]) + 6
    right = sum(widths[4:]) + 2 * (len(widths) - 5)
    return (
        " " * w0
        + "  "
        + "without the agent".center(left, "-")
        + "  "
        + "with the agent".center(right, "-")
    )


def outcome_lines(rep: OutcomeReport) -> list[str]:
    return header_lines(rep) + text_table(HEAD, _rows(rep), _banner)


def outcome_markdown(reports: Sequence[OutcomeReport]) -> str:
    """One Markdown table per position, with the settings above each."""
    parts: list[str] = []
    for rep in reports:
        parts.append(f"**{rep.position.name}**: {rep.position.describe()}.\n")
        head = [f"{'w/o' if i < 4 else 'with'}: {h}" for i, h in enumerate(HEAD)]
        parts += markdown_table(head, _rows(rep))
        parts.append("")
    c = reports[0].config if reports else None
    if c is not None:
        parts.append(
            f"Settings: execution delay {c.execution_delay_days} day(s), liquidations {c.liquidation_model}"
            + (
                f" ({c.oracle_step_bps / 100:g}% oracle step)"
                if c.liquidation_model == "oracle-step"
                else ""
            )
            + f", swap cost {c.swap_cost_bps} bps, put DTE {c.put_dte} of each horizon; "
            f"premiums are estimates (Black-Scholes, r = 0, realised {c.vol_window_days}-day volatility)."
        )
    return "\n".join(parts) + "\n"
