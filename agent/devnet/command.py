"""``hedge-agent devnet up|down|status|play``."""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path
from typing import Any

from agent.core.anvil import AnvilProcess, kill_process_group
from agent.core.errors import DevnetError
from agent.devnet.chain import Chain
from agent.devnet.deploy import deploy, deployment_path, read_deployment, write_deployment
from agent.devnet.scenario import DEFAULT_FEED_PATH, MarketState, load_scenario, market_state, play


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("devnet", help="local Anvil devnet with Aave V3, Safe, feeds and a perp")
    dsub = p.add_subparsers(dest="devnet_command", required=True)

    up = dsub.add_parser("up", help="start anvil (detached), deploy, write the deployment file")
    up.add_argument("--deployment", help="deployment file (default out/devnet/deployment.json)")
    up.add_argument("--port", type=int, help="anvil port on 127.0.0.1 (default: a free port)")
    up.set_defaults(handler=cmd_up)

    down = dsub.add_parser("down", help="stop the devnet's anvil and remove the deployment file")
    down.add_argument("--deployment")
    down.set_defaults(handler=cmd_down)

    status = dsub.add_parser("status", help="show the devnet's chain and market state")
    status.add_argument("--deployment")
    status.set_defaults(handler=cmd_status)

    pl = dsub.add_parser("play", help="play config/scenarios/SCENARIO.toml on the devnet")
    pl.add_argument("scenario", metavar="SCENARIO", help="scenario name or .toml path")
    pl.add_argument("--deployment")
    pl.add_argument("--feed", help=f"feed file to write (default {_rel(DEFAULT_FEED_PATH)})")
    pl.add_argument(
        "--pace",
        type=float,
        default=0.0,
        help="real seconds to wait per simulated hour (default 0)",
    )
    pl.set_defaults(handler=cmd_play)


def _rel(p: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(p.relative_to(Path.cwd()))
    return str(p)


def _answers(url: str) -> bool:
    try:
        Chain(url, timeout=3).chain_id()
    except DevnetError:
        return False
    return True


def _is_anvil(pid: int) -> bool:
    """Guard against pid reuse: only kill a process that is still an anvil."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"anvil" in cmdline.split(b"\0")[0]


def _connect(args: argparse.Namespace) -> tuple[Path, dict[str, Any], Chain]:
    path = deployment_path(args.deployment)
    dep = read_deployment(path)
    if not _answers(dep["rpc_url"]):
        raise DevnetError(
            f"devnet at {dep['rpc_url']} does not answer (run `hedge-agent devnet up`)"
        )
    return path, dep, Chain(dep["rpc_url"])


def _summary(state: MarketState) -> str:
    prices = ", ".join(f"{k} ${v:,.2f}" for k, v in state.prices.items())
    util = ", ".join(f"{k} {v:.1%}" for k, v in state.utilisation.items())
    funding = ", ".join(f"{k} {v * 365:+.1%} APR" for k, v in state.funding_per_day.items())
    return (
        f"  block {state.block}, chain time {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(state.timestamp))}\n"
        f"  prices: {prices}\n"
        f"  Aave TVL (aToken supply x price): ${state.tvl_usd:,.0f}\n"
        f"  utilisation: {util}; USDC borrow APR {state.borrow_apr.get('USDC', 0.0):.2%}\n"
        f"  funding: {funding}\n"
        + (
            "  Uniswap V3: "
            + ", ".join(f"{k}/USDC {v:,.2f}" for k, v in state.pool_prices.items())
            + "\n"
            if state.pool_prices
            else ""
        )
        + f"  Safe health factor: {state.safe_health_factor:.4f}"
        + (
            f"; empty-wallet Safe: {state.lean_safe_health_factor:.4f}"
            if state.lean_safe_health_factor is not None
            else ""
        )
    )


def cmd_up(args: argparse.Namespace) -> int:
    path = deployment_path(args.deployment)
    if path.exists():
        try:
            old_url: str | None = read_deployment(path)["rpc_url"]
        except DevnetError:
            old_url = None  # unreadable: overwrite it
        if old_url and _answers(old_url):
            raise DevnetError(
                f"devnet already up at {old_url} ({path}); run `hedge-agent devnet down` first"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # Detached: anvil runs in its own session and outlives this command; `down` kills its group.
    anvil = AnvilProcess(port=args.port, detach=True, log_path=path.parent / "anvil.log")
    anvil.start()
    try:
        dep = deploy(anvil.url, anvil_pid=anvil.pid)
        write_deployment(dep, path)
        state = market_state(Chain(anvil.url), dep)
    except BaseException:
        anvil.stop()
        raise
    print(f"devnet up at {anvil.url} (anvil pid {anvil.pid}) in {time.monotonic() - started:.1f}s")
    print(f"  deployment: {_rel(path)}")
    print(f"  Aave pool {dep['aave']['pool']}, Safe {dep['safe']['address']} (threshold 1 of 2)")
    print(_summary(state))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    path = deployment_path(args.deployment)
    try:
        dep = read_deployment(path)
    except DevnetError as exc:
        if path.exists():
            path.unlink()
            print(f"removed unreadable deployment file {_rel(path)} ({exc})")
        else:
            print(f"devnet is not up (no deployment file at {_rel(path)})")
        return 0
    pid = dep.get("anvil_pid")
    if isinstance(pid, int) and pid > 0 and pid != os.getpid() and _is_anvil(pid):
        kill_process_group(pid)
        print(f"stopped anvil pid {pid} ({dep['rpc_url']})")
    else:
        print(f"anvil for {dep['rpc_url']} is not running")
    path.unlink(missing_ok=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    path, dep, chain = _connect(args)
    state = market_state(chain, dep)
    print(
        f"devnet up at {dep['rpc_url']} (chain {dep['chain_id']}, anvil pid {dep.get('anvil_pid')})"
    )
    print(f"  deployment: {_rel(path)}, deployed at block {dep['deployed_block']}")
    print(_summary(state))
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    _path, dep, _chain = _connect(args)
    scenario = load_scenario(args.scenario)
    feed = Path(args.feed) if args.feed else DEFAULT_FEED_PATH
    result = play(dep, scenario, feed, pace=args.pace)
    b, a = result.before, result.after
    print(
        f"played scenario {result.scenario!r} (scenario data, not market data): "
        f"{scenario.duration_hours} h, blocks {result.first_block}..{result.last_block}"
    )
    for sym in a.prices:
        print(
            f"  {sym}: ${b.prices[sym]:,.2f} -> ${a.prices[sym]:,.2f} ({a.prices[sym] / b.prices[sym] - 1:+.1%})"
        )
    print(f"  Aave TVL: ${b.tvl_usd:,.0f} -> ${a.tvl_usd:,.0f} ({a.tvl_usd / b.tvl_usd - 1:+.1%})")
    print(
        f"  USDC utilisation {b.utilisation['USDC']:.1%} -> {a.utilisation['USDC']:.1%}, "
        f"borrow APR {b.borrow_apr['USDC']:.2%} -> {a.borrow_apr['USDC']:.2%}"
    )
    for name in a.funding_per_day:
        print(
            f"  {name} funding: {b.funding_per_day[name] * 365:+.1%} -> {a.funding_per_day[name] * 365:+.1%} APR"
        )
    print(f"  liquidations: {len(result.liquidations)}")
    print(f"  Safe health factor: {b.safe_health_factor:.4f} -> {a.safe_health_factor:.4f}")
    if b.lean_safe_health_factor is not None and a.lean_safe_health_factor is not None:
        print(
            f"  empty-wallet Safe health factor: {b.lean_safe_health_factor:.4f}"
            f" -> {a.lean_safe_health_factor:.4f}"
        )
    print(f"  feed file: {_rel(feed)}")
    return 0
