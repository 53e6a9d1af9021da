"""The guarded outcome over an opening-HF sweep: per named window, how many starts were
liquidated without and with the guard, the lowest hourly HF, what the guard did and what it cost;
robustness rows and the automation-service baseline; as terminal text and Markdown.

Pure: the bars, signals, rates and proposals come in (:func:`guard_report`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from agent.backtest.guarded import Bar, GuardedPath, GuardModel, simulate_guarded
from agent.backtest.outcome import OutcomeConfig, PositionSpec, PriceBook, Proposal
from agent.backtest.tables import markdown_table, text_table
from agent.backtest.tables import usd as _usd
from agent.core.units import WAD


def parse_hf_range(text: str) -> tuple[float, ...]:
    """``1.45`` or ``LO:HI:STEP`` (inclusive): the opening health factors."""
    parts = text.split(":")
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--opening-hf: not a number or LO:HI:STEP: {text!r}") from None
    if len(nums) == 1:
        lo = hi = nums[0]
        step = 1.0
    elif len(nums) == 3:
        lo, hi, step = nums
    else:
        raise ValueError(f"--opening-hf: give one HF or LO:HI:STEP, got {text!r}")
    if lo <= 1 or hi < lo or step <= 0:
        raise ValueError(f"--opening-hf: need 1 < LO <= HI and STEP > 0, got {text!r}")
    n = int((hi - lo) / step + 1e-9) + 1
    if n > 10_000:
        raise ValueError(f"--opening-hf: {n} starts is too many (at most 10,000)")
    return tuple(round(lo + k * step, 10) for k in range(n))


@dataclass(frozen=True)
class Start:
    opening_hf: float
    without: GuardedPath
    with_guard: GuardedPath

    @property
    def net_usd(self) -> float:
        """Bonus lost without - bonus lost with - premiums - swap and gas costs + put payoffs."""
        w, g = self.without, self.with_guard
        return (
            w.bonus_lost_usd - g.bonus_lost_usd - g.premiums_usd - g.own_cost_usd + g.put_payoff_usd
        )


@dataclass(frozen=True)
class WindowRow:
    label: str
    start: date
    end: date
    starts: tuple[Start, ...]
    hourly_share: float  # fraction of bars that were hourly

    @property
    def n(self) -> int:
        return len(self.starts)

    def liquidated_without(self) -> int:
        return sum(bool(s.without.liquidations) for s in self.starts)

    def liquidated_with(self) -> int:
        return sum(bool(s.with_guard.liquidations) for s in self.starts)

    def lowest_with(self) -> float:
        return min(s.with_guard.lowest_health_factor for s in self.starts)

    def lowest_without(self) -> float:
        return min(s.without.lowest_health_factor for s in self.starts)

    def actions(self) -> int:
        return sum(len(s.with_guard.actions) for s in self.starts)

    def mean(self, f: Any) -> float:
        return sum(f(s) for s in self.starts) / self.n if self.n else 0.0

    def given_up(self) -> tuple[int, float, float]:
        """Starts never liquidated without the guard; their mean guard cost (swaps, gas) and
        mean collateral sold: what the guard gave up where it was not needed."""
        quiet = [s for s in self.starts if not s.without.liquidations]
        if not quiet:
            return 0, 0.0, 0.0
        cost = sum(s.with_guard.own_cost_usd for s in quiet) / len(quiet)
        sold = sum(s.with_guard.collateral_sold_usd for s in quiet) / len(quiet)
        return len(quiet), cost, sold

    def record(self) -> dict[str, Any]:
        q, cost, sold = self.given_up()
        return {
            "window": self.label,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "starts": self.n,
            "hourly_share": self.hourly_share,
            "liquidated_without": self.liquidated_without(),
            "liquidated_with": self.liquidated_with(),
            "lowest_hf_without": self.lowest_without(),
            "lowest_hf_with": self.lowest_with(),
            "guard_actions": self.actions(),
            "mean_collateral_sold_usd": self.mean(lambda s: s.with_guard.collateral_sold_usd),
            "mean_net_usd": self.mean(lambda s: s.net_usd),
            "not_needed_starts": q,
            "not_needed_mean_cost_usd": cost,
            "not_needed_mean_sold_usd": sold,
            "per_start": [
                {
                    "opening_hf": s.opening_hf,
                    "without": s.without.record(),
                    "with_guard": s.with_guard.record(),
                    "net_usd": s.net_usd,
                }
                for s in self.starts
            ],
        }


@dataclass(frozen=True)
class GuardReport:
    position: PositionSpec
    model: GuardModel
    opening_hfs: tuple[float, ...]
    windows: tuple[WindowRow, ...]
    robustness: tuple[tuple[str, tuple[WindowRow, ...]], ...]
    notes: tuple[str, ...]
    sources: tuple[str, ...] = ()  # the hourly price sources per window

    @property
    def execution(self) -> str:
        m = self.model
        return "autonomous" if m.execution == "autonomous" else f"signers, {m.delay_hours}h delay"

    def record(self) -> dict[str, Any]:
        return {
            "position": vars(self.position),
            "model": self.model.describe(),
            "opening_hfs": list(self.opening_hfs),
            "notes": list(self.notes),
            "sources": list(self.sources),
            "windows": [w.record() for w in self.windows],
            "robustness": [
                {"scenario": name, "windows": [w.record() for w in rows]}
                for name, rows in self.robustness
            ],
        }


@dataclass(frozen=True)
class Inputs:
    """What the guarded runs read, per position: bars per window, the stress signals firing
    per day, the borrow rate per day, the layer rule's proposals and the daily price book."""

    bars: Mapping[tuple[date, date], Sequence[Bar]]
    stress: Mapping[date, frozenset[str]]
    rates: Mapping[date, float]
    proposals: Sequence[Proposal]
    book: PriceBook
    rule_cfg: OutcomeConfig
    borrow_apr_fallback: float = 0.05


def _window(
    label: str,
    s: date,
    e: date,
    spec: PositionSpec,
    hfs: Sequence[float],
    model: GuardModel,
    inp: Inputs,
    lows_deeper: float,
) -> WindowRow:
    bars = inp.bars[(s, e)]
    props = [p for p in inp.proposals if s <= p.day <= e]
    common: dict[str, Any] = {
        "rates": inp.rates,
        "book": inp.book,
        "rule_cfg": inp.rule_cfg,
        "lows_deeper": lows_deeper,
        "borrow_apr_fallback": inp.borrow_apr_fallback,
    }
    starts = []
    for hf in hfs:
        without = simulate_guarded(spec, bars, None, opening_hf=hf, **common)
        with_g = simulate_guarded(
            spec,
            bars,
            model,
            opening_hf=hf,
            stress=inp.stress,
            proposals=props,
            **common,
        )
        starts.append(Start(hf, without, with_g))
    hourly = sum(b.hourly for b in bars)
    return WindowRow(label, s, e, tuple(starts), hourly / len(bars) if bars else 0.0)


ROBUSTNESS: tuple[tuple[str, dict[str, Any], float], ...] = (
    ("lows 5% deeper", {}, 0.05),
    ("gap 300 bps", {"gap_bps": 300}, 0.0),
    ("signers, 1-day delay", {"execution": "signers", "delay_hours": 24}, 0.0),
    ("fixed trigger (stress-aware trigger off)", {"stress_aware": False}, 0.0),
)


def guard_report(
    spec: PositionSpec,
    windows: Sequence[tuple[str, date, date]],
    hfs: Sequence[float],
    model: GuardModel,
    inp: Inputs,
    *,
    robustness: bool = True,
    notes: Sequence[str] = (),
    sources: Sequence[str] = (),
) -> GuardReport:
    rows = tuple(_window(lbl, s, e, spec, hfs, model, inp, 0.0) for lbl, s, e in windows)
    rob: list[tuple[str, tuple[WindowRow, ...]]] = []
    if robustness:
        for name, over, deeper in ROBUSTNESS:
            m = replace(model, **over)
            rob.append(
                (
                    name,
                    tuple(_window(lbl, s, e, spec, hfs, m, inp, deeper) for lbl, s, e in windows),
                )
            )
    return GuardReport(spec, model, tuple(hfs), rows, tuple(rob), tuple(notes), tuple(sources))


# -- text -------------------------------------------------------------------------------------

HEAD = [
    "starts",
    "liq. w/o",
    "liq. with",
    "lowest HF w/o",
    "lowest HF with",
    "guard actions",
    "coll. sold $/start",
    "net $/start",
    "not needed: starts",
    "cost $/start",
    "sold $/start",
]


def _cells(rows: Sequence[WindowRow]) -> list[str]:
    n = sum(r.n for r in rows)
    quiet = [s for r in rows for s in r.starts if not s.without.liquidations]
    allst = [s for r in rows for s in r.starts]
    return [
        str(n),
        str(sum(r.liquidated_without() for r in rows)),
        str(sum(r.liquidated_with() for r in rows)),
        f"{min(r.lowest_without() for r in rows):.3f}",
        f"{min(r.lowest_with() for r in rows):.3f}",
        str(sum(r.actions() for r in rows)),
        _usd(sum(s.with_guard.collateral_sold_usd for s in allst) / n),
        _usd(sum(s.net_usd for s in allst) / n),
        str(len(quiet)),
        _usd(sum(s.with_guard.own_cost_usd for s in quiet) / len(quiet)) if quiet else "-",
        _usd(sum(s.with_guard.collateral_sold_usd for s in quiet) / len(quiet)) if quiet else "-",
    ]


def _rows(rep: GuardReport) -> list[tuple[str, list[str]]]:
    out = [(f"{w.label} ({w.start:%m-%d}..{w.end:%m-%d})", _cells([w])) for w in rep.windows]
    if len(rep.windows) > 1:
        out.append(("named windows, total", _cells(rep.windows)))
    for name, rows in rep.robustness:
        out.append((f"robustness: {name} (total)", _cells(rows)))
    return out


def _baseline(rep: GuardReport) -> str:
    m = rep.model
    starts = [s for w in rep.windows for s in w.starts]
    own = sum(s.with_guard.own_cost_usd for s in starts) / len(starts)
    fee = sum(
        s.with_guard.service_fee_usd(m.service_tx_bps, m.service_swap_bps) for s in starts
    ) / len(starts)
    return (
        f"baseline, the same guard actions: own cost ${own:,.0f}/start (gas ${m.gas_usd:g}/tx + "
        f"{m.swap_cost_bps} bps swap cost); an automation service's fee schedule "
        f"({m.service_tx_bps / 100:g}% of each automated transaction + {m.service_swap_bps / 100:g}% "
        f"of each swap) adds ${fee:,.0f}/start on top (${own + fee:,.0f}/start in all)"
    )


def header_lines(rep: GuardReport) -> list[str]:
    hfs = rep.opening_hfs
    span = (
        f"{hfs[0]:g}"
        if len(hfs) == 1
        else f"{hfs[0]:g}..{hfs[-1]:g} step {round(hfs[1] - hfs[0], 10):g} ({len(hfs)} starts)"
    )
    g = rep.model.guard
    return [
        f"Guarded outcome, position '{rep.position.name}': {rep.position.describe().split(', HF')[0]}; "
        f"opening HF {span}, opened at each window's first hour",
        rep.model.describe(),
        f"critical HF {g.critical_hf_wad / WAD:g}, re-armed above trigger + {g.rearm_margin_wad / WAD:g}, "
        f"pending re-proposal a further {g.step_wad / WAD:g} below",
        *(f"note: {n}" for n in (*rep.sources, *rep.notes)),
    ]


def guard_lines(rep: GuardReport) -> list[str]:
    return [*header_lines(rep), *text_table(HEAD, _rows(rep)), _baseline(rep)]


def guard_markdown(reports: Sequence[GuardReport]) -> str:
    """One execution mode: a table per position, its hourly sources, then the settings."""
    parts: list[str] = []
    if reports:
        parts += [f"##### Execution: {reports[0].execution}", ""]
    for rep in reports:
        parts.append(f"**{rep.position.name}**: " + header_lines(rep)[0].split(": ", 1)[1] + ".")
        parts.append("")
        parts += markdown_table(HEAD, _rows(rep))
        parts.append("")
        parts.append(_baseline(rep) + ".")
        if rep.sources:
            parts.append("Hourly prices: " + "; ".join(rep.sources) + ".")
        parts.append("")
    if reports:
        parts.append("Settings: " + reports[0].model.describe() + ".")
        parts += [f"Note: {n}." for n in reports[0].notes]
    return "\n".join(parts) + "\n"
