"""The protector role's plan without a chain: the condition trees written out by hand in Roles
v2.1's encoding, the owners' batch decoded back from its calldata, the plan-versus-chain
comparison on hand-made installed states, the config's errors, and the reading of the Zodiac
contracts from the package's typechain build (the devnet tests run them for real)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from agent.commands.roles import role_position, role_spec
from agent.config import Settings
from agent.core.abi import load_abi
from agent.core.errors import ConfigError, DevnetError
from agent.core.market import MarketLayout, ReserveMeta
from agent.core.roles import (
    AllowanceState,
    Condition,
    ExecutionOptions,
    FunctionScope,
    InstalledRole,
    Operator,
    ParamType,
)
from agent.devnet import artifacts
from agent.planner.roles import (
    RoleSpec,
    Token,
    bytes32_string,
    compare,
    function_scopes,
    key_text,
    owners_batch,
    scoped_targets,
)

SAFE = "0x5aFE000000000000000000000000000000000001"
POOL = "0x9001000000000000000000000000000000000002"
ROUTER = "0x7007000000000000000000000000000000000003"
WBTC = "0x2260FAC5E5542a773Aa44fBCfeDf7C193bc2C599"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
MULTISEND = "0x9641d764fc13c8B624c04430C7356C1C7C8102e2"
UNWRAPPER = "0x93B7fCbc63ED8a3a24B59e1C3e6649D50B7427c0"
MASTERCOPY = "0x9646fDAD06d3e24444381f44362a3B0eB343D337"
FACTORY = "0x000000000000aDdB49795b0f9bA5BC298cDda236"
AGENT = "0x000000000000000000000000000000000000a9e7"
ROLE = b"protector".ljust(32, b"\0")


def _spec(**kw: object) -> RoleSpec:
    base = RoleSpec(
        chain_id=1, safe=SAFE, pool=POOL, swap_router02=ROUTER,
        collateral=Token("WBTC", WBTC, 8), debt=Token("USDC", USDC, 6),
        multisend=MULTISEND, unwrapper=UNWRAPPER, mastercopy=MASTERCOPY, factory=FACTORY,
        role_key=ROLE, agent=AGENT, allowance=250_000_000,
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def _word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


def test_condition_trees_by_hand() -> None:
    s = _spec()
    got = {
        f.label.split("(")[0]: (f.target, f.selector.hex(), f.conditions)
        for f in function_scopes(s)
    }
    # (parent, paramType, operator, compValue): Calldata=5 Matches=5 / Static=1 EqualTo=16,
    # EqualToAvatar=15, WithinAllowance=28, Pass=0 / Tuple=3
    w = lambda *t: tuple(Condition(p, ParamType(pt), Operator(op), v) for p, pt, op, v in t)  # noqa: E731
    assert got["Pool.withdraw"] == (POOL, "69328dec", w(
        (0, 5, 5, b""), (0, 1, 16, _word(WBTC)), (0, 1, 28, b"protector:wd.WBTC".ljust(32, b"\0")),
        (0, 1, 15, b""),
    ))  # fmt: skip
    # Or (a logical node: paramType None=0, Or=2) over the spender, its children after the amount
    assert got["WBTC.approve"] == (WBTC, "095ea7b3", w(
        (0, 5, 5, b""), (0, 0, 2, b""), (0, 1, 0, b""), (1, 1, 16, _word(ROUTER)), (1, 1, 16, _word(POOL)),
    ))  # fmt: skip
    assert got["USDC.approve"] == (USDC, "095ea7b3", w((0, 5, 5, b""), (0, 1, 16, _word(POOL)), (0, 1, 0, b"")))  # fmt: skip
    assert got["SwapRouter02.exactInputSingle"] == (ROUTER, "04e45aaf", w(
        (0, 5, 5, b""), (0, 3, 5, b""),
        (1, 1, 16, _word(WBTC)), (1, 1, 16, _word(USDC)), (1, 1, 0, b""), (1, 1, 15, b""),
        (1, 1, 28, b"protector:swap.WBTC".ljust(32, b"\0")), (1, 1, 0, b""), (1, 1, 0, b""),
    ))  # fmt: skip
    assert got["Pool.repay"] == (POOL, "573ade81", w(
        (0, 5, 5, b""), (0, 1, 16, _word(USDC)), (0, 1, 0, b""), (0, 1, 16, (2).to_bytes(32, "big")),
        (0, 1, 15, b""),
    ))  # fmt: skip
    assert got["Pool.supply"] == (POOL, "617ba037", w(
        (0, 5, 5, b""), (0, 1, 16, _word(WBTC)), (0, 1, 0, b""), (0, 1, 15, b""), (0, 1, 0, b""),
    ))  # fmt: skip
    assert all(f.options == ExecutionOptions.NONE for f in function_scopes(s))
    assert scoped_targets(s) == (POOL, WBTC, ROUTER, USDC)


def test_owners_batch_decodes_to_the_plan() -> None:
    s = _spec()
    txs = owners_batch(s)
    methods = [(t.to, t.decoded.method) for t in txs]
    module = s.module_address
    assert methods == [
        (FACTORY, "deployModule"), (SAFE, "enableModule"), (module, "setTransactionUnwrapper"),
        *[(module, "scopeTarget")] * 4, *[(module, "scopeFunction")] * 6,
        *[(module, "setAllowance")] * 2, (module, "assignRoles"),
    ]  # fmt: skip
    deploy = txs[0].decoded.args
    assert deploy["masterCopy"] == MASTERCOPY and int(deploy["saltNonce"]) == 0
    # setUp(abi.encode(Safe, Safe, Safe)): owner, avatar and target are the Safe
    init = load_abi("Roles").decode_call(bytes.fromhex(deploy["initializer"][2:]))
    assert init is not None and init.method == "setUp"
    assert init.args["initParams"] == "0x" + (_word(SAFE) * 3).hex()
    assert txs[1].decoded.args == {"module": module}
    assert txs[2].decoded.args == {"to": MULTISEND, "selector": "0x8d80ff0a", "adapter": UNWRAPPER}
    allowances = [t.decoded.args for t in txs if t.decoded.method == "setAllowance"]
    for a in allowances:  # 2.5 WBTC in satoshi, full, refilled to it every day at 00:00 UTC
        assert (a["balance"], a["maxRefill"], a["refill"], a["period"], a["timestamp"]) == (
            250_000_000, 250_000_000, 250_000_000, 86_400, 86_400,
        )  # fmt: skip
    assert txs[-1].decoded.args == {
        "module": AGENT,
        "roleKeys": ["0x" + ROLE.hex()],
        "memberOf": [True],
    }
    with pytest.raises(ConfigError, match="already deployed"):
        owners_batch(_spec(module=SAFE))


def _installed(s: RoleSpec) -> InstalledRole:
    full = AllowanceState(s.allowance, s.allowance, 86_400, s.allowance, 86_400)
    return InstalledRole(
        module=s.module_address, block=1, has_code=True, owner=SAFE, avatar=SAFE, target=SAFE,
        enabled_on_safe=True, unwrappers={(MULTISEND.lower(), bytes.fromhex("8d80ff0a")): UNWRAPPER},
        members=frozenset({AGENT.lower()}), agent_roles=frozenset({ROLE}),
        targets={t.lower(): "function" for t in scoped_targets(s)},
        functions={(f.target.lower(), f.selector): f for f in function_scopes(s)},
        allowances={s.withdraw_key: full, s.swap_key: replace(full, balance=0)},
    )  # fmt: skip


def test_compare_matches_and_names_each_difference() -> None:
    s = _spec()
    good = _installed(s)
    lines = compare(s, good)
    assert all(ln.ok for ln in lines) and len(lines) == 20
    borrow = bytes.fromhex("a415bcad")
    withdraw = function_scopes(s)[0]
    cases = {
        "extra function": replace(good, functions={**good.functions, (POOL.lower(), borrow): FunctionScope(POOL, borrow, ())}),
        "wildcarded withdraw": replace(good, functions={**good.functions, (POOL.lower(), withdraw.selector): replace(withdraw, conditions=())}),
        "delegatecall allowed": replace(good, functions={**good.functions, (POOL.lower(), withdraw.selector): replace(withdraw, options=ExecutionOptions.DELEGATE_CALL)}),
        "target-wide": replace(good, targets={**good.targets, POOL.lower(): "target"}),
        "other role": replace(good, agent_roles=frozenset({ROLE, b"admin".ljust(32, b"\0")})),
        "default role": replace(good, agent_default_role=ROLE),
        "not enabled": replace(good, enabled_on_safe=False),
        "other owner": replace(good, owner=AGENT),
        "no unwrapper": replace(good, unwrappers={}),
        "allowance period": replace(good, allowances={**good.allowances, s.swap_key: AllowanceState(s.allowance, s.allowance, 3600, 0, 86_400)}),
    }  # fmt: skip
    expect = {
        "extra function": "MISMATCH function 0x9001000000000000000000000000000000000002 0xa415bcad not in the plan",
        "wildcarded withdraw": "MISMATCH Pool.withdraw(asset = WBTC, amount within the daily allowance, to = Safe): allowed with any parameters (allowFunction)",
        "delegatecall allowed": "MISMATCH Pool.withdraw(asset = WBTC, amount within the daily allowance, to = Safe): execution options DELEGATE_CALL (planned NONE)",
        "target-wide": "MISMATCH target 0x9001000000000000000000000000000000000002 scoped: cleared: target",
        "other role": "MISMATCH the agent's key holds no other role: admin",
        "default role": "MISMATCH the agent's key has no default role: protector",
        "not enabled": "MISMATCH module enabled on the Safe: not enabled",
        "other owner": f"MISMATCH module owner is the Safe: {AGENT}",
        "no unwrapper": "MISMATCH MultiSendCallOnly batches unwrapped call by call: no unwrapper registered",
        "allowance period": "MISMATCH allowance protector:swap.WBTC: 2.5 WBTC per day: refill 2.5 WBTC (max 2.5) every 3600 s; balance now 0",
    }  # fmt: skip
    for name, state in cases.items():
        bad = [ln.render() for ln in compare(s, state) if not ln.ok]
        assert bad == [expect[name]], name
    gone = compare(s, replace(good, has_code=False))
    assert [ln.render() for ln in gone] == [
        f"MISMATCH module {s.module_address}: no contract at this address"
    ]


def test_keys() -> None:
    assert key_text(bytes32_string("hedge-agent-protector", "k")) == "hedge-agent-protector"
    assert key_text(b"\xff" * 32) == "0x" + "ff" * 32
    with pytest.raises(ConfigError, match="1-31 bytes"):
        bytes32_string("x" * 32, "roles.role_key")
    # a long role name: the allowance key is the keccak of the text, not a truncation
    long = _spec(role_key=bytes32_string("a" * 31, "k"))
    assert long.withdraw_key != long.swap_key and not long.withdraw_key.startswith(b"aaaa")


def _layout() -> MarketLayout:
    def r(sym: str, addr: str, dec: int) -> ReserveMeta:
        return ReserveMeta(addr, sym, dec, addr, addr, 7800, 7300)

    return MarketLayout(
        chain="c", protocol="aave-v3", pool=POOL, oracle=POOL, data_provider=POOL,
        reserves=(r("WBTC", WBTC, 8), r("USDC", USDC, 6)), accounts=(SAFE,), feeds={},
        feed_decimals={}, perps={},
    )  # fmt: skip


def _settings(**roles: object) -> Settings:
    return Settings(
        position={"account": SAFE, "multisend_call_only": MULTISEND, "topup_asset": "WBTC"},
        uniswap={"swap_router02": ROUTER},
        roles={"agent": AGENT, "mastercopy": MASTERCOPY, "module_proxy_factory": FACTORY,
               "multisend_unwrapper": UNWRAPPER, **roles},
    )  # fmt: skip


def _spec_of(s: Settings) -> RoleSpec:
    return role_spec(s, role_position(s, None), _layout())


def test_role_spec_from_config_and_its_errors() -> None:
    s = _spec_of(_settings(allowance=Decimal("2.5")))
    assert s.allowance == 250_000_000 and s.collateral.symbol == "WBTC" and s.debt.symbol == "USDC"
    with pytest.raises(ConfigError, match=r"roles.allowance \(whole WBTC per UTC day\) is not set"):
        _spec_of(_settings())
    with pytest.raises(ConfigError, match="has more than 8 decimals"):
        _spec_of(_settings(allowance=Decimal("0.000000001")))
    no_zodiac = _settings(allowance=Decimal(1), mastercopy=None, multisend_unwrapper=None)
    with pytest.raises(ConfigError, match=r"roles.mastercopy, roles.multisend_unwrapper"):
        _spec_of(no_zodiac)


def test_zodiac_contracts_from_the_typechain_build() -> None:
    roles = artifacts.zodiac_artifact("Roles")
    names = {i.get("name") for i in roles.abi}
    assert {
        "scopeFunction",
        "execTransactionWithRole",
        "setAllowance",
        "ConditionViolation",
    } <= names
    refs = roles.link_references["zodiac-roles-sdk"]
    assert set(refs) == {"Integrity", "Packer"}
    code = roles.linked({"Integrity": "0x" + "11" * 20, "Packer": "0x" + "22" * 20})
    assert "__$" not in code and "11" * 20 in code and "22" * 20 in code
    with pytest.raises(DevnetError, match="library Packer is not deployed"):
        roles.linked({"Integrity": "0x" + "11" * 20})
    assert artifacts.zodiac_artifact("ModuleProxyFactory").link_references == {}


def test_missing_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEDGE_AGENT_NODE_MODULES", str(tmp_path))
    artifacts.zodiac_artifact.cache_clear()
    try:
        with pytest.raises(
            DevnetError, match=r"zodiac-roles-sdk/build/typechain.js.*make toolchain"
        ):
            artifacts.zodiac_artifact("Roles")
    finally:
        artifacts.zodiac_artifact.cache_clear()


def test_an_event_with_the_same_signature_but_other_indexing_is_not_misread() -> None:
    """Safe's ``EnabledModule(address indexed)`` and the Roles module's ``EnabledModule(address)``
    share topic 0; each ABI decodes only its own (the fork's log decoding raised before)."""
    safe, roles = load_abi("Safe"), load_abi("Roles")
    topic = next(t for t, e in safe.events.items() if e["name"] == "EnabledModule")
    assert topic in roles.events
    module_log = ([topic], _word(AGENT))  # the module's: the address in data
    safe_log = ([topic, _word(AGENT)], b"")  # the Safe's: the address in a topic
    assert safe.decode_event(*module_log) is None
    assert roles.decode_event(*safe_log) is None
    assert roles.decode_event(*module_log).args == {"module": AGENT}  # type: ignore[union-attr]
    assert safe.decode_event(*safe_log).args == {"module": AGENT}  # type: ignore[union-attr]


def test_the_role_is_on_the_named_position(tmp_path: Path) -> None:
    """With [[positions]]: ``--position`` wins, else ``roles.position``; with neither and
    several positions, a one-line error naming them."""
    from agent.commands.roles import role_position
    from agent.config import load_settings

    body = "".join(
        f'[[chains]]\nname = "{c}"\nchain_id = {i}\nrpc_url = "http://127.0.0.1:{i}"\n'
        f'pool_addresses_provider = "{POOL}"\n'
        for i, c in ((1, "eth"), (10, "op"))
    ) + "".join(
        f'[[positions]]\nchain = "{c}"\nname = "{n}"\naccount = "{a}"\n'
        f'multisend_call_only = "{MULTISEND}"\n'
        for c, n, a in (("eth", "main", SAFE), ("op", "side", AGENT))
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text(body + f'[roles]\nagent = "{AGENT}"\nposition = "side"\n')
    s = load_settings(cfg)
    assert (role_position(s, None).account, role_position(s, None).chain.name) == (AGENT, "op")
    assert role_position(s, "main").account == SAFE
    cfg.write_text(body + f'[roles]\nagent = "{AGENT}"\n')
    with pytest.raises(
        ConfigError,
        match=r"several positions: set roles.position or give --position \(main, side\)",
    ):
        role_position(load_settings(cfg), None)
