"""``hedge-agent backtest`` and ``hedge-agent beta``.

    hedge-agent backtest [--data-dir DIR] --from DATE --to DATE [--gate/--no-gate]
                         [--gate-mode independent|design] [--prices yahoo|crosscheck]
                         [--budget-usd B] [--debt-usd D] [--health-factor H] [--lt-bps LT]
                         [--no-options] [--sweep KEY=V1,V2,... ...] [--json PATH] [--chart PATH]
                         [--outcome [--position eth|eth-risky|btc ...] [--execution-delay-days N]
                          [--swap-cost-bps S] [--liquidation-model oracle-step|day-low]
                          [--outcome-markdown PATH] ...]
    hedge-agent beta [--data-dir DIR] [--from DATE] [--to DATE] [--prices ...] --json PATH

Handlers return an exit code; bad input raises ``ConfigError`` (one line on stderr, exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pandas as pd

from agent.backtest.data import HistoricalData, default_data_dir, load_history
from agent.backtest.engine import (
    BacktestPosition,
    BacktestResult,
    Replay,
    build_inputs,
    run_backtest,
)
from agent.backtest.guard_table import GuardReport
from agent.backtest.outcome import (
    PRESETS,
    OutcomeConfig,
    OutcomeReport,
    PositionSpec,
    PriceBook,
    outcome_report,
    price_book,
    proposals_from_backtest,
)
from agent.backtest.spx import spx_summary
from agent.backtest.sweep import parse_axis, run_sweep, sweep_table
from agent.core.errors import ConfigError
from agent.core.units import WAD
from agent.policy import PolicyConfig
from agent.signals import SignalInputs, SignalsConfig, s8_beta_one
from agent.signals.base import to_utc


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _decimal(text: str) -> Decimal:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not d.is_finite() or d <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return d


def _write_json(path: str, payload: Any) -> None:
    _write_text(path, json.dumps(payload, indent=1, default=str) + "\n")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def summary_table(res: BacktestResult) -> list[str]:
    head = f"{'start':<10}  {'end':<10}  {'48h DD':>7}  {'pk-tr':>7}  {'signals fired':<22}  {'trig':>4}  {'acted':>5}  proposed"
    lines = [head, "-" * len(head)]
    for e in res.episodes:
        first = e.proposals[0] if e.proposals else "-"
        more = (
            f" (+{len(e.proposals) - 1} more day(s), total ${e.proposed_spend_usd:,})"
            if len(e.proposals) > 1
            else ""
        )
        lines.append(
            f"{e.start.isoformat():<10}  {e.end.isoformat():<10}  {_pct(e.max_drawdown_48h):>7}  {_pct(e.tvl_peak_to_trough):>7}  "
            f"{','.join(e.signals_fired):<22}  {len(e.trigger_days):>4}  {len(e.acted_days):>5}  {first}{more}"
        )
    n = len(res.days)
    lines.append("")
    lines.append(
        f"{n} days {res.start}..{res.end}; layer trigger on {len(res.trigger_days())} day(s); "
        f"acted ({'gate on, ' + res.policy.gate_mode if res.gate else 'gate off'}) on {len(res.acted_days())} day(s)"
    )
    by_year: dict[int, list[int]] = {}
    for r in res.days:
        y = by_year.setdefault(r.day.year, [0, 0])
        y[0] += int(r.decision.trigger)
        y[1] += int(r.decision.acted)
    total = sum((r.decision.proposed_spend_usd for r in res.days), Decimal(0))
    peak = max(
        (r.decision.open_layers_usd + r.decision.proposed_spend_usd for r in res.days),
        default=Decimal(0),
    )
    lines.append(
        f"proposed ${total:,} in total; open layers peaked at ${peak:,} "
        f"(B ${res.policy.budget_usd:,}, protection held {res.policy.layer_hold_days} days)"
    )
    lines.append(
        "per year (trigger/acted days): "
        + ", ".join(f"{y} {t}/{a}" for y, (t, a) in sorted(by_year.items()))
    )
    return lines


def _cmd_sweep(
    args: argparse.Namespace, data: HistoricalData, policy: PolicyConfig, position: BacktestPosition
) -> int:
    axes = [parse_axis(t) for t in args.sweep]
    t0, c0 = time.perf_counter(), time.process_time()
    rows = run_sweep(
        data,
        args.from_,
        args.to,
        axes,
        policy_cfg=policy.model_copy(update={"consensus_gate": args.gate}),
        position=position,
        options_enabled=args.options,
    )
    for line in sweep_table(rows):
        print(line)
    print(
        f"{len(rows)} setting(s) over {args.from_}..{args.to} in "
        f"{time.perf_counter() - t0:.1f}s ({time.process_time() - c0:.1f}s CPU)"
    )
    if args.json:
        _write_json(args.json, {"sweep": [r.record() for r in rows]})
        print(f"wrote {args.json}")
    return 0


def _cmd_backtest(args: argparse.Namespace) -> int:
    if args.to < args.from_:
        raise ConfigError(f"--to {args.to} is before --from {args.from_}")
    data = load_history(args.data_dir, prices=args.prices)
    specs = _position_specs(args)
    policy = _policy_for(_base_policy(args), specs[0])
    position = _engine_position(specs[0])
    if args.sweep:
        return _cmd_sweep(args, data, policy, position)
    inputs = build_inputs(data)
    replay = Replay(inputs, args.from_, args.to)
    res = run_backtest(
        data,
        args.from_,
        args.to,
        gate=args.gate,
        signals_cfg=SignalsConfig(),
        policy_cfg=policy,
        position=position,
        options_enabled=args.options,
        replay=replay,
    )
    for line in summary_table(res):
        print(line)
    for flag in data.release_flags(args.from_, args.to):
        print(f"flag: {flag}")
    print()
    for line in spx_summary(res.days):  # the SPX layer rule (issue 15)
        print(line)
    want = args.outcome or bool(args.outcome_markdown) or bool(args.guard_markdown)
    reports = _outcomes(args, data, inputs, specs, res) if want else []
    if args.json:
        payload = res.to_json()
        if reports:
            payload["outcomes"] = [r.record() for r in reports]
        if getattr(args, "guard_records", None):
            payload["guarded_outcomes"] = args.guard_records
        _write_json(args.json, payload)
        print(f"wrote {args.json}")
    if args.chart:
        from agent.backtest.chart import write_chart

        ungated = (
            res
            if not args.gate
            else run_backtest(
                data,
                args.from_,
                args.to,
                gate=False,
                policy_cfg=policy,
                position=position,
                options_enabled=args.options,
                replay=replay,
            )
        )
        out = write_chart(res, inputs.tvl_usd["defi-total"], args.chart, ungated=ungated)
        print(f"wrote {out}")
        if reports:
            from agent.backtest.chart import write_outcome_chart

            for rep in reports:
                out = Path(args.chart)
                out = out.with_name(f"{out.stem}-outcome-{rep.position.name}{out.suffix or '.png'}")
                print(f"wrote {write_outcome_chart(rep, out)}")
    if args.outcome_markdown:
        from agent.backtest.outcome_table import outcome_markdown

        _write_text(args.outcome_markdown, outcome_markdown(reports))
        print(f"wrote {args.outcome_markdown}")
    return 0


# -- --outcome: the hypothetical position followed without and with the agent -----------------


def _position_specs(args: argparse.Namespace) -> list[PositionSpec]:
    """The presets asked for, with the explicit overrides applied to each."""
    specs = []
    for name in args.position or ["eth"]:
        spec = PRESETS[name]
        over: dict[str, Any] = {}
        if args.debt_usd is not None:
            over["debt_usd"] = float(args.debt_usd)
        if args.health_factor is not None:
            over["health_factor"] = float(args.health_factor)
        if args.lt_bps is not None:
            over["liquidation_threshold_bps"] = args.lt_bps
        if args.liquidation_bonus_bps is not None:
            over["liquidation_bonus_bps"] = args.liquidation_bonus_bps
        specs.append(replace(spec, **over))
    return specs


def _engine_position(spec: PositionSpec) -> BacktestPosition:
    """The static position the rule sizes its proposals on: the spec's opening state."""
    return BacktestPosition(
        debt_usd=Decimal(str(spec.debt_usd)),
        health_factor=Decimal(str(spec.health_factor)),
        liquidation_threshold_bps=spec.liquidation_threshold_bps,
    )


def _base_policy(args: argparse.Namespace) -> PolicyConfig:
    """B and, when given, the gate mode (otherwise the policy's default, independent)."""
    policy = PolicyConfig(budget_usd=args.budget_usd)
    if args.gate_mode is not None:
        policy = policy.model_copy(update={"gate_mode": args.gate_mode})
    return policy


def _policy_for(policy: PolicyConfig, spec: PositionSpec) -> PolicyConfig:
    """Puts on the position's own collateral (the rule's default underlying is WETH)."""
    token = {"eth": "WETH", "btc": "WBTC"}.get(spec.collateral, policy.option_underlying)
    return policy.model_copy(update={"option_underlying": token})


def _outcomes(
    args: argparse.Namespace,
    data: HistoricalData,
    inputs: SignalInputs,
    specs: list[PositionSpec],
    first: BacktestResult,
) -> list[OutcomeReport]:
    from agent.backtest.outcome_table import outcome_lines

    try:
        cfg = OutcomeConfig(
            execution_delay_days=args.execution_delay_days,
            swap_cost_bps=args.swap_cost_bps,
            vol_window_days=args.vol_window_days,
            put_dte=args.put_dte,
            liquidation_model=args.liquidation_model,
            oracle_step_bps=args.oracle_step_bps,
        )
    except ValueError as e:
        raise ConfigError(f"--outcome: {e}") from None
    assets = {a for s in specs for a in (s.collateral, s.debt) if a != "usdc"}
    missing = sorted(a for a in assets if not data.has(f"close.{a}"))
    if missing:
        raise ConfigError(f"--outcome: no close.{missing[0]} in {args.data_dir}")
    book = price_book(
        {a: data.series(f"close.{a}") for a in assets},
        {a: data.series(f"low.{a}") for a in assets if data.has(f"low.{a}")},
    )
    reports = []
    guard_reports: list[list[GuardReport]] = []
    for i, spec in enumerate(specs):
        res = first
        if i > 0:  # the rule sizes on this position and buys puts on its collateral
            res = run_backtest(
                data,
                args.from_,
                args.to,
                gate=args.gate,
                policy_cfg=_policy_for(_base_policy(args), spec),
                position=_engine_position(spec),
                inputs=inputs,
                options_enabled=args.options,
            )
        try:
            rep = outcome_report(spec, book, args.from_, args.to, proposals_from_backtest(res), cfg)
        except ValueError as e:
            raise ConfigError(f"--outcome: {e}") from None
        print()
        for line in outcome_lines(rep):
            print(line)
        reports.append(rep)
        if args.guard:
            guard_reports.append(_guard_reports(args, data, spec, book, res, cfg))
    if args.guard_markdown:
        from agent.backtest.guard_table import guard_markdown

        parts = []
        for mode_i, _ in enumerate(args.execution or ["autonomous"]):
            parts.append(guard_markdown([reps[mode_i] for reps in guard_reports]))
        _write_text(args.guard_markdown, "\n".join(parts))
        print(f"wrote {args.guard_markdown}")
    if args.json and guard_reports:
        args.guard_records = [r.record() for reps in guard_reports for r in reps]
    return reports


def parse_execution(text: str) -> tuple[str, int]:
    """``autonomous``, ``signers`` (one day, today's behaviour) or ``signers:<N>h|<N>d``."""
    if text == "autonomous":
        return "autonomous", 0
    if text == "signers":
        return "signers", 24
    kind, _, delay = text.partition(":")
    if kind == "signers" and delay[:-1].isdigit() and delay[-1:] in ("h", "d"):
        return "signers", int(delay[:-1]) * (24 if delay.endswith("d") else 1)
    raise ConfigError(
        f"--execution: {text!r} is not autonomous, signers or signers:<N>h / signers:<N>d"
    )


def _daily_rates(series: pd.Series) -> dict[date, float]:
    """Stablecoin borrow rate per UTC day, carried over gaps of up to 7 days."""
    out: dict[date, float] = {}
    last: tuple[date, float] | None = None
    if series.empty:
        return out
    days = pd.date_range(series.index[0].normalize(), series.index[-1].normalize(), freq="D")
    idx = pd.DatetimeIndex(series.index)
    by_day = {ts.date(): float(v) for ts, v in zip(idx, series.to_numpy(), strict=True)}
    for d in days:
        day = d.date()
        if day in by_day:
            last = (day, by_day[day])
        if last is not None and (day - last[0]).days <= 7:
            out[day] = last[1]
    return out


def _guard_reports(
    args: argparse.Namespace,
    data: HistoricalData,
    spec: PositionSpec,
    book: PriceBook,
    res: BacktestResult,
    cfg: OutcomeConfig,
) -> list[GuardReport]:
    """The guarded outcome of ``spec`` per ``--execution`` mode (robustness rows with the first)."""
    from agent.backtest.guard_table import Inputs, guard_lines, guard_report, parse_hf_range
    from agent.backtest.guarded import GuardModel, bars_for
    from agent.backtest.hourly import load_hourly
    from agent.backtest.outcome import NAMED_EPISODES
    from agent.policy.guard import GuardConfig

    try:
        hfs = parse_hf_range(args.opening_hf) if args.opening_hf else (spec.health_factor,)
        guard = GuardConfig(
            trigger_hf_wad=int(Decimal(args.guard_trigger_hf) * WAD),
            target_hf_wad=int(Decimal(args.guard_target_hf) * WAD),
            critical_hf_wad=int(Decimal(args.guard_critical_hf) * WAD),
            budget_usd=args.guard_budget_usd,
            stress_trigger_hf_wad=(
                int(Decimal(args.stress_trigger_hf) * WAD) if args.stress_trigger_hf else None
            ),
        )
        modes = [parse_execution(t) for t in args.execution or ["autonomous"]]
    except ValueError as e:
        raise ConfigError(f"--outcome: {e}") from None
    d = Path(args.data_dir)
    hourly = load_hourly(d, [spec.collateral])
    path = hourly.get(spec.collateral)
    windows = [(lbl, a, b) for lbl, a, b in NAMED_EPISODES if args.from_ <= a and b <= args.to]
    notes, sources = [], []
    if path is None:
        notes.append(f"no hourly prices for {spec.collateral} in {d}: daily bars only")
    else:
        for lbl, a, b in windows:
            src = path.sources_between(a, b)
            sources.append(f"{lbl}: " + ", ".join(f"{k} {v}h" for k, v in src.items()))
    rkey = "rate.aave-v2.ethereum.usdc.supply_apy"
    rates = _daily_rates(data.series(rkey)) if data.has(rkey) else {}
    notes.append(
        "borrow interest daily at the shipped Aave v2 USDC rate "
        f"({min(rates) if rates else '-'}..{max(rates) if rates else '-'}; "
        f"PROVENANCE: supply or borrow is ambiguous), {args.borrow_apr_fallback:.1%} APR outside it"
    )
    notes.append(
        "the layer rule's proposals (sized on the preset's opening HF, cut to what reaches their "
        "target) and puts run beside the guard, executed "
        f"{cfg.execution_delay_days} day(s) later at the close"
    )
    inp = Inputs(
        {(a, b): bars_for(path, book, spec.collateral, a, b) for _, a, b in windows},
        {r.day: frozenset(x.id for x in r.signals if x.firing) for r in res.days},
        rates,
        proposals_from_backtest(res),
        book,
        cfg,
        args.borrow_apr_fallback,
    )
    out = []
    for i, (mode, delay) in enumerate(modes):
        model = GuardModel(
            guard=guard,
            gap_bps=args.guard_gap_bps,
            execution=mode,  # type: ignore[arg-type]
            delay_hours=delay,
            swap_cost_bps=args.swap_cost_bps,
            gas_usd=args.gas_usd,
            stress_aware=args.stress_trigger_hf is not None,
        )
        rep = guard_report(
            spec, windows, hfs, model, inp, robustness=i == 0, notes=notes, sources=sources
        )
        print()
        for line in guard_lines(rep):
            print(line)
        out.append(rep)
    return out


def _write_text(path: str, text: str) -> None:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot write {p}: {e.strerror or e}") from None


def beta_records(
    data_dir: str | Path | None, start: date | None, end: date | None, prices: str = "yahoo"
) -> list[dict[str, Any]]:
    data = load_history(data_dir, prices="crosscheck" if prices == "crosscheck" else "yahoo")
    if not data.has("close.spx"):
        raise ConfigError("beta: no S&P 500 closes in the data directory")
    spx = data.series("close.spx")
    assets = {a: data.series(f"close.{a}") for a in ("btc", "eth") if data.has(f"close.{a}")}
    cfg = SignalsConfig().s8
    d0 = pd.Timestamp(
        start or max(spx.index[0], *(s.index[0] for s in assets.values())).date(), tz="UTC"
    )
    d1 = pd.Timestamp(
        end or min(spx.index[-1], *(s.index[-1] for s in assets.values())).date(), tz="UTC"
    )
    out: list[dict[str, Any]] = []
    for day in pd.date_range(d0, d1, freq="D"):
        at = to_utc(day + pd.Timedelta(days=1) - pd.Timedelta(seconds=1))
        rec: dict[str, Any] = {"date": day.date().isoformat()}
        for a, s in assets.items():
            r = s8_beta_one(s, spx, at, cfg, a)
            rec[f"{a}_beta30"] = r.metric("beta_short")
            rec[f"{a}_beta90"] = r.metric("beta_long")
            rec[f"{a}_status"] = r.status
            rec[f"{a}_rising"] = r.firing
        out.append(rec)
    return out


def _cmd_beta(args: argparse.Namespace) -> int:
    if args.from_ and args.to and args.to < args.from_:
        raise ConfigError(f"--to {args.to} is before --from {args.from_}")
    recs = beta_records(args.data_dir, args.from_, args.to, args.prices)
    _write_json(
        args.json,
        {
            "window_short": 30,
            "window_long": 90,
            "method": "daily log returns on S&P 500 trading days (crypto close of the same UTC date); "
            "beta = cov/var over the last 30 and 90 paired returns",
            "days": recs,
        },
    )
    last = next((r for r in reversed(recs) if r.get("btc_beta30") is not None), None)
    if last:
        print(
            f"{len(recs)} days; last {last['date']}: "
            + ", ".join(
                f"{a.upper()} beta30 {last[f'{a}_beta30']:.3f} beta90 {last[f'{a}_beta90']:.3f}"
                for a in ("btc", "eth")
                if last.get(f"{a}_beta30") is not None
            )
        )
    print(f"wrote {args.json}", file=sys.stdout)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=str(default_data_dir()),
        help="directory of the history CSVs, plain or .gz (default: the shipped data/history)",
    )
    p.add_argument(
        "--prices",
        choices=["yahoo", "crosscheck"],
        default="yahoo",
        help="price set (default yahoo)",
    )


def _bps(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer (bps): {text!r}") from None
    if not 0 <= v <= 10_000:
        raise argparse.ArgumentTypeError(f"must be 0..10000 bps: {text!r}")
    return v


def _lt_bps(text: str) -> int:
    v = _bps(text)
    if v == 0:
        raise argparse.ArgumentTypeError("a liquidation threshold must be above 0 bps")
    return v


def _outcome_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("outcome (--outcome)")
    g.add_argument(
        "--outcome",
        action="store_true",
        help="follow the hypothetical position without and with the proposals; print the table",
    )
    g.add_argument(
        "--position",
        action="append",
        choices=sorted(PRESETS),
        help="position preset (repeatable; default eth): eth = ETH/USDC HF 1.45, "
        "eth-risky = HF 1.25, btc = BTC/USDC HF 1.45 (LT 78%%)",
    )
    g.add_argument(
        "--liquidation-bonus-bps", type=_bps, default=None, help="liquidation bonus (500 = 5%%)"
    )
    g.add_argument(
        "--execution-delay-days",
        type=int,
        default=1,
        help="days between a proposal and its execution (signers; default 1)",
    )
    g.add_argument("--swap-cost-bps", type=_bps, default=30, help="a deleverage's swap cost")
    g.add_argument(
        "--vol-window-days", type=int, default=30, help="realised vol window for premiums"
    )
    g.add_argument(
        "--put-dte",
        choices=["min", "mid", "max"],
        default="mid",
        help="put expiry within each horizon's DTE range (default mid)",
    )
    g.add_argument(
        "--liquidation-model",
        choices=["oracle-step", "day-low"],
        default="oracle-step",
        help="where liquidations happen: first oracle update past HF 1 (default), or all at the day's low",
    )
    g.add_argument(
        "--oracle-step-bps", type=_bps, default=50, help="oracle deviation step (default 50)"
    )
    g.add_argument("--outcome-markdown", help="also write the outcome tables as Markdown here")
    g.add_argument(
        "--guard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the liquidation guard hour by hour over the named windows (default on)",
    )
    g.add_argument(
        "--execution",
        action="append",
        metavar="MODE",
        help="guard execution: autonomous (default), signers (1-day delay), signers:<N>h or "
        "signers:<N>d (repeatable: one table each)",
    )
    g.add_argument(
        "--opening-hf",
        metavar="HF|LO:HI:STEP",
        help="open the preset at each of these health factors (e.g. 1.30:2.00:0.005); "
        "default: the preset's",
    )
    g.add_argument(
        "--guard-gap-bps",
        type=_bps,
        default=100,
        help="the price moves this far against the guard while its transaction lands (100)",
    )
    g.add_argument("--guard-trigger-hf", default="1.30", help="guard trigger HF (1.30)")
    g.add_argument("--guard-target-hf", default="1.60", help="guard target HF (1.60)")
    g.add_argument("--guard-critical-hf", default="1.10", help="guard critical HF (1.10)")
    g.add_argument(
        "--stress-trigger-hf",
        default="1.45",
        help="trigger HF while a stress signal (S1-S7) fires (1.45); empty: never raised",
    )
    g.add_argument(
        "--guard-budget-usd",
        type=_decimal,
        default=Decimal(100_000),
        help="the guard's money per UTC day for repays (100000); the rest is a deleverage",
    )
    g.add_argument("--gas-usd", type=float, default=20.0, help="gas per guard transaction ($20)")
    g.add_argument(
        "--borrow-apr-fallback",
        type=float,
        default=0.05,
        help="borrow APR on days without a shipped stablecoin rate (0.05)",
    )
    g.add_argument("--guard-markdown", help="also write the guard tables as Markdown here")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "backtest", help="replay the signals and the DeFi layer rule over real history"
    )
    _common(p)
    p.add_argument(
        "--from",
        dest="from_",
        metavar="DATE",
        type=_date,
        required=True,
        help="first day (YYYY-MM-DD, UTC)",
    )
    p.add_argument("--to", metavar="DATE", type=_date, required=True, help="last day (inclusive)")
    p.add_argument(
        "--gate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="apply the consensus gate (default on)",
    )
    p.add_argument(
        "--gate-mode",
        choices=["independent", "design"],
        default=None,
        help="independent (default): a firing signal outside the trigger's own confirms it; "
        "design: 2 of 3 families",
    )
    p.add_argument(
        "--options",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="size puts (default on); --no-options: the whole layer goes to protection",
    )
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="run over a grid of settings (repeatable; KEY like signals.s1.drawdown_fraction, "
        "policy.gate_mode, signals.s3.direction, policy.layer_hold_days) and print one table",
    )
    p.add_argument(
        "--budget-usd", type=_decimal, default=Decimal("1000000"), help="defined-risk capital B"
    )
    p.add_argument(
        "--debt-usd", type=_decimal, default=None, help="hypothetical position debt (default 1e6)"
    )
    p.add_argument(
        "--health-factor",
        type=_decimal,
        default=None,
        help="hypothetical position health factor (default: the preset's, 1.45)",
    )
    p.add_argument(
        "--lt-bps", type=_lt_bps, default=None, help="liquidation threshold (bps; preset's)"
    )
    p.add_argument("--json", help="write one record per day and the episodes to this file")
    p.add_argument("--chart", help="write a PNG chart to this file")
    _outcome_args(p)
    p.set_defaults(handler=_cmd_backtest)

    p = sub.add_parser("beta", help="daily beta30/beta90 of BTC and ETH vs the S&P 500")
    _common(p)
    p.add_argument("--from", dest="from_", metavar="DATE", type=_date, default=None)
    p.add_argument("--to", metavar="DATE", type=_date, default=None)
    p.add_argument("--json", required=True, help="output file")
    p.set_defaults(handler=_cmd_beta)
