"""``hedge-agent collect`` and ``hedge-agent backfill``: fill the store from every configured source.

* ``collect --config PATH --once`` runs each collector once (on-chain snapshot, liquidations,
  Comet, scenario feed, enabled HTTP collectors), stores the observations and prints, per series
  key, how many it stored and the last value with its unit and source. Without ``--once`` it
  repeats every ``agent.tick_interval_s`` until interrupted.
* ``backfill --config PATH --since DATE`` loads history for every configured source with a
  progress line on stderr. It is resumable: run the same command again after an interruption and
  it continues from the checkpoints in the store (``--restart`` starts over).

Exit codes: 0 all sources fine, 1 some source failed (the others were still stored), 2 a
configuration/store error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from agent.collectors import is_no_value
from agent.core.models import Observation

if TYPE_CHECKING:
    from agent.pipeline.backfill import BackfillReport
    from agent.pipeline.collect import CollectReport


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt(v: float) -> str:
    return f"{v:.10g}"


def render_collect(report: CollectReport, store_path: str) -> str:
    lines = [
        f"stored {len(report.observations)} observations ({report.stored} new or changed) "
        f"from {len(report.sources)} sources in {report.elapsed_s:.2f}s into {store_path}",
        "",
        f"  {'source':<14} {'observations':>12} {'stored':>7}  status",
    ]
    for name, r in sorted(report.sources.items()):
        status = "ok" if r.ok else "FAILED"
        if r.problems:
            status += f" ({len(r.problems)} problems)"
        lines.append(f"  {name:<14} {r.count:>12} {r.stored:>7}  {status}")
    for name, why in sorted(report.skipped.items()):
        lines.append(f"  {name:<14} {'-':>12} {'-':>7}  skipped: {why}")
    by_key: dict[str, list[Observation]] = {}
    for o in report.observations:
        by_key.setdefault(o.key, []).append(o)
    if by_key:
        width = max(len(k) for k in by_key)
        lines += [
            "",
            f"{'key':<{width}}  {'count':>6}  {'last ts':<20}  {'last value':>16}  {'unit':<6}  source",
        ]
        for key in sorted(by_key):
            rows = by_key[key]
            last = max(rows, key=lambda o: (o.ts, o.available_at))
            lines.append(
                f"{key:<{width}}  {len(rows):>6}  {_iso(last.ts):<20}  {_fmt(last.value):>16}  "
                f"{last.unit:<6}  {last.source}"
            )
    for name, r in sorted(report.sources.items()):
        for p in r.problems[:5]:
            lines.append(f"problem: {name}: {p}")
    return "\n".join(lines)


def collect_summary(reports: list[CollectReport]) -> str | None:
    """One line naming every source that failed or answered only in part (a stale oracle, an
    unreadable Comet market, an undecodable log), or None when everything was read: a cron job
    gets a non-zero exit and this line. A day the source itself marks empty (FRED's "." on a
    holiday) is routine, not a part missing."""
    failed: list[str] = []
    partial: list[str] = []
    for report in reports:
        for name, r in sorted(report.sources.items()):
            if r.errors:
                failed.append(name)
            elif real := [p for p in r.problems if not is_no_value(p)]:
                partial.append(f"{name} ({len(real)} problems)")
    if not failed and not partial:
        return None
    total = sum(len(r.sources) for r in reports)
    parts = []
    if failed:
        parts.append(f"{len(failed)} of {total} sources failed: {', '.join(failed)}")
    if partial:
        parts.append(f"{len(partial)} read in part: {', '.join(partial)}")
    return "collect: " + "; ".join(parts)


def render_backfill(report: BackfillReport) -> str:
    lines = [
        f"backfill since {_iso(report.since)}: {report.rows} observations written "
        f"in {report.elapsed_s:.1f}s",
        "",
        f"  {'task':<32} {'steps':>6} {'rows':>8}  status",
    ]
    for name, t in sorted(report.tasks.items()):
        if t.error:
            status = "FAILED (resumable): " + t.error
        elif t.skipped:
            status = "skipped: " + t.skipped
        elif t.done:
            status = "done" + (" (resumed)" if t.resumed_from is not None else "")
        else:
            status = "incomplete"
        lines.append(f"  {name:<32} {t.steps:>6} {t.rows:>8}  {status}")
    return "\n".join(lines)


def _configure_logging(verbose: bool) -> None:
    from agent.sinks.logging import configure_logging

    configure_logging("auto", "INFO" if verbose else "WARNING")


def _cmd_collect(args: argparse.Namespace) -> int:
    from agent.app import App
    from agent.config import load_settings
    from agent.pipeline.collect import collect_chains

    settings = load_settings(args.config)
    _configure_logging(args.verbose)
    path = settings.agent.store_path

    async def loop() -> int:
        async with App(settings) as app:
            chains = app.parts.chains
            rpcs = {c.name: app.rpc(c) if c.has_rpc else None for c in chains}
            while True:
                # the daemon's fan-out: every chain, the chain-independent sources once
                collected = await collect_chains(
                    settings, app.store, chains, rpcs=rpcs, http=app.http
                )
                reports = list(collected.values())
                for chain, report in zip(chains, reports, strict=True):
                    if len(chains) > 1:
                        print(f"chain {chain.name}:")
                    print(render_collect(report, path), flush=True)
                    for e in report.errors:
                        print(f"error: {e}", file=sys.stderr)
                summary = collect_summary(reports)
                if summary is not None:
                    print(summary, file=sys.stderr, flush=True)
                if args.once:
                    return 0 if summary is None else 1
                print(flush=True)
                await asyncio.sleep(settings.agent.tick_interval_s)

    try:
        return asyncio.run(loop())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _cmd_backfill(args: argparse.Namespace) -> int:
    from agent.app import App
    from agent.commands.store import parse_when
    from agent.config import load_settings
    from agent.pipeline.backfill import Progress, backfill_chains

    settings = load_settings(args.config)
    since = parse_when(args.since)
    _configure_logging(args.verbose)
    progress = Progress(enabled=not args.quiet)

    async def load() -> BackfillReport:
        # NORMAL is safe here: each step's rows and its checkpoint are one transaction.
        async with App(settings, store_synchronous="NORMAL") as app:
            chains = app.parts.chains
            return await backfill_chains(
                settings,
                app.store,
                chains,
                since=since,
                rpcs={c.name: app.rpc(c) if c.has_rpc else None for c in chains},
                http=app.http,
                restart=args.restart,
                progress=progress,
            )

    try:
        report = asyncio.run(load())
    except KeyboardInterrupt:
        progress.close()
        print(
            "interrupted: the completed steps are stored; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    print(render_backfill(report))
    for e in report.errors:
        print(f"error: {e}", file=sys.stderr)
    return 0 if not report.errors else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("collect", help="run every configured collector and store the observations")
    p.add_argument("--config", required=True, help="TOML configuration file")
    p.add_argument("--once", action="store_true", help="collect once and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="log every source (stderr)")
    p.set_defaults(handler=_cmd_collect)

    p = sub.add_parser("backfill", help="load history for every configured source (resumable)")
    p.add_argument("--config", required=True, help="TOML configuration file")
    p.add_argument(
        "--since", required=True, help="start (YYYY-MM-DD, ISO-8601 or unix seconds, UTC)"
    )
    p.add_argument("--restart", action="store_true", help="ignore checkpoints, load everything")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.add_argument("-v", "--verbose", action="store_true", help="log every step (stderr)")
    p.set_defaults(handler=_cmd_backfill)
