"""``hedge-agent pause``, ``resume`` and ``check``."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from agent.ops.pause import PauseSwitch, pause_path


def _switch(args: argparse.Namespace) -> PauseSwitch:
    from agent.config import load_settings

    # The switch only needs the store path, not a live devnet.
    settings = load_settings(args.config, resolve_deployment=False)
    return PauseSwitch(pause_path(settings.agent.store_path))


def _cmd_pause(args: argparse.Namespace) -> int:
    switch = _switch(args)
    state = switch.pause(args.reason)
    when = datetime.fromtimestamp(state.since or 0, UTC).isoformat()
    print(f"paused at {when} ({switch.path}); reason: {state.reason or 'none'}")
    print("the daemon keeps collecting and evaluating and proposes nothing until `resume`")
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    switch = _switch(args)
    was = switch.read()
    switch.resume()
    print(f"resumed ({switch.path}); was {'paused' if was.paused else 'not paused'}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from agent.ops.check import run_check

    notes: list[str] = []
    problems, passed = asyncio.run(run_check(args.config, notes=notes))
    for line in notes:
        print(line)
    for p in problems:
        print(f"problem: {p}")
    if problems:
        print(f"{len(problems)} problem(s), {passed} check(s) passed")
        return 1
    print(f"ok: {passed} checks passed")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pause", help="stop proposing (the daemon keeps collecting); survives restarts"
    )
    p.add_argument("--config", required=True, help="TOML configuration (for the store path)")
    p.add_argument("--reason", help="shown in logs and the notification")
    p.set_defaults(handler=_cmd_pause)

    p = sub.add_parser("resume", help="propose again after `pause`")
    p.add_argument("--config", required=True, help="TOML configuration (for the store path)")
    p.set_defaults(handler=_cmd_resume)

    p = sub.add_parser("check", help="check everything a start needs; one line per problem")
    p.add_argument("--config", required=True, help="TOML configuration file")
    p.set_defaults(handler=_cmd_check)
