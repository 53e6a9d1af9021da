"""Read a Zodiac Roles v2.1 module and one role back from the chain (``hedge-agent roles check``).

Roles v2 keeps a role's scopes packed in contract code it writes (SSTORE2) and has no view that
returns them, but every change by its owner emits an event carrying the full arguments
(``ScopeFunction`` holds the whole ``ConditionFlat`` list). So the role is rebuilt by replaying
the module's events in order from ``from_block``; the views that exist are read directly at the
same block (``owner``/``avatar``/``target``, ``allowances``, ``unwrappers``, ``defaultRoles``,
``isModuleEnabled`` on the Safe). Logs are read in chunks (a provider's range limit halves them).
"""

from __future__ import annotations

from typing import Any

from eth_utils.address import to_checksum_address

from agent.collectors.liquidations import get_logs
from agent.core.abi import load_abi
from agent.core.errors import MalformedResponse
from agent.core.roles import (
    AllowanceState,
    Condition,
    ExecutionOptions,
    FunctionScope,
    InstalledRole,
    Operator,
    ParamType,
)
from agent.core.rpc import RpcClient

DEFAULT_CHUNK_BLOCKS = 50_000
_TARGET_CLEARANCE = {"ScopeTarget": "function", "AllowTarget": "target"}


async def read_installed_role(
    rpc: RpcClient,
    *,
    module: str,
    safe: str,
    role_key: bytes,
    agent: str,
    allowance_keys: tuple[bytes, ...],
    unwrap_targets: tuple[tuple[str, bytes], ...],
    from_block: int = 0,
    block: int | None = None,
    chunk_blocks: int = DEFAULT_CHUNK_BLOCKS,
) -> InstalledRole:
    """The module's state at ``block`` (default: the latest) for ``role_key`` and ``agent``."""
    roles = load_abi("Roles")
    at = block if block is not None else await rpc.block_number()
    code = await rpc.request("eth_getCode", [module, hex(at)])
    if not isinstance(code, str) or code in ("0x", "0x0", ""):
        return InstalledRole(module, at, False, None, None, None, False)

    async def view(fn: str, *args: Any) -> tuple[Any, ...]:
        return roles.decode_output(fn, await rpc.eth_call(module, roles.encode_hex(fn, *args), at))

    (owner,), (avatar,), (target,) = await view("owner"), await view("avatar"), await view("target")
    safe_abi = load_abi("Safe")
    (enabled,) = safe_abi.decode_output(
        "isModuleEnabled",
        await rpc.eth_call(safe, safe_abi.encode_hex("isModuleEnabled", module), at),
    )
    (default,) = await view("defaultRoles", agent)
    allowances: dict[bytes, AllowanceState] = {}
    for k in allowance_keys:
        refill, max_refill, period, balance, ts = await view("allowances", k)
        if (refill, max_refill, period, balance, ts) != (0, 0, 0, 0, 0):
            allowances[k] = AllowanceState(
                int(refill), int(max_refill), int(period), int(balance), int(ts)
            )
    unwrappers: dict[tuple[str, bytes], str] = {}
    for to, selector in unwrap_targets:
        # Roles keys an adapter by bytes32(abi.encodePacked(to, selector)) (address then bytes4).
        (adapter,) = await view("unwrappers", unwrapper_key(to, selector))
        if int(adapter, 16):
            unwrappers[(to.lower(), selector)] = str(adapter)

    logs = await get_logs(rpc, module, [], from_block, at, chunk_blocks=chunk_blocks)
    members: dict[str, set[bytes]] = {}  # module (key) -> roles it holds
    targets: dict[str, str] = {}
    functions: dict[tuple[str, bytes], FunctionScope] = {}
    for entry in sorted(logs.logs, key=_log_order):
        ev = _decode(roles, entry)
        if ev is None:
            continue
        name, a = ev
        if name == "AssignRoles":
            held = members.setdefault(str(a["module"]).lower(), set())
            for key, member in zip(a["roleKeys"], a["memberOf"], strict=True):
                k = _b(key)
                (held.add if member else held.discard)(k)
            continue
        if "roleKey" not in a or _b(a["roleKey"]) != role_key:
            continue  # another role, or a module-level event
        t = str(a.get("targetAddress", "")).lower()
        if name in _TARGET_CLEARANCE:
            # scopeTarget replaces a target-wide allowTarget (and vice versa); scoped functions
            # stay stored either way, and apply only while the target is scoped.
            targets[t] = _TARGET_CLEARANCE[name]
        elif name == "RevokeTarget":
            targets.pop(t, None)
        elif name == "ScopeFunction":
            conds = tuple(
                Condition(int(p), ParamType(int(pt)), Operator(int(op)), _b(cv))
                for p, pt, op, cv in _tuples(a["conditions"])
            )
            sel = _b(a["selector"])
            functions[(t, sel)] = FunctionScope(
                to_checksum_address(t), sel, conds, ExecutionOptions(int(a["options"])),
                label="scopeFunction",
            )  # fmt: skip
        elif name == "AllowFunction":
            sel = _b(a["selector"])
            functions[(t, sel)] = FunctionScope(
                to_checksum_address(t), sel, (), ExecutionOptions(int(a["options"])),
                label="allowFunction (any parameters)",
            )  # fmt: skip
        elif name == "RevokeFunction":
            functions.pop((t, _b(a["selector"])), None)
    return InstalledRole(
        module=to_checksum_address(module),
        block=at,
        has_code=True,
        owner=str(owner),
        avatar=str(avatar),
        target=str(target),
        enabled_on_safe=bool(enabled),
        unwrappers=unwrappers,
        members=frozenset(m for m, held in members.items() if role_key in held),
        agent_roles=frozenset(members.get(agent.lower(), set())),
        agent_default_role=_b(default),
        targets=targets,
        functions=functions,
        allowances=allowances,
    )


def _log_order(entry: dict[str, Any]) -> tuple[int, int]:
    return int(entry.get("blockNumber", "0x0"), 16), int(entry.get("logIndex", "0x0"), 16)


def _decode(roles: Any, entry: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    try:
        topics = [bytes.fromhex(str(t)[2:]) for t in entry["topics"]]
        data = bytes.fromhex(str(entry["data"])[2:])
    except (KeyError, ValueError, TypeError) as exc:
        raise MalformedResponse("rpc", f"eth_getLogs entry is malformed: {exc}") from None
    ev = roles.decode_event(topics, data)
    return None if ev is None else (ev.method, ev.args)


def _b(v: Any) -> bytes:
    """Decoded bytes/bytesN come back as ``0x`` hex (``agent.core.abi``)."""
    return bytes.fromhex(v[2:]) if isinstance(v, str) else bytes(v)


def _tuples(conds: Any) -> list[tuple[Any, Any, Any, Any]]:
    out = []
    for c in conds:
        out.append(tuple(c.values()) if isinstance(c, dict) else tuple(c))
    return out


def unwrapper_key(to: str, selector: bytes) -> bytes:
    """Roles' ``unwrappers`` key: ``bytes32(abi.encodePacked(to, selector))``, right-padded."""
    return bytes.fromhex(to[2:]) + selector + bytes(8)
