"""``hedge-agent devnet up|down|status|play``, on one devnet chain or several (``--chains``).

Chain 1 is the devnet as it always was (chain id 31337, ``deployment.json``, ``anvil.log``);
chain k >= 2 is another detached anvil with chain id 31337 + k - 1 and the same deployment,
recorded beside the first one (``deployment-2.json``, ``anvil-2.log``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from agent.core.anvil import AnvilProcess, free_port, kill_process_group
from agent.core.errors import DevnetError
from agent.devnet.artifacts import ensure_forge_artifacts
from agent.devnet.chain import Chain
from agent.devnet.deploy import (
    MAX_CHAINS,
    chain_deployment_path,
    chain_log_path,
    deploy,
    deployment_path,
    devnet_chain_id,
    read_deployment,
    write_deployment,
)
from agent.devnet.scenario import (
    DEFAULT_FEED_PATH,
    MarketState,
    PlayResult,
    load_scenario,
    market_state,
    play_chains,
)


def _chain_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_CHAINS:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_CHAINS}: {text!r}")
    return n


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("devnet", help="local Anvil devnet with Aave V3, Safe, feeds and a perp")
    dsub = p.add_subparsers(dest="devnet_command", required=True)

    up = dsub.add_parser("up", help="start anvil (detached), deploy, write the deployment file")
    up.add_argument("--deployment", help="deployment file (default out/devnet/deployment.json)")
    up.add_argument(
        "--port", type=int, help="chain 1's anvil port on 127.0.0.1 (default: a free port)"
    )
    up.add_argument(
        "--chains",
        type=_chain_count,
        default=1,
        help=f"how many devnet chains to start, 1..{MAX_CHAINS} (default 1); chain k has chain id"
        " 31337+k-1 and its deployment file beside the first (deployment-2.json, ...)",
    )
    up.set_defaults(handler=cmd_up)

    down = dsub.add_parser(
        "down", help="stop every devnet chain's anvil and remove their deployment files"
    )
    down.add_argument("--deployment")
    down.set_defaults(handler=cmd_down)

    status = dsub.add_parser("status", help="show every devnet chain's market state")
    status.add_argument("--deployment")
    status.set_defaults(handler=cmd_status)

    pl = dsub.add_parser(
        "play", help="play config/scenarios/SCENARIO.toml on every devnet chain that is up"
    )
    pl.add_argument("scenario", metavar="SCENARIO", help="scenario name or .toml path")
    pl.add_argument("--deployment")
    pl.add_argument(
        "--chain",
        type=_chain_count,
        metavar="K",
        help="play on devnet chain K only (default: every chain that is up)",
    )
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


def _present(first: Path) -> list[tuple[int, Path]]:
    """The chains whose deployment file exists beside ``first`` (chain 1's)."""
    paths = ((k, chain_deployment_path(first, k)) for k in range(1, MAX_CHAINS + 1))
    return [(k, p) for k, p in paths if p.exists()]


def _connect(first: Path, only: int | None = None) -> list[tuple[int, Path, dict[str, Any]]]:
    """Every devnet chain that is up (or chain ``only``); one line naming the chain's file when
    a deployment file's anvil does not answer."""
    present = _present(first)
    if only is not None:
        present = [(k, p) for k, p in present if k == only]
        if not present:
            raise DevnetError(
                f"devnet chain {only} is not up: no deployment file at"
                f" {_rel(chain_deployment_path(first, only))}"
            )
    if not present:
        read_deployment(first)  # raises: "devnet is not up: no deployment file at ..."
    out = []
    for k, path in present:
        dep = read_deployment(path)
        if not _answers(dep["rpc_url"]):
            where = "" if k == 1 else f" (chain {k}, {_rel(path)})"
            raise DevnetError(
                f"devnet at {dep['rpc_url']} does not answer{where} (run `hedge-agent devnet up`)"
            )
        out.append((k, path, dep))
    return out


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


def _chain_name(k: int, dep: dict[str, Any]) -> str:
    return f"chain {k} (chain id {dep['chain_id']})"


def _refuse_if_up(first: Path) -> None:
    """Refuse when any chain's file beside ``first`` points at an answering anvil; then remove
    the files whose anvil is gone (stale: a later chain's would otherwise count as up)."""
    present = _present(first)
    for k, path in present:
        try:
            url: str | None = read_deployment(path)["rpc_url"]
        except DevnetError:
            url = None  # unreadable: stale
        if url and _answers(url):
            which = "devnet" if k == 1 else f"devnet chain {k}"
            raise DevnetError(
                f"{which} already up at {url} ({_rel(path)}); run `hedge-agent devnet down` first"
            )
    for _k, path in present:
        path.unlink(missing_ok=True)


def _anvils(first: Path, n: int, port: int | None) -> list[AnvilProcess]:
    used = {port} if port else set()
    anvils = []
    for k in range(1, n + 1):
        if k == 1 and port:
            p = port
        else:
            p = free_port()
            while p in used:  # two free_port() calls may return the same port
                p = free_port()
            used.add(p)
        anvils.append(
            AnvilProcess(
                port=p,
                # Chain 1 is anvil's default chain (31337), as a one-chain devnet always was.
                chain_id=None if k == 1 else devnet_chain_id(k),
                # Detached: anvil runs in its own session and outlives this command; `down`
                # kills its group.
                detach=True,
                log_path=chain_log_path(first, k),
            )
        )
    return anvils


def _deploy_all(anvils: list[AnvilProcess]) -> list[dict[str, Any]]:
    """Deploy every chain concurrently (each thread has its own anvil and client). On the first
    failure every anvil is stopped at once, so the other deploys fail fast, and one line names
    the chain that failed."""
    ensure_forge_artifacts()  # once, before the threads: a build must not run twice at once
    pool = ThreadPoolExecutor(max_workers=len(anvils), thread_name_prefix="devnet-deploy")
    futures: dict[Future[dict[str, Any]], int] = {
        pool.submit(deploy, a.url, anvil_pid=a.pid, chain_index=k): k
        for k, a in enumerate(anvils, 1)
    }
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = sorted((futures[f], f) for f in done if f.exception() is not None)
        if failed:
            k, fut = failed[0]
            exc = fut.exception()
            for a in anvils:
                a.stop()
            raise DevnetError(
                f"devnet chain {k} (chain id {devnet_chain_id(k)}) failed to deploy: {exc}"
            ) from exc
        return [f.result() for f in sorted(futures, key=futures.__getitem__)]
    except BaseException:
        for a in anvils:
            a.stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def cmd_up(args: argparse.Namespace) -> int:
    first = deployment_path(args.deployment)
    n: int = args.chains
    _refuse_if_up(first)
    first.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    anvils = _anvils(first, n, args.port)
    written: list[Path] = []
    try:
        for a in anvils:
            a.spawn()
        for a in anvils:
            a.wait_ready()
        deps = _deploy_all(anvils)
        for k, dep in enumerate(deps, 1):
            path = chain_deployment_path(first, k)
            written.append(path)
            write_deployment(dep, path)
        states = [market_state(Chain(d["rpc_url"]), d) for d in deps]
    except BaseException:
        for a in anvils:
            a.stop()
        for path in written:
            path.unlink(missing_ok=True)
        raise
    elapsed = time.monotonic() - started
    for k, (dep, state) in enumerate(zip(deps, states, strict=True), 1):
        name = "devnet" if n == 1 else f"devnet {_chain_name(k, dep)}"
        print(f"{name} up at {dep['rpc_url']} (anvil pid {dep['anvil_pid']})")
        print(f"  deployment: {_rel(chain_deployment_path(first, k))}")
        print(
            f"  Aave pool {dep['aave']['pool']}, Safe {dep['safe']['address']} (threshold 1 of 2)"
        )
        print(_summary(state))
    print(f"{n} chain{'s' if n > 1 else ''} deployed in {elapsed:.1f}s")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    first = deployment_path(args.deployment)
    present = _present(first)
    if not present:
        print(f"devnet is not up (no deployment file at {_rel(first)})")
        return 0
    for k, path in present:
        try:
            dep = read_deployment(path)
        except DevnetError as exc:
            path.unlink(missing_ok=True)
            print(f"chain {k}: removed unreadable deployment file {_rel(path)} ({exc})")
            continue
        pid = dep.get("anvil_pid")
        name = _chain_name(k, dep)
        if isinstance(pid, int) and pid > 0 and pid != os.getpid() and _is_anvil(pid):
            kill_process_group(pid)
            print(f"{name}: stopped anvil pid {pid} ({dep['rpc_url']})")
        else:
            print(f"{name}: anvil for {dep['rpc_url']} is not running")
        path.unlink(missing_ok=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    for k, path, dep in _connect(deployment_path(args.deployment)):
        state = market_state(Chain(dep["rpc_url"]), dep)
        print(
            f"devnet {_chain_name(k, dep)} up at {dep['rpc_url']} (anvil pid {dep.get('anvil_pid')})"
        )
        print(f"  deployment: {_rel(path)}, deployed at block {dep['deployed_block']}")
        print(_summary(state))
    return 0


def _play_block(k: int, dep: dict[str, Any], result: PlayResult) -> None:
    b, a = result.before, result.after
    print(
        f"{_chain_name(k, dep)} at {dep['rpc_url']}: blocks {result.first_block}..{result.last_block}"
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


def cmd_play(args: argparse.Namespace) -> int:
    chains = _connect(deployment_path(args.deployment), only=args.chain)
    scenario = load_scenario(args.scenario)
    feed = Path(args.feed) if args.feed else DEFAULT_FEED_PATH
    results = play_chains([dep for _k, _p, dep in chains], scenario, feed, pace=args.pace)
    print(
        f"played scenario {scenario.name!r} (scenario data, not market data): "
        f"{scenario.duration_hours} h on {len(chains)} chain{'s' if len(chains) > 1 else ''}"
    )
    for (k, _path, dep), result in zip(chains, results, strict=True):
        _play_block(k, dep, result)
    print(f"  feed file: {_rel(feed)}")
    return 0
