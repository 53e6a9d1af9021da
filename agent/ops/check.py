"""``hedge-agent check``: everything a start needs, one line per problem.

The schema (strict), the chain id of every RPC, contract code at every configured address, the
Safe's owners and threshold, API keys of enabled sources that need one, every endpoint
reachable, the store, journal and Safe files writable, the notification URLs and the metrics
port. Nothing is written except a rolled-back transaction in the store and removed probe files.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import aiohttp
from eth_utils.address import to_checksum_address

from agent.app import App
from agent.config import Settings, apply_deployment, load_settings
from agent.core.abi import load_abi
from agent.core.errors import AgentError
from agent.core.rpc import RpcClient, redact_url
from agent.ops.server import parse_listen
from agent.pipeline.parts import Chain, Position, build_parts
from agent.sinks.config import is_safe_hosted

# One URL's client for a check (one attempt): App.probe_rpc with the check's timeout.
Probe = Callable[[str], RpcClient]


class Checks:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.passed = 0

    def ok(self) -> None:
        self.passed += 1

    def fail(self, msg: str) -> None:
        self.problems.append(msg)

    def expect(self, cond: bool, msg: str) -> bool:
        if cond:
            self.ok()
        else:
            self.fail(msg)
        return cond


def _addresses(s: Settings, p: Position) -> list[tuple[str, str]]:
    """(label, address) of every configured contract of the position's chain."""
    c, o = p.chain.config, p.chain.venue
    out: list[tuple[str, str]] = [("chain.multicall3", c.multicall3)]
    if c.pool_addresses_provider:
        out.append(("chain.pool_addresses_provider", c.pool_addresses_provider))
    out += [(f"chain.reserves[{i}]", a) for i, a in enumerate(c.reserves)]
    out += [(f'chain.feeds."{n}"', f.address) for n, f in c.feeds.items()]
    out += [(f'chain.perps."{n}"', a) for n, a in c.perps.items()]
    if p.account and p.kind == "safe":
        out.append(("position.account (Safe)", p.account))
    if p.multisend_call_only:
        out.append(("position.multisend_call_only", p.multisend_call_only))
    if o.enabled and o.configured:
        for f in ("pool_factory", "oracle_adapter", "erc20_router", "base", "quote"):
            out.append((f"options.{f}", str(getattr(o, f))))
    if s.collectors.comet.enabled:
        out += [
            (f"collectors.comet.markets[{i}]", m.address)
            for i, m in enumerate(s.collectors.comet.markets)
        ]
    return out


async def _check_rpc(ck: Checks, chain: Chain, rpc: RpcClient, label: str) -> bool:
    try:
        cid = await rpc.chain_id()
    except AgentError as exc:
        ck.fail(f"{label}: unreachable ({exc})")
        return False
    return ck.expect(
        cid == chain.chain_id,
        f"{label} {redact_url(rpc.url)}: chain id {cid}, configuration expects {chain.chain_id}",
    )


async def _check_code(ck: Checks, rpc: RpcClient, label: str, address: str) -> None:
    try:
        code = await rpc.request("eth_getCode", [to_checksum_address(address), "latest"])
    except AgentError as exc:
        ck.fail(f"{label} {address}: cannot read code ({exc})")
        return
    ck.expect(code not in ("0x", "0x0", None), f"{label} {address}: no contract code on chain")


async def _check_safe(ck: Checks, s: Settings, p: Position, rpc: RpcClient) -> None:
    safe = p.account
    if p.kind != "safe" or not safe:
        return
    abi = load_abi("Safe")
    addr = to_checksum_address(safe)
    try:
        owners = list(
            abi.decode_output("getOwners", await rpc.eth_call(addr, abi.encode_hex("getOwners")))[0]
        )
        threshold = int(
            abi.decode_output(
                "getThreshold", await rpc.eth_call(addr, abi.encode_hex("getThreshold"))
            )[0]
        )
    except Exception as exc:  # an RPC error or undecodable bytes (no Safe at the address)
        ck.fail(f"position.account {safe}: not a readable Safe (getOwners/getThreshold: {exc})")
        return
    if not ck.expect(
        bool(owners) and 1 <= threshold <= len(owners),
        f"position.account {safe}: Safe threshold {threshold} with {len(owners)} owner(s)",
    ):
        return
    live = s.sinks.live
    if live.enabled and live.signer_key is not None:
        from eth_account import Account

        signer = Account.from_key(live.signer_key.get_secret_value()).address
        ck.expect(
            signer in {to_checksum_address(o) for o in owners} and threshold == 1,
            f"sinks.live: signer {signer} must be an owner of a threshold-1 Safe "
            f"(threshold {threshold}, {len(owners)} owners)",
        )


def _api_keys(ck: Checks, s: Settings) -> None:
    col = s.collectors
    for name, cfg in (("fred", col.fred), ("bls", col.bls), ("subgraph", col.subgraph)):
        if not cfg.enabled:
            continue
        key = cfg.api_key.get_secret_value() if cfg.api_key is not None else ""
        ck.expect(
            bool(key),
            f"collectors.{name}: enabled but api_key is not set "
            f"(HEDGE_AGENT_COLLECTORS__{name.upper()}__API_KEY)",
        )
    if col.subgraph.enabled:
        ck.expect(bool(col.subgraph.url), "collectors.subgraph: enabled but url is not set")
    ss = s.sinks.safe_service
    if ss.enabled and is_safe_hosted(ss.base_url):
        # Safe's own services refuse requests without a key; a self-hosted one may not need one.
        ck.expect(
            ss.api_key is not None and bool(ss.api_key.get_secret_value().strip()),
            f"sinks.safe_service.api_key: not set, required by the Safe-hosted {ss.base_url} "
            "(HEDGE_AGENT_SINKS__SAFE_SERVICE__API_KEY)",
        )


def _endpoints(s: Settings) -> list[tuple[str, str]]:
    col = s.collectors
    out = [
        (f"collectors.{n}.base_url", str(c.base_url))
        for n, c in (
            ("defillama", col.defillama),
            ("hyperliquid", col.hyperliquid),
            ("dydx", col.dydx),
            ("fred", col.fred),
            ("bls", col.bls),
            ("closes", col.closes),
        )
        if c.enabled
    ]
    if col.subgraph.enabled and col.subgraph.url:
        key = col.subgraph.api_key.get_secret_value() if col.subgraph.api_key else ""
        out.append(("collectors.subgraph.url", col.subgraph.url.replace("{api_key}", key)))
    if s.sinks.safe_service.enabled:
        out.append(("sinks.safe_service.base_url", s.sinks.safe_service.base_url))
    return out


async def _reachable(ck: Checks, session: aiohttp.ClientSession, label: str, url: str) -> None:
    """Any HTTP answer counts: the point is DNS, TLS and routing, not this path's status."""
    try:
        async with session.get(url, allow_redirects=False) as resp:
            await resp.read()
        ck.ok()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        ck.fail(f"{label} {redact_url(url)}: unreachable ({type(exc).__name__}: {exc})")


def _writable_dir(ck: Checks, label: str, directory: Path) -> None:
    blocker = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        ck.fail(f"{label} {directory}: {blocker} is a file, not a directory")
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".check-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
        ck.ok()
    except OSError as exc:
        ck.fail(f"{label} {directory}: not writable ({exc.strerror or exc})")


def _store(ck: Checks, path: str) -> None:
    p = Path(path)
    _writable_dir(ck, "agent.store_path directory", p.parent)  # the pause file goes there too
    if not p.is_file():
        return  # a new store: the directory check is the whole story
    try:
        con = sqlite3.connect(p, timeout=5)
        try:
            con.execute("BEGIN IMMEDIATE")  # takes the write lock; rolled back at once
            con.execute("ROLLBACK")
        finally:
            con.close()
        ck.ok()
    except sqlite3.Error as exc:
        ck.fail(f"agent.store_path {p}: not writable ({exc})")


def _journal(ck: Checks, path: str) -> None:
    p = Path(path)
    if p.exists():
        ck.expect(os.access(p, os.W_OK), f"agent.journal_path {p}: not writable")
    else:
        _writable_dir(ck, "agent.journal_path directory", p.parent)


def _listen(ck: Checks, listen: str) -> None:
    if not listen:
        return
    host, port = parse_listen(listen)
    try:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        ck.ok()
    except OSError as exc:
        ck.fail(f"agent.http.listen {listen}: cannot bind ({exc.strerror or exc})")


def _notify_urls(ck: Checks, s: Settings) -> None:
    if not s.sinks.notify.urls:
        return
    from agent.sinks.notify import apprise_sender

    try:
        apprise_sender(s.sinks.notify)
        ck.ok()
    except ValueError as exc:
        ck.fail(str(exc))


async def run_check(
    path: str, *, timeout_s: float = 10.0, notes: list[str] | None = None
) -> tuple[list[str], int]:
    """Problems and the number of checks passed; facts worth printing on success too (the
    guardian's balances) are appended to ``notes``."""
    ck = Checks()
    try:
        s = load_settings(path, resolve_deployment=False)
        if s.multi_chain:
            s = load_settings(path)  # [[chains]] with deployment files: filled per chain
        elif s.chain.deployment:
            s = apply_deployment(s, Path(s.chain.deployment))
    except AgentError as exc:
        return [str(exc)], 0  # nothing else can be checked without a valid configuration
    ck.ok()
    _api_keys(ck, s)
    _store(ck, s.agent.store_path)
    _journal(ck, s.agent.journal_path)
    if s.sinks.safe_tx_builder_dir:
        _writable_dir(ck, "sinks.safe_tx_builder_dir", Path(s.sinks.safe_tx_builder_dir))
    _listen(ck, s.agent.http.listen)
    _notify_urls(ck, s)
    # The probes (one attempt per URL) come from the composition root, closed with it.
    async with App(s) as app:
        probe = partial(app.probe_rpc, timeout_s=timeout_s)
        # Every chain, position by position: its chain's RPC, its contracts, its Safe.
        checked: set[str] = set()
        for position in app.positions:
            first = position.chain.name not in checked
            checked.add(position.chain.name)
            await _check_chain(ck, s, position, probe, rpcs_too=first, several=s.multi_chain)
        if s.roles.configured or any(p.role is not None for p in app.positions):
            await _check_roles(ck, s, probe)
        if s.guardian.enabled or s.guardians:
            await _check_guardian(ck, s, probe, notes if notes is not None else [])
        async with app.probe_session(timeout_s) as session:
            await asyncio.gather(*(_reachable(ck, session, lb, u) for lb, u in _endpoints(s)))
    return ck.problems, ck.passed


async def _check_guardian(ck: Checks, s: Settings, probe: Probe, notes: list[str]) -> None:
    """Each guardian: its key loads and is its account's (named, never shown); for each
    position it protects, on that position's chain, its gas and its balances with the guard
    actions they still cover (into ``notes``)."""
    from agent.ops.guardian import guarded_positions
    from agent.sinks.guardian import load_guardian_key

    for g in [g for g in (s.guardian, *s.guardians) if g.enabled]:
        try:
            load_guardian_key(g)
            ck.ok()
        except AgentError as exc:
            ck.fail(f"{g.label}: {exc}")
    every = build_parts(s).positions
    positions = guarded_positions(every)
    g = s.guardian
    if g.enabled and not any(p.guardian_config == g for p in positions):
        bare = [i for i, p in enumerate(every) if p.guardian_config == g and p.account is None]
        if bare:
            # it does protect a position, one that names no account (the chain's first)
            entry = f"positions[{bare[0]}]" if s.chains else "position"
            ck.fail(
                f"{g.label}: the position it protects names no account: set {entry}.account "
                "(the Safe whose balances and top-ups the guardian covers)"
            )
            return
        ck.fail(
            "guardian.position: name the [[positions]] entry it protects"
            + (f" ({g.position!r} is none of them)" if g.position else "")
        )
        return
    named = {p.guardian_config.name for p in positions if p.guardian_config is not None}
    for i, unused in enumerate(s.guardians):
        # funded for nothing: a position that should name it (positions[i].guardian) does not
        ck.expect(
            unused.name in named,
            f"guardians[{i}] ({unused.name}): no position names it (positions[i].guardian)",
        )
    for position in positions:
        await _check_one_guardian(ck, s, position, probe, notes)


async def _check_one_guardian(
    ck: Checks, s: Settings, position: Position, probe: Probe, notes: list[str]
) -> None:
    from agent.ops.guardian import read_guardian

    g = position.guardian_config
    assert g is not None
    ck.ok()
    url = position.chain.config.rpc_url.get_secret_value()
    if not url or position.account is None:
        return  # reported with the chain
    rpc = probe(url)
    try:
        report = await read_guardian(rpc, s, position)
    except AgentError as exc:
        ck.fail(f"{g.label}: cannot read its balances on {position.chain.name} ({exc})")
        return
    finally:
        await rpc.close()
    notes += report.lines()
    min_wei = int(g.min_gas_eth * 10**18)
    on = f" on {position.chain.name}" if s.multi_chain else ""
    ck.expect(
        report.gas_wei >= min_wei,
        f"{g.label} {g.account}{on}: {report.gas_wei / 10**18:.4f} ETH of gas, below "
        f"{g.label}.min_gas_eth {g.min_gas_eth}",
    )
    ck.expect(
        report.covers is None or report.covers > 0,
        f"{g.label} {g.account}{on}: its balances cover no guard action at the current debt",
    )


async def _check_roles(ck: Checks, s: Settings, probe: Probe) -> None:
    """Each installed protector role (one per position with a role) against its plan, one
    line per fact."""
    from agent.commands.roles import check_lines, role_positions

    try:
        positions = role_positions(s, None)
    except AgentError as exc:
        ck.fail(f"roles: {exc}")
        return
    for position in positions:
        url = position.chain.config.rpc_url.get_secret_value()
        if not url:
            continue  # reported with the chain
        label = f"roles ({position.name})" if len(positions) > 1 else "roles"
        rpc = probe(url)
        try:
            lines = await check_lines(s, position, rpc)
        except AgentError as exc:
            ck.fail(f"{label}: cannot read the role ({exc})")
            continue
        finally:
            await rpc.close()
        for line in lines:
            ck.expect(line.ok, f"{label}: {line.render()}")


async def _check_chain(
    ck: Checks, s: Settings, p: Position, probe: Probe, *, rpcs_too: bool, several: bool
) -> None:
    """One chain's RPC URLs (chain id), the configured contracts and the position's Safe.
    With several chains the labels name the chain (``chains.NAME.rpc_url``)."""
    chain = p.chain
    prefix = f"chains.{chain.name}." if several else "chain."
    rpcs: list[tuple[str, RpcClient]] = []
    url = chain.config.rpc_url.get_secret_value()
    hint = "rpc_url_env" if several else "HEDGE_AGENT_CHAIN__RPC_URL"
    if ck.expect(bool(url), f"{prefix}rpc_url: not set ({hint})"):
        rpcs.append((f"{prefix}rpc_url", probe(url)))
    if rpcs_too:
        rpcs += [
            (f"{prefix}rpc_urls[{i}]", probe(u.get_secret_value()))
            for i, u in enumerate(chain.config.rpc_urls)
        ]
    live = s.sinks.live
    if rpcs_too and live.enabled and live.private_rpc_url is not None:
        rpcs.append(("sinks.live.private_rpc_url", probe(live.private_rpc_url.get_secret_value())))
    try:
        ok = [await _check_rpc(ck, chain, rpc, label) for label, rpc in rpcs]
        if rpcs and ok[0]:
            chain_rpc = rpcs[0][1]
            await asyncio.gather(
                *(_check_code(ck, chain_rpc, label, a) for label, a in _addresses(s, p))
            )
            await _check_safe(ck, s, p, chain_rpc)
    finally:
        for _, rpc in rpcs:
            await rpc.close()
