"""``hedge-agent`` command line. Each area registers its own subcommands; every handler
returns an exit code, and any ``AgentError`` ends as one line on stderr (exit 2), never a
traceback."""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _interrupted(signum: int, frame: FrameType | None) -> None:
    # Until the daemon installs its own handlers: a Ctrl-C during the imports of start-up ends
    # with one line, not a traceback through whichever module was loading (SystemExit is
    # never printed as a traceback).
    print("interrupted", file=sys.stderr)
    raise SystemExit(130)


if __name__ == "__main__" or "hedge-agent" in sys.argv[0]:
    signal.signal(signal.SIGINT, _interrupted)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from agent.core.errors import AgentError, Halt  # noqa: E402


def _cmd_run(args: argparse.Namespace) -> int:
    from agent.commands.run import run
    from agent.config import load_settings
    from agent.sinks.logging import configure_logging

    settings = load_settings(args.config)
    configure_logging(settings.agent.log_format, settings.agent.log_level)
    return asyncio.run(run(settings, once=args.once))


def _cmd_proposals(args: argparse.Namespace) -> int:
    from agent.app import App
    from agent.config import Settings, load_settings
    from agent.sinks.logging import configure_logging
    from agent.sinks.render import ReviewPrinter

    # Reading the journal needs only its path, not a live devnet.
    settings = load_settings(args.config, resolve_deployment=False) if args.config else Settings()
    # Warnings (a skipped unreadable line) go to stderr, never into the listing.
    configure_logging("console", settings.agent.log_level)
    with App(settings, journal_path=args.journal) as app:
        journal = app.journal
    path = journal.path
    rows = journal.read()
    if args.action == "list":
        if not rows:
            print(f"no proposals in {path}")
        for r in rows:
            sim = r.get("simulation") or {}
            hf = ""
            if r.get("option") and sim.get("option_long_after") is not None:
                o = r["option"]
                hf = (
                    f"{int(sim['option_long_after']) / 1e18:,.2f} puts {o['horizon']} "
                    f"strike {float(o['strike']):,.0f}"
                )
            elif r.get("ticket"):  # the S&P 500 side's advisory ticket
                hf = "SPX puts " + ", ".join(
                    f"{g['contracts']}x {g['symbol']} {g['expiry']} {g['strike']}P @{g['limit_price']}"
                    for g in r["ticket"]["legs"]
                )
            elif sim.get("health_factor_before") is not None:
                after = sim.get("health_factor_after")
                hf = (
                    f"HF {sim['health_factor_before']:.3f} -> {after:.3f}"
                    if after is not None
                    else "HF n/a"
                )
            spend = (r.get("sizing") or {}).get("spend_usd")
            acct = str(r.get("account") or "")
            # chain and position (the position's name, else the chain and the short account)
            where = r.get("position") or f"{r.get('chain')}:{acct[:6]}..{acct[-4:]}"
            # a liquidation guard's proposal says so
            act = str(r["action"]) + (" (guard)" if (r.get("policy") or {}).get("guard") else "")
            print(
                f"{r['id']}  {r['created_at']}  {where:<24} {r['status']:<18} {act:<18} "
                + (f"${spend:,.2f}  " if spend is not None else "")
                + hf
            )
        return 0
    if args.all:
        chosen = rows
    else:
        if not args.id:
            raise AgentError("proposals show: give a proposal ID or --all")
        found = journal.get(args.id)
        if found is None:
            raise AgentError(f"no proposal {args.id!r} in {path}")
        chosen = [found]
    review = ReviewPrinter()  # each decision once, its proposals referring to it
    for r in chosen:
        print(json.dumps(r, indent=2) if args.json else review.render(r))
        print()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hedge-agent", description="On-chain DeFi hedging agent")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon (dry-run by default)")
    p.add_argument("--config", required=True, help="TOML configuration file")
    p.add_argument("--once", action="store_true", help="run a single tick and exit")
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("proposals", help="read the proposals journal")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("id", nargs="?")
    p.add_argument("--all", action="store_true", help="show every proposal")
    p.add_argument("--json", action="store_true", help="print the raw journal record")
    p.add_argument("--config", help="TOML configuration (for the journal path)")
    p.add_argument("--journal", help="journal file (overrides the configuration)")
    p.set_defaults(handler=_cmd_proposals)

    from agent.backtest import command as backtest_command
    from agent.commands import collect as collectors_command
    from agent.commands import roles as roles_command
    from agent.commands import safe as safe_command
    from agent.commands import status as status_command
    from agent.commands import store as store_command
    from agent.devnet import command as devnet_command
    from agent.ops import command as ops_command

    for module in (
        devnet_command,
        collectors_command,
        store_command,
        backtest_command,
        safe_command,
        roles_command,
        ops_command,
        status_command,
    ):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        # Inside the try: building the parser imports every command (seconds on a cold
        # cache), and a Ctrl-C then must end as one line, not an import traceback.
        args = build_parser().parse_args(argv)
        code: int = args.handler(args)
        return code
    except (AgentError, Halt) as exc:  # Halt stands outside AgentError (core/errors.py)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
