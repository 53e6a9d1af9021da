"""The "protector" role: a Zodiac Roles v2.1 module on the Safe whose one role lets the agent's
key run the planner's deleverage batch (``agent.planner.deleverage``) and nothing else.

The role allows exactly (every other target, function or parameter reverts in the module):

* ``Pool.withdraw(asset = collateral, amount = WithinAllowance(withdraw key), to = the Safe)``;
* ``collateral.approve(spender = SwapRouter02 or Pool, any amount)`` and
  ``debt.approve(spender = Pool, any amount)`` (the approvals the batches make);
* ``SwapRouter02.exactInputSingle({tokenIn = collateral, tokenOut = debt, recipient = the Safe,
  amountIn = WithinAllowance(swap key)})``;
* ``Pool.repay(asset = debt, interestRateMode = 2 (variable), onBehalfOf = the Safe)``;
* ``Pool.supply(asset = collateral, onBehalfOf = the Safe)``: the wallet-first deleverage
  (``plan_wallet_part``) tops up from the Safe's wallet before it sells collateral. It moves the
  Safe's own collateral into its own position, so it needs no allowance.

"The Safe" is ``EqualToAvatar``: the module's avatar, whatever address it is. Both allowances
hold the configured daily amount of collateral and refill to it at every UTC midnight (period
86,400 s counted from a midnight): at most that much collateral leaves Aave, and
at most that much is swapped (spare collateral in the wallet included), per day. The batch is a
MultiSendCallOnly delegatecall; ``MultiSendUnwrapper`` makes the module check each inner call.

The owners install it once, as one Safe batch (``owners_batch``): deploy the module proxy
through ``ModuleProxyFactory`` (CREATE2: its address is known before), enable it on the Safe,
register the unwrapper, scope the targets and functions, set the allowances, assign the role to
the agent's key. ``compare`` checks a role read back from the chain against the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from agent.core.abi import load_abi
from agent.core.errors import ConfigError
from agent.core.roles import (
    MULTISEND_SELECTOR,
    AllowanceState,
    Condition,
    FunctionScope,
    InstalledRole,
    Operator,
    ParamType,
)
from agent.core.units import token_to_float
from agent.planner.repay import VARIABLE_RATE_MODE
from agent.planner.tx import PlannedTx, call_tx

ALLOWANCE_PERIOD_S = 86_400
# Refills are counted in whole periods from this timestamp: 1970-01-02T00:00Z puts every refill
# on a UTC midnight (0 would not do: setAllowance reads 0 as "now", the install's own time).
ALLOWANCE_EPOCH = ALLOWANCE_PERIOD_S
ZERO_KEY = bytes(32)
# EIP-1167-style minimal proxy ModuleProxyFactory deploys (zodiac-core ``createProxy``).
_PROXY_HEAD = bytes.fromhex("602d8060093d393df3363d3d373d3d3d363d73")
_PROXY_TAIL = bytes.fromhex("5af43d82803e903d91602b57fd5bf3")


def bytes32_string(text: str, what: str) -> bytes:
    """``encodeBytes32String``: UTF-8, at most 31 bytes, zero-padded (as the Roles app keys)."""
    raw = text.encode()
    if not raw or len(raw) > 31:
        raise ConfigError(f"{what} must be 1-31 bytes of text, got {text!r}")
    return raw.ljust(32, b"\0")


def key_text(key: bytes) -> str:
    """A bytes32 key as its text when it is printable ASCII, else hex."""
    text = key.rstrip(b"\0")
    if text and all(32 <= ch < 127 for ch in text):
        return text.decode()
    return "0x" + key.hex()


@dataclass(frozen=True)
class Token:
    symbol: str
    address: str
    decimals: int


@dataclass(frozen=True)
class RoleSpec:
    """Everything the role is made of; the same spec plans the batch and checks the chain."""

    chain_id: int
    safe: str
    pool: str
    swap_router02: str
    collateral: Token
    debt: Token
    multisend: str  # the MultiSendCallOnly the deleverage batch delegatecalls
    unwrapper: str  # MultiSendUnwrapper
    mastercopy: str  # Roles v2.1 mastercopy
    factory: str  # ModuleProxyFactory
    role_key: bytes
    agent: str  # the agent's key: the role's only member
    allowance: int  # collateral units per UTC day (withdrawn, and swapped)
    salt_nonce: int = 0
    module: str | None = None  # an installed module elsewhere than the planned proxy address

    @property
    def withdraw_key(self) -> bytes:
        return _allowance_key(self.role_key, f"wd.{self.collateral.symbol}")

    @property
    def swap_key(self) -> bytes:
        return _allowance_key(self.role_key, f"swap.{self.collateral.symbol}")

    @property
    def setup_calldata(self) -> bytes:
        """``Roles.setUp(abi.encode(owner, avatar, target))``: owner, avatar, target = the Safe."""
        init = abi_encode(["address", "address", "address"], [self.safe] * 3)
        return load_abi("Roles").encode("setUp", init)

    @property
    def module_address(self) -> str:
        return self.module or predicted_module_address(
            self.factory, self.mastercopy, self.setup_calldata, self.salt_nonce
        )


def _allowance_key(role_key: bytes, what: str) -> bytes:
    """A readable key: ``<role>:<what>`` when it fits in 32 bytes, else its keccak."""
    text = role_key.rstrip(b"\0") + b":" + what.encode()
    return text.ljust(32, b"\0") if len(text) <= 32 else keccak(text)


def predicted_module_address(factory: str, mastercopy: str, initializer: bytes, nonce: int) -> str:
    """``ModuleProxyFactory.deployModule``'s CREATE2 address:
    ``salt = keccak(keccak(initializer) ‖ saltNonce)``, code = minimal proxy to ``mastercopy``."""
    salt = keccak(keccak(initializer) + nonce.to_bytes(32, "big"))
    code = _PROXY_HEAD + bytes.fromhex(mastercopy[2:]) + _PROXY_TAIL
    raw = keccak(b"\xff" + bytes.fromhex(factory[2:]) + salt + keccak(code))[12:]
    return to_checksum_address(raw)


def _eq(parent: int, address: str) -> Condition:
    return Condition(
        parent, ParamType.STATIC, Operator.EQUAL_TO, abi_encode(["address"], [address])
    )


def _uint_eq(parent: int, value: int) -> Condition:
    return Condition(parent, ParamType.STATIC, Operator.EQUAL_TO, abi_encode(["uint256"], [value]))


def _pass(parent: int) -> Condition:
    return Condition(parent, ParamType.STATIC, Operator.PASS)


def _avatar(parent: int) -> Condition:
    return Condition(parent, ParamType.STATIC, Operator.EQUAL_TO_AVATAR)


def _allowance(parent: int, key: bytes) -> Condition:
    return Condition(parent, ParamType.STATIC, Operator.WITHIN_ALLOWANCE, key)


_ROOT = Condition(0, ParamType.CALLDATA, Operator.MATCHES)


def function_scopes(spec: RoleSpec) -> tuple[FunctionScope, ...]:
    """The six scoped functions, each a ``Matches`` over its parameters in order."""
    pool, erc20, router = load_abi("Pool"), load_abi("ERC20"), load_abi("SwapRouter02")
    c, d = spec.collateral, spec.debt
    withdraw = FunctionScope(
        target=spec.pool,
        selector=pool.selector("withdraw"),
        conditions=(_ROOT, _eq(0, c.address), _allowance(0, spec.withdraw_key), _avatar(0)),
        label=f"Pool.withdraw(asset = {c.symbol}, amount within the daily allowance, to = Safe)",
    )
    approve_c = FunctionScope(
        target=c.address,
        selector=erc20.selector("approve"),
        conditions=(
            _ROOT,
            Condition(0, ParamType.NONE, Operator.OR),  # logical nodes carry no type (v2)
            _pass(0),
            _eq(1, spec.swap_router02),
            _eq(1, spec.pool),
        ),
        label=f"{c.symbol}.approve(spender = SwapRouter02 or Pool, any amount)",
    )
    # exactInputSingle((tokenIn, tokenOut, fee, recipient, amountIn, amountOutMinimum,
    # sqrtPriceLimitX96)): one static tuple, matched field by field.
    swap = FunctionScope(
        target=spec.swap_router02,
        selector=router.selector("exactInputSingle"),
        conditions=(
            _ROOT,
            Condition(0, ParamType.TUPLE, Operator.MATCHES),
            _eq(1, c.address),
            _eq(1, d.address),
            _pass(1),
            _avatar(1),
            _allowance(1, spec.swap_key),
            _pass(1),
            _pass(1),
        ),
        label=f"SwapRouter02.exactInputSingle(tokenIn = {c.symbol}, tokenOut = {d.symbol},"
        " recipient = Safe, amountIn within the daily allowance)",
    )
    approve_d = FunctionScope(
        target=d.address,
        selector=erc20.selector("approve"),
        conditions=(_ROOT, _eq(0, spec.pool), _pass(0)),
        label=f"{d.symbol}.approve(spender = Pool, any amount)",
    )
    repay = FunctionScope(
        target=spec.pool,
        selector=pool.selector("repay"),
        conditions=(
            _ROOT,
            _eq(0, d.address),
            _pass(0),
            _uint_eq(0, VARIABLE_RATE_MODE),
            _avatar(0),
        ),
        label=f"Pool.repay(asset = {d.symbol}, any amount, rate mode 2, onBehalfOf = Safe)",
    )
    supply = FunctionScope(
        target=spec.pool,
        selector=pool.selector("supply"),
        conditions=(_ROOT, _eq(0, c.address), _pass(0), _avatar(0), _pass(0)),
        label=f"Pool.supply(asset = {c.symbol}, any amount, onBehalfOf = Safe)",
    )
    return (withdraw, approve_c, swap, approve_d, repay, supply)


def scoped_targets(spec: RoleSpec) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.target for s in function_scopes(spec)))


def allowances(spec: RoleSpec) -> dict[bytes, AllowanceState]:
    """Both allowances start full and refill to ``allowance`` at every UTC midnight."""
    a = spec.allowance
    full = AllowanceState(
        refill=a, max_refill=a, period_s=ALLOWANCE_PERIOD_S, balance=a, timestamp=ALLOWANCE_EPOCH
    )
    return {spec.withdraw_key: full, spec.swap_key: full}


def owners_batch(spec: RoleSpec) -> tuple[PlannedTx, ...]:
    """The owners' one-time batch, in execution order (one MultiSendCallOnly transaction)."""
    if spec.module is not None:
        raise ConfigError(
            "roles.module is set: the module is already deployed; the plan deploys a new one "
            "(remove roles.module to plan a fresh install)"
        )
    module, role = spec.module_address, spec.role_key
    c = spec.collateral
    amount = f"{token_to_float(spec.allowance, c.decimals):g} {c.symbol}"
    txs = [
        call_tx(
            "ModuleProxyFactory", spec.factory, "deployModule",
            spec.mastercopy, spec.setup_calldata, spec.salt_nonce,
            human=f"deploy the Roles v2.1 module {module} (owner, avatar, target = the Safe)",
        ),
        call_tx(
            "Safe", spec.safe, "enableModule", module,
            human=f"enable the Roles module {module} on the Safe",
        ),
        call_tx(
            "Roles", module, "setTransactionUnwrapper", spec.multisend, MULTISEND_SELECTOR,
            spec.unwrapper,
            human=f"let the module check each call of a MultiSendCallOnly ({spec.multisend}) batch",
        ),
    ]  # fmt: skip
    for target in scoped_targets(spec):
        txs.append(
            call_tx(
                "Roles", module, "scopeTarget", role, target,
                human=f"role {key_text(role)}: only scoped functions on {target}",
            )
        )  # fmt: skip
    for s in function_scopes(spec):
        txs.append(
            call_tx(
                "Roles", module, "scopeFunction", role, s.target, s.selector,
                [x.as_tuple() for x in s.conditions], int(s.options),
                human=f"role {key_text(role)}: allow {s.label}",
            )
        )  # fmt: skip
    for key, a in allowances(spec).items():
        txs.append(
            call_tx(
                "Roles", module, "setAllowance", key, a.balance, a.max_refill, a.refill,
                a.period_s, a.timestamp,
                human=f"allowance {key_text(key)}: {amount} per UTC day",
            )
        )  # fmt: skip
    txs.append(
        call_tx(
            "Roles", module, "assignRoles", spec.agent, [role], [True],
            human=f"assign role {key_text(role)} to the agent's key {spec.agent}",
        )
    )  # fmt: skip
    return tuple(txs)


@dataclass(frozen=True)
class Probe:
    """A call the agent's key makes through the role, and whether the role must let it pass."""

    label: str
    to: str
    data: bytes
    allowed: bool

    def calldata(self, spec: RoleSpec) -> str:
        """``execTransactionWithRole(to, 0, data, call, role, shouldRevert = true)``."""
        return load_abi("Roles").encode_hex(
            "execTransactionWithRole", self.to, 0, self.data, 0, spec.role_key, True
        )


def probes(spec: RoleSpec) -> tuple[Probe, ...]:
    """One allowed and a few forbidden one-unit calls, for trying the installed role on a fork."""
    pool, erc20 = load_abi("Pool"), load_abi("ERC20")
    c, d, safe, key = spec.collateral, spec.debt, spec.safe, spec.agent
    return (
        Probe(f"withdraw 1 unit of {c.symbol} to the Safe", spec.pool,
              pool.encode("withdraw", c.address, 1, safe), True),
        Probe(f"withdraw 1 unit of {c.symbol} to the agent's key", spec.pool,
              pool.encode("withdraw", c.address, 1, key), False),
        Probe(f"withdraw one day's allowance + 1 of {c.symbol}", spec.pool,
              pool.encode("withdraw", c.address, spec.allowance + 1, safe), False),
        Probe(f"borrow 1 unit of {d.symbol}", spec.pool,
              pool.encode("borrow", d.address, 1, VARIABLE_RATE_MODE, 0, safe), False),
        Probe(f"transfer 1 unit of {d.symbol} to the agent's key", d.address,
              erc20.encode("transfer", key, 1), False),
        Probe(f"approve the agent's key to spend {c.symbol}", c.address,
              erc20.encode("approve", key, 1), False),
    )  # fmt: skip


@dataclass(frozen=True)
class CheckLine:
    ok: bool
    what: str
    detail: str = ""

    def render(self) -> str:
        mark = "ok      " if self.ok else "MISMATCH"
        return f"{mark} {self.what}" + (f": {self.detail}" if self.detail else "")


def _same(a: str | None, b: str) -> bool:
    return a is not None and a.lower() == b.lower()


def compare(spec: RoleSpec, got: InstalledRole) -> tuple[CheckLine, ...]:
    """The installed role against the plan, one line per fact; anything the plan does not
    grant (another target, function, member or role) is a mismatch too."""
    safe, lines = spec.safe, []
    mod = got.module
    if not got.has_code:
        return (CheckLine(False, f"module {mod}", "no contract at this address"),)
    for name, val in (("owner", got.owner), ("avatar", got.avatar), ("target", got.target)):
        lines.append(CheckLine(_same(val, safe), f"module {name} is the Safe", f"{val}"))
    lines.append(
        CheckLine(
            got.enabled_on_safe,
            "module enabled on the Safe",
            "" if got.enabled_on_safe else "not enabled",
        )
    )
    unwrap = got.unwrappers.get((spec.multisend.lower(), MULTISEND_SELECTOR))
    lines.append(
        CheckLine(
            _same(unwrap, spec.unwrapper),
            "MultiSendCallOnly batches unwrapped call by call",
            f"adapter {unwrap}" if unwrap else "no unwrapper registered",
        )
    )
    members = sorted(got.members)
    lines.append(
        CheckLine(
            members == [spec.agent.lower()],
            f"role {key_text(spec.role_key)} held by the agent's key only",
            ", ".join(members) or "no member",
        )
    )
    others = sorted(key_text(k) for k in got.agent_roles - {spec.role_key})
    lines.append(CheckLine(not others, "the agent's key holds no other role", ", ".join(others)))
    lines.append(
        CheckLine(
            got.agent_default_role == ZERO_KEY,
            "the agent's key has no default role",
            "" if got.agent_default_role == ZERO_KEY else key_text(got.agent_default_role),
        )
    )
    planned_targets = {t.lower() for t in scoped_targets(spec)}
    for t in sorted(planned_targets | set(got.targets)):
        clearance = got.targets.get(t)
        if t not in planned_targets:
            lines.append(CheckLine(False, f"target {t} not in the plan", f"cleared: {clearance}"))
        else:
            lines.append(
                CheckLine(clearance == "function", f"target {t} scoped", f"cleared: {clearance}")
            )
    planned = {(s.target.lower(), s.selector): s for s in function_scopes(spec)}
    for key in sorted(planned.keys() | got.functions.keys()):
        want, have = planned.get(key), got.functions.get(key)
        where = f"{key[0]} 0x{key[1].hex()}"
        if want is None:
            assert have is not None
            lines.append(CheckLine(False, f"function {where} not in the plan", have.label))
        elif have is None:
            lines.append(CheckLine(False, want.label, "not scoped"))
        elif have.conditions != want.conditions or have.options != want.options:
            lines.append(CheckLine(False, want.label, _diff(want, have)))
        else:
            lines.append(CheckLine(True, want.label))
    c = spec.collateral
    for k, want_a in allowances(spec).items():
        a = got.allowances.get(k)
        if a is None:
            lines.append(CheckLine(False, f"allowance {key_text(k)}", "not set"))
            continue
        fits = (a.refill, a.max_refill, a.period_s) == (
            want_a.refill, want_a.max_refill, want_a.period_s,
        )  # fmt: skip
        human = (
            f"refill {token_to_float(a.refill, c.decimals):g} {c.symbol} (max"
            f" {token_to_float(a.max_refill, c.decimals):g}) every {a.period_s} s; balance now"
            f" {token_to_float(a.balance, c.decimals):g}"
        )
        lines.append(
            CheckLine(
                fits,
                f"allowance {key_text(k)}: {token_to_float(spec.allowance, c.decimals):g}"
                f" {c.symbol} per day",
                human,
            )
        )
    return tuple(lines)


def _diff(want: FunctionScope, have: FunctionScope) -> str:
    if have.options != want.options:
        return f"execution options {have.options.name} (planned {want.options.name})"
    if not have.conditions:
        return "allowed with any parameters (allowFunction)"
    if len(have.conditions) != len(want.conditions):
        return f"{len(have.conditions)} conditions (planned {len(want.conditions)})"
    for i, (w, h) in enumerate(zip(want.conditions, have.conditions, strict=True)):
        if w != h:
            return f"condition {i}: {h.describe()} (planned {w.describe()})"
    return "differs"  # pragma: no cover - equal trees do not reach here
