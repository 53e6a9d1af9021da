"""``hedge-agent roles plan`` and ``hedge-agent roles check``: install and verify the
"protector" role (Zodiac Roles v2.1, ``agent.planner.roles``) on a position's Safe.

* ``plan`` writes the owners' one-time batch as a Safe Transaction Builder file and a readable
  listing, simulates it on a fork of the chain (as the owners will execute it) and, on the fork,
  reads the installed role back and checks it against the plan. Nothing is sent.
* ``check`` reads the installed role from the chain and prints, line by line, whether it matches
  the plan (exit 1 on any mismatch). ``hedge-agent check`` runs the same lines with ``[roles]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.errors import ConfigError

if TYPE_CHECKING:
    from agent.config import RolesConfig, Settings
    from agent.core.market import MarketLayout
    from agent.core.roles import InstalledRole
    from agent.core.rpc import RpcClient
    from agent.pipeline.parts import Position
    from agent.planner.roles import CheckLine, Probe, RoleSpec
    from agent.sinks.autonomous import RoleTarget


def role_position(settings: Settings, name: str | None) -> Position:
    """The position the role is on: ``--position``, else ``roles.position``, else the one
    position with a role (its own ``[positions.roles]``, or the one configured position)."""
    from agent.pipeline.parts import build_parts

    parts = build_parts(settings)
    chosen = name or settings.roles.position
    positions = parts.positions
    if chosen is None and len(positions) > 1:
        with_role = [p for p in positions if p.role is not None]
        if len(with_role) == 1:
            return with_role[0]
        names = ", ".join(p.name for p in positions)
        raise ConfigError(
            f"{settings.origin}: several positions: set roles.position or give --position ({names})"
        )
    try:
        return parts.position(chosen)
    except ConfigError as exc:
        raise ConfigError(f"{settings.origin}: {exc}") from None


def role_positions(settings: Settings, name: str | None) -> list[Position]:
    """``roles check``'s positions: the one ``--position`` names, else every position with a
    role (else the one :func:`role_position` picks, whose errors say what is missing)."""
    from agent.pipeline.parts import build_parts

    if name is None:
        with_role = [p for p in build_parts(settings).positions if p.role is not None]
        if with_role:
            return with_role
    return [role_position(settings, name)]


def role_config(s: Settings, p: Position) -> RolesConfig:
    """Position ``p``'s role: its own, else ``[roles]`` (``--position`` may point ``[roles]``
    at any position, as before several roles)."""
    if p.role is not None:
        return p.role
    if s.roles.configured:
        return s.roles
    raise ConfigError(
        f"{s.origin}: position {p.name or p.account}: no role ([roles], or the position's own "
        "[positions.roles] table)"
    )


def _where(s: Settings, p: Position) -> str:
    """How messages name the role's settings: ``roles`` or ``positions[NAME].roles``."""
    return "roles" if p.role is None or p.role == s.roles else f"positions[{p.name}].roles"


def _zodiac_addresses(s: Settings, p: Position) -> dict[str, str]:
    """The Zodiac addresses: configured, else from the devnet deployment file."""
    r, deployment, at = role_config(s, p), p.chain.config.deployment, _where(s, p)
    out = {
        "roles_mastercopy": r.mastercopy,
        "module_proxy_factory": r.module_proxy_factory,
        "multisend_unwrapper": r.multisend_unwrapper,
    }
    if None in out.values() and deployment:
        try:
            dep = json.loads(Path(deployment).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{deployment}: cannot read the deployment: {exc}") from None
        z = dep.get("zodiac") or {}
        out = {k: v or z.get(k) for k, v in out.items()}
    missing = [k for k, v in out.items() if not v]
    if missing:
        names = {
            "roles_mastercopy": "mastercopy",
            "module_proxy_factory": "module_proxy_factory",
            "multisend_unwrapper": "multisend_unwrapper",
        }
        raise ConfigError(
            f"{s.origin}: [roles] needs the chain's Zodiac Roles v2.1 addresses: "
            + ", ".join(f"{at}.{names[k]}" for k in missing)
        )
    return {k: str(v) for k, v in out.items()}


def role_spec(s: Settings, p: Position, layout: MarketLayout) -> RoleSpec:
    """The role of position ``p``, from ``[roles]``, the position and its chain's market."""
    from eth_utils.address import to_checksum_address

    from agent.planner.roles import RoleSpec, Token, bytes32_string

    r, uniswap, at = role_config(s, p), p.chain.dex, _where(s, p)
    if r.agent is None:
        raise ConfigError(f"{s.origin}: {at}.agent (the agent's key address) is not set")
    if r.allowance is None:
        raise ConfigError(
            f"{s.origin}: {at}.allowance (whole {p.topup_asset} per UTC day) is not set"
        )
    if p.kind != "safe" or not p.account:
        raise ConfigError(f"{s.origin}: the role is installed on a Safe: position.account")
    if not p.repay_asset:
        raise ConfigError(f"{s.origin}: position.repay_asset (the debt a deleverage repays)")
    if not p.multisend_call_only:
        raise ConfigError(f"{s.origin}: position.multisend_call_only is not set")
    if not uniswap.swap_router02:
        raise ConfigError(f"{s.origin}: uniswap.swap_router02 (the deleverage's DEX) is not set")
    z = _zodiac_addresses(s, p)
    c, d = layout.reserve(p.topup_asset), layout.reserve(p.repay_asset)
    units = r.allowance * Decimal(10) ** c.decimals
    if units != units.to_integral_value():
        raise ConfigError(
            f"{s.origin}: {at}.allowance {r.allowance} has more than {c.decimals} decimals"
        )
    return RoleSpec(
        chain_id=p.chain.chain_id,
        safe=to_checksum_address(p.account),
        pool=to_checksum_address(layout.pool),
        swap_router02=to_checksum_address(uniswap.swap_router02),
        collateral=Token(c.symbol, to_checksum_address(c.asset), c.decimals),
        debt=Token(d.symbol, to_checksum_address(d.asset), d.decimals),
        multisend=to_checksum_address(p.multisend_call_only),
        unwrapper=to_checksum_address(z["multisend_unwrapper"]),
        mastercopy=to_checksum_address(z["roles_mastercopy"]),
        factory=to_checksum_address(z["module_proxy_factory"]),
        role_key=bytes32_string(r.role_key, f"{at}.role_key"),
        agent=to_checksum_address(r.agent),
        allowance=int(units),
        salt_nonce=r.salt_nonce,
        module=r.module,
    )


def role_module(s: Settings, p: Position) -> RoleTarget:
    """Where the role member sends: the module on the role's Safe (position ``p``'s;
    ``roles.module``, else the address ``roles plan`` installs it at) and the role key."""
    from eth_abi.abi import encode as abi_encode
    from eth_utils.address import to_checksum_address

    from agent.core.abi import load_abi
    from agent.planner.roles import bytes32_string, predicted_module_address
    from agent.sinks.autonomous import RoleTarget

    r, at = role_config(s, p), _where(s, p)
    if not p.account:
        raise ConfigError(f"{s.origin}: the role is on a Safe: position.account")
    safe = to_checksum_address(p.account)
    module = r.module
    if module is None:
        z = _zodiac_addresses(s, p)
        init = load_abi("Roles").encode("setUp", abi_encode(["address"] * 3, [safe] * 3))
        module = predicted_module_address(
            z["module_proxy_factory"], z["roles_mastercopy"], init, r.salt_nonce
        )
    return RoleTarget(
        safe,
        to_checksum_address(module),
        bytes32_string(r.role_key, f"{at}.role_key"),
        key=r.key or s.sinks.autonomous.role_key,
        key_label=f"{at}.key" if r.key is not None else "sinks.autonomous.role_key",
        agent=to_checksum_address(r.agent) if r.agent else None,
    )


async def read_role(rpc: RpcClient, spec: RoleSpec, *, from_block: int = 0) -> InstalledRole:
    from agent.collectors.roles import read_installed_role
    from agent.core.roles import MULTISEND_SELECTOR

    return await read_installed_role(
        rpc,
        module=spec.module_address,
        safe=spec.safe,
        role_key=spec.role_key,
        agent=spec.agent,
        allowance_keys=(spec.withdraw_key, spec.swap_key),
        unwrap_targets=((spec.multisend, MULTISEND_SELECTOR),),
        from_block=from_block,
    )


async def check_lines(s: Settings, p: Position, rpc: RpcClient) -> tuple[CheckLine, ...]:
    """``roles check``'s lines for position ``p`` (its chain's ``rpc``)."""
    from agent.collectors.onchain import discover
    from agent.planner.roles import compare

    layout = await discover(rpc, p.chain.config)
    spec = role_spec(s, p, layout)
    return compare(spec, await read_role(rpc, spec, from_block=role_config(s, p).from_block))


def _listing(spec: RoleSpec, txs: Any, batch_path: Path) -> str:
    from agent.core.units import token_to_float
    from agent.planner.roles import function_scopes, key_text

    c = spec.collateral
    lines = [
        f"Zodiac Roles v2.1 'protector' role for Safe {spec.safe} (chain {spec.chain_id})",
        f"module (CREATE2, ModuleProxyFactory {spec.factory}): {spec.module_address}",
        f"role {key_text(spec.role_key)} -> the agent's key {spec.agent}",
        f"daily allowance: {token_to_float(spec.allowance, c.decimals):g} {c.symbol} withdrawn"
        f" and {token_to_float(spec.allowance, c.decimals):g} {c.symbol} swapped per UTC day",
        "",
        "The key may call exactly:",
        *(f"  - {f.label}" for f in function_scopes(spec)),
        "  (as single calls or inside one MultiSendCallOnly batch; nothing else, no value, no",
        "   delegatecall of its own)",
        "",
        f"The owners' batch ({len(txs)} calls, one Safe transaction: {batch_path.name}):",
    ]
    for i, t in enumerate(txs, 1):
        lines.append(f"  {i:2d}. {t.human}")
        lines.append(f"      to {t.to}: {t.decoded.contract}.{t.decoded.method}")
    lines += [
        "",
        "After the owners executed it: set roles.module only if it was deployed elsewhere, and",
        "roles.from_block to a block at or before the execution (`roles check` reads the module's",
        "events from there), then run `hedge-agent roles check`.",
        "Revoke: the owners call, from the Safe, disableModule(prevModule, module) on the Safe",
        "(removes the module: the key can do nothing), or assignRoles(agent, [role], [false]) on",
        "the module (keeps the module, removes the key).",
    ]
    return "\n".join(lines) + "\n"


async def _allowance_hint(rpc: RpcClient, s: Settings, p: Position, layout: MarketLayout) -> str:
    """The missing allowance's error, with the session cap's share of today's collateral."""
    from agent.core.abi import load_abi

    c = layout.reserve(p.topup_asset)
    erc20 = load_abi("ERC20")
    (held,) = erc20.decode_output(
        "balanceOf",
        await rpc.eth_call(c.a_token, erc20.encode_hex("balanceOf", p.account)),
    )
    frac = s.policy.session_cap_fraction
    whole = Decimal(int(held)) / Decimal(10) ** c.decimals
    cap = (whole * frac).quantize(Decimal(1).scaleb(-c.decimals), rounding="ROUND_DOWN")
    return (
        f"{s.origin}: {_where(s, p)}.allowance (whole {c.symbol} per UTC day) is not set; the session"
        f" cap's share (policy.session_cap_fraction, {frac:%}) of the position's {whole:f}"
        f' {c.symbol} collateral is: allowance = "{cap.normalize():f}"'
    )


async def _try(rpc: RpcClient, spec: RoleSpec, probe: Probe) -> str:
    """``allowed``, or why the call was refused (the role's status, else the revert)."""
    from agent.core.abi import decode_revert, load_abi, revert_data_from_rpc
    from agent.core.errors import RpcError
    from agent.core.roles import Status

    call = {"from": spec.agent, "to": spec.module_address, "data": probe.calldata(spec)}
    try:
        await rpc.request("eth_call", [call, "latest"])
        return "allowed"
    except RpcError as exc:
        data = revert_data_from_rpc(exc.data)
    roles = load_abi("Roles")
    violation = next(k for k, e in roles.errors.items() if e["name"] == "ConditionViolation")
    if data and data[:4] == violation:
        status = int.from_bytes(data[4:36], "big")
        name = Status(status).name if status in Status._value2member_map_ else str(status)
        return f"refused by the role ({name})"
    return "reverted: " + decode_revert(data or b"", [roles])


def _cmd_plan(args: argparse.Namespace) -> int:
    from agent.app import App
    from agent.collectors.onchain import discover
    from agent.config import load_settings
    from agent.planner.roles import compare, key_text, owners_batch, probes
    from agent.planner.safe import build_safe_tx
    from agent.sinks.safe_tx_builder import write_batch_file

    s = load_settings(args.config)
    p = role_position(s, args.position)
    out_dir = Path(args.out or s.sinks.safe_tx_builder_dir or "var/roles")

    async def plan() -> int:
        async with App(s) as app:
            rpc = app.rpc(p.chain)
            layout = await discover(rpc, p.chain.config)
            if role_config(s, p).allowance is None and p.account:
                raise ConfigError(await _allowance_hint(rpc, s, p, layout))
            spec = role_spec(s, p, layout)
            code = await rpc.request("eth_getCode", [spec.module_address, "latest"])
            if code not in ("0x", "0x0", None):
                raise ConfigError(
                    f"a module is already installed at {spec.module_address} (this Safe, role"
                    " and salt): run `hedge-agent roles check`; for a second module set"
                    " roles.salt_nonce"
                )
            txs = owners_batch(spec)
            record = {
                "id": f"roles-{key_text(spec.role_key)}",
                "action": "roles_install",
                "chain_id": spec.chain_id,
                "account": spec.safe,
                "created_at": datetime.now(UTC).isoformat(),
                "idempotency_key": spec.module_address,
                "explanation": [
                    f"install the Zodiac Roles v2.1 protector role for {spec.agent}",
                ],
                "transactions": [t.as_dict() for t in txs],
            }
            path = write_batch_file(record, out_dir)
            text = _listing(spec, txs, path)
            listing = path.with_suffix(".txt")
            listing.write_text(text, encoding="utf-8")
            print(text)
            print(f"Safe Transaction Builder file: {path}\nlisting: {listing}\n")
            sim = app.simulator(p.chain, layout)
            if sim is None:
                print("simulation: off (simulator.enabled = false)")
                return 0
            head = await rpc.block_number()
            safe_tx = build_safe_tx(spec.safe, spec.multisend, txs)
            async with sim.sequence(head) as fork:
                res = await sim.simulate_safe(head, safe_tx, spec.safe, "roles install", inner=txs)
                gas = res.transactions[-1].gas_used if res.transactions else None
                if not res.success:
                    print(f"simulation on a fork at block {res.fork_block}: FAILED ({res.error})")
                    return 1
                print(
                    f"simulation on a fork at block {res.fork_block}: executed by the owners,"
                    f" gas {gas}"
                )
                lines = compare(spec, await read_role(fork, spec, from_block=res.fork_block))
                tried = [(pr, await _try(fork, spec, pr)) for pr in probes(spec)]
            bad = [ln for ln in lines if not ln.ok]
            print(f"the role as installed on the fork, read back ({len(lines)} checks):")
            for ln in lines:
                print("  " + ln.render())
            print("calls by the agent's key through the role, on the fork:")
            wrong = 0
            for pr, outcome in tried:
                as_planned = (outcome == "allowed") == pr.allowed
                wrong += not as_planned
                print(f"  {'ok      ' if as_planned else 'MISMATCH'} {pr.label}: {outcome}")
            return 1 if bad or wrong else 0

    return asyncio.run(plan())


def _cmd_check(args: argparse.Namespace) -> int:
    from agent.app import App
    from agent.config import load_settings

    s = load_settings(args.config)
    positions = role_positions(s, args.position)

    async def check() -> int:
        bad = 0
        async with App(s) as app:
            for p in positions:
                lines = await check_lines(s, p, app.rpc(p.chain))
                if len(positions) > 1:
                    print(f"position {p.name} (chain {p.chain.name}, Safe {p.account}):")
                for ln in lines:
                    print(ln.render())
                wrong = sum(not ln.ok for ln in lines)
                print(
                    f"{len(lines) - wrong}/{len(lines)} match the plan"
                    + (f"; {wrong} MISMATCH" if wrong else "")
                )
                bad += wrong
        return 1 if bad else 0

    return asyncio.run(check())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "roles", help="the Zodiac Roles v2 protector role: plan its install, check it"
    )
    roles_sub = p.add_subparsers(dest="roles_command", required=True)
    a = roles_sub.add_parser(
        "plan",
        help="write the owners' one-time batch (Safe Transaction Builder file + listing), "
        "simulated on a fork",
    )
    a.add_argument("--config", required=True, help="TOML configuration file")
    a.add_argument("--position", help="with [[positions]]: the position's name (its Safe)")
    a.add_argument("--out", help="directory for the files (default: sinks.safe_tx_builder_dir)")
    a.set_defaults(handler=_cmd_plan)
    c = roles_sub.add_parser(
        "check", help="read the installed role from the chain and compare it with the plan"
    )
    c.add_argument("--config", required=True, help="TOML configuration file")
    c.add_argument(
        "--position", help="with [[positions]]: only this position's role (default: every role)"
    )
    c.set_defaults(handler=_cmd_check)
