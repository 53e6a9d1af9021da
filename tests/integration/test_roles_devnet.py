"""The "protector" role on the devnet, against the real Zodiac Roles v2.1 contracts from
``zodiac-roles-sdk`` (mastercopy with its Integrity and Packer libraries, ModuleProxyFactory,
MultiSendUnwrapper), installed on the empty-wallet Safe (WBTC collateral, USDC debt) by its
owners' batch, exactly as ``agent.planner.roles.owners_batch`` plans it.

Each forbidden call is sent as ``execTransactionWithRole`` from the agent's key and must revert
in the module with the ``ConditionViolation`` status that names why (so a revert from Aave or
the token does not count); where the call has an allowed twin, the twin is shown to pass."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from web3.logs import DISCARD

from agent.cli import main
from agent.collectors.onchain import discover, read_snapshot
from agent.commands.roles import read_role
from agent.config import chain_config_from_deployment
from agent.core.abi import decode_revert, load_abi
from agent.core.anvil import AnvilProcess
from agent.core.rpc import RpcClient
from agent.core.units import WAD
from agent.devnet.artifacts import zodiac_artifact
from agent.devnet.chain import Chain
from agent.devnet.deploy import roles_runtime_code, write_deployment
from agent.devnet.safe import Call, exec_batch, exec_transaction
from agent.planner.deleverage import plan_deleverage_onchain, plan_wallet_part
from agent.planner.roles import (
    ALLOWANCE_PERIOD_S,
    CheckLine,
    RoleSpec,
    Token,
    bytes32_string,
    compare,
    owners_batch,
    predicted_module_address,
)
from agent.planner.safe import SafeTx, build_safe_tx
from agent.planner.tx import call_tx
from agent.planner.uniswap import UniswapVenue

pytestmark = pytest.mark.integration

AGENT = to_checksum_address("0x000000000000000000000000000000000000a9e7")
STRANGER = to_checksum_address("0x000000000000000000000000000000000000dead")
ROLE = "hedge-agent-protector"
ALLOWANCE_WBTC = 25 * 10**7  # 2.5 WBTC a day: 25% of the lean Safe's 10 WBTC collateral
# ConditionViolation statuses (Roles v2.1 ``Status``).
TARGET_NOT_ALLOWED, FUNCTION_NOT_ALLOWED, PARAMETER_NOT_ALLOWED = 2, 3, 7
ALLOWANCE_EXCEEDED = 17
OR_VIOLATION = 5


def _spec(dep: dict[str, Any], allowance: int = ALLOWANCE_WBTC) -> RoleSpec:
    t, z = dep["tokens"], dep["zodiac"]
    return RoleSpec(
        chain_id=int(dep["chain_id"]),
        safe=dep["safe_lean"]["address"],
        pool=dep["aave"]["pool"],
        swap_router02=dep["uniswap"]["swap_router02"],
        collateral=Token("WBTC", t["WBTC"]["address"], 8),
        debt=Token("USDC", t["USDC"]["address"], 6),
        multisend=dep["safe"]["multisend_call_only"],
        unwrapper=z["multisend_unwrapper"],
        mastercopy=z["roles_mastercopy"],
        factory=z["module_proxy_factory"],
        role_key=bytes32_string(ROLE, "role"),
        agent=AGENT,
        allowance=allowance,
    )


def _install(chain: Chain, dep: dict[str, Any], spec: RoleSpec) -> None:
    s = dep["safe_lean"]
    calls = [Call(t.to, bytes.fromhex(t.data[2:])) for t in owners_batch(spec)]
    exec_batch(chain, s["address"], s["owners"][0], s["multisend_call_only"], calls)
    chain.impersonate(AGENT)
    chain.set_balance(AGENT, 10 * WAD)


def _owner_call(chain: Chain, dep: dict[str, Any], to: str, data: bytes) -> None:
    s = dep["safe_lean"]
    exec_transaction(chain, s["address"], s["owners"][0], to, data)


def _as_agent(spec: RoleSpec, to: str, data: bytes, operation: int = 0) -> dict[str, Any]:
    roles = load_abi("Roles")
    payload = roles.encode_hex(
        "execTransactionWithRole", to, 0, data, operation, spec.role_key, True
    )
    return {"from": AGENT, "to": spec.module_address, "data": payload}


def _outcome(chain: Chain, spec: RoleSpec, to: str, data: bytes, operation: int = 0) -> str:
    """``ok`` or the decoded revert of the call made by the agent through the role."""
    resp = chain.w3.provider.make_request(
        "eth_call",  # type: ignore[arg-type]
        [_as_agent(spec, to, data, operation), "latest"],
    )
    if "error" not in resp:
        return "ok"
    err = resp["error"]
    raw = err.get("data") if isinstance(err, dict) else None
    if isinstance(raw, dict):
        raw = raw.get("data")
    if not isinstance(raw, str):
        return f"error {err}"
    return decode_revert(bytes.fromhex(raw[2:]), [load_abi("Roles"), load_abi("Pool")])


def _violation(status: int) -> str:
    return f"Roles.ConditionViolation(status={status},"


def _send_as_agent(chain: Chain, spec: RoleSpec, to: str, data: bytes, op: int = 0) -> Any:
    tx = _as_agent(spec, to, data, op)
    tx_hash = chain.w3.eth.send_transaction(tx)  # type: ignore[arg-type]
    receipt = chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.01)
    assert receipt["status"] == 1
    return receipt


def _allowance_balance(chain: Chain, spec: RoleSpec, key: bytes) -> tuple[int, ...]:
    roles = chain.contract(spec.module_address, zodiac_artifact("Roles").abi)
    return tuple(roles.functions.allowances(key).call())


@pytest.fixture
async def rpc(devnet_url: str) -> AsyncIterator[RpcClient]:
    async with RpcClient(devnet_url, source="rpc:devnet") as client:
        yield client


@pytest.fixture
def installed(devnet: dict[str, Any], devnet_chain: Chain) -> RoleSpec:
    spec = _spec(devnet)
    _install(devnet_chain, devnet, spec)
    return spec


# -- the contracts -------------------------------------------------------------------------


def test_roles_runtime_code_is_what_a_create_leaves(devnet: dict[str, Any]) -> None:
    """The devnet places Roles' runtime code with anvil_setCode (the package's build is over
    EIP-170's size limit); on an anvil without the limit, a real CREATE of the same linked
    creation code leaves byte for byte the same code."""
    anvil = AnvilProcess(extra_args=["--disable-code-size-limit"])
    anvil.start()
    try:
        chain = Chain(anvil.url)
        d = chain.accounts()[0]
        libs = {
            "Integrity": chain.deploy(zodiac_artifact("Integrity"), sender=d).address,
            "Packer": chain.deploy(zodiac_artifact("Packer"), sender=d).address,
        }
        one = "0x0000000000000000000000000000000000000001"
        roles = chain.deploy(zodiac_artifact("Roles"), one, one, one, sender=d, libraries=libs)
        created = chain.rpc("eth_getCode", [roles.address, "latest"])
        assert created == roles_runtime_code(libs)
        assert len(created) // 2 - 1 == 25_286 > 24_576
    finally:
        anvil.stop()
    # and the devnet's mastercopy holds the same code, linked to the devnet's libraries
    z = devnet["zodiac"]
    code = Chain(devnet["rpc_url"]).rpc("eth_getCode", [z["roles_mastercopy"], "latest"])
    assert code == roles_runtime_code({"Integrity": z["integrity"], "Packer": z["packer"]})


def test_owners_batch_installs_the_module_at_the_predicted_address(
    devnet: dict[str, Any], devnet_chain: Chain, installed: RoleSpec
) -> None:
    spec = installed
    module = spec.module_address
    # CREATE2 by hand: the proxy's address does not depend on our helper's formula only
    factory = devnet_chain.contract(spec.factory, zodiac_artifact("ModuleProxyFactory").abi)
    logs = factory.events.ModuleProxyCreation().get_logs(from_block=0)
    assert [to_checksum_address(e["args"]["proxy"]) for e in logs] == [module]
    assert predicted_module_address(spec.factory, spec.mastercopy, spec.setup_calldata, 1) != module
    roles = devnet_chain.contract(module, zodiac_artifact("Roles").abi)
    assert roles.functions.owner().call() == spec.safe
    assert roles.functions.avatar().call() == spec.safe
    safe = devnet_chain.contract(spec.safe, load_abi("Safe").abi)
    assert safe.functions.isModuleEnabled(module).call() is True
    # both allowances start full at the configured amount, refilling at UTC midnights
    for key in (spec.withdraw_key, spec.swap_key):
        assert _allowance_balance(devnet_chain, spec, key) == (
            ALLOWANCE_WBTC, ALLOWANCE_WBTC, 86_400, ALLOWANCE_WBTC, 86_400,
        )  # fmt: skip


# -- what the key can do -------------------------------------------------------------------


async def test_the_planners_deleverage_batch_passes_through_the_role(
    devnet: dict[str, Any], devnet_chain: Chain, installed: RoleSpec, rpc: RpcClient
) -> None:
    spec = installed
    safe = spec.safe
    layout = await discover(rpc, chain_config_from_deployment(devnet))
    snap = await read_snapshot(rpc, layout)
    u = devnet["uniswap"]
    venue = UniswapVenue(
        u["factory"],
        u["swap_router02"],
        u["quoter_v2"],
        {s: p["fee"] for s, p in u["pools"].items()},
    )
    target = 17 * WAD // 10
    plan = await plan_deleverage_onchain(
        rpc, layout=layout, venue=venue, account_addr=safe, account=snap.accounts[safe],
        collateral=layout.reserve("WBTC"), collateral_reserve=snap.reserves["WBTC"],
        debt=layout.reserve("USDC"), debt_reserve=snap.reserves["USDC"],
        target_hf_wad=target, hf_floor_wad=105 * WAD // 100, slippage_bps=50,
    )  # fmt: skip
    assert [t.decoded.method for t in plan.transactions] == [
        "withdraw", "approve", "exactInputSingle", "approve", "repay",
    ]  # fmt: skip
    st = build_safe_tx(safe, spec.multisend, plan.transactions)
    assert st.operation == 1 and st.to == spec.multisend  # the batch, unchanged
    # withdrawn and swapped, read from the batch's own calldata (not from the plan's totals)
    withdrawn = sum(
        int(t.decoded.args["amount"]) for t in plan.transactions if t.decoded.method == "withdraw"
    )
    swapped = sum(
        int(t.decoded.args["params"]["amountIn"])
        for t in plan.transactions
        if t.decoded.method == "exactInputSingle"
    )
    assert 0 < withdrawn == swapped < ALLOWANCE_WBTC
    receipt = _send_as_agent(devnet_chain, spec, st.to, bytes.fromhex(st.data[2:]), op=1)
    pool = devnet_chain.contract(spec.pool, load_abi("Pool").abi)
    hf = int(pool.functions.getUserAccountData(safe).call()[5])
    assert hf >= target
    assert (
        _allowance_balance(devnet_chain, spec, spec.withdraw_key)[3] == ALLOWANCE_WBTC - withdrawn
    )
    assert _allowance_balance(devnet_chain, spec, spec.swap_key)[3] == ALLOWANCE_WBTC - swapped
    # the Safe executed it as a module transaction of the Roles module, once
    safe_c = devnet_chain.contract(safe, load_abi("Safe").abi)
    ok = safe_c.events.ExecutionFromModuleSuccess().process_receipt(receipt, errors=DISCARD)
    assert [(e["address"], e["args"]["module"]) for e in ok] == [(safe, spec.module_address)]


async def test_a_wallet_first_deleverage_batch_passes_through_the_role(
    devnet: dict[str, Any], devnet_chain: Chain, rpc: RpcClient
) -> None:
    """The combined plan on the Safe with spare WETH and USDC: repay and top-up from the
    wallet (capped by the spend cap), then withdraw-swap-repay for the rest, one batch."""
    s, t, z = devnet["safe"], devnet["tokens"], devnet["zodiac"]
    spec = replace(
        _spec(devnet),
        safe=s["address"],
        collateral=Token("WETH", t["WETH"]["address"], 18),
        allowance=100 * WAD,  # 25% of the 400 WETH collateral
    )
    assert spec.mastercopy == z["roles_mastercopy"]
    calls = [Call(x.to, bytes.fromhex(x.data[2:])) for x in owners_batch(spec)]
    exec_batch(devnet_chain, s["address"], s["owners"][0], s["multisend_call_only"], calls)
    devnet_chain.impersonate(AGENT)
    devnet_chain.set_balance(AGENT, 10 * WAD)
    layout = await discover(rpc, chain_config_from_deployment(devnet))
    snap = await read_snapshot(rpc, layout)
    acct = snap.accounts[spec.safe]
    weth, usdc = layout.reserve("WETH"), layout.reserve("USDC")
    target = 3 * WAD
    wallet = plan_wallet_part(
        layout=layout, account_addr=spec.safe, account=acct, collateral=weth,
        collateral_reserve=snap.reserves["WETH"], debt=usdc, debt_reserve=snap.reserves["USDC"],
        target_hf_wad=target, max_spend_base=200_000 * 10**8,
    )  # fmt: skip
    assert wallet.repay > 0 and wallet.supply > 0
    u = devnet["uniswap"]
    venue = UniswapVenue(
        u["factory"],
        u["swap_router02"],
        u["quoter_v2"],
        {k: p["fee"] for k, p in u["pools"].items()},
    )
    plan = await plan_deleverage_onchain(
        rpc, layout=layout, venue=venue, account_addr=spec.safe, account=acct,
        collateral=weth, collateral_reserve=snap.reserves["WETH"], debt=usdc,
        debt_reserve=snap.reserves["USDC"], target_hf_wad=target, hf_floor_wad=105 * WAD // 100,
        slippage_bps=50, wallet=wallet,
    )  # fmt: skip
    methods = [x.decoded.method for x in plan.transactions]
    assert "supply" in methods and methods.count("repay") >= 2 and "withdraw" in methods
    st = build_safe_tx(spec.safe, spec.multisend, plan.transactions)
    _send_as_agent(devnet_chain, spec, st.to, bytes.fromhex(st.data[2:]), op=1)
    pool = devnet_chain.contract(spec.pool, load_abi("Pool").abi)
    assert int(pool.functions.getUserAccountData(spec.safe).call()[5]) >= target


# -- what the key cannot do (one test each) ------------------------------------------------


def test_borrow_reverts(devnet: dict[str, Any], devnet_chain: Chain, installed: RoleSpec) -> None:
    pool = load_abi("Pool")
    usdc = installed.debt.address
    data = pool.encode("borrow", usdc, 1_000 * 10**6, 2, 0, installed.safe)
    assert _outcome(devnet_chain, installed, installed.pool, data).startswith(
        _violation(FUNCTION_NOT_ALLOWED)
    )


def test_transfer_of_any_token_out_of_the_safe_reverts(
    devnet: dict[str, Any], devnet_chain: Chain, installed: RoleSpec
) -> None:
    erc20 = load_abi("ERC20")
    t = devnet["tokens"]
    cases = {
        # scoped targets (only their approve is allowed): the function is refused
        "WBTC": (t["WBTC"]["address"], FUNCTION_NOT_ALLOWED),
        "USDC": (t["USDC"]["address"], FUNCTION_NOT_ALLOWED),
        # every other token, the aToken (the collateral itself) included: the target is refused
        "WETH": (t["WETH"]["address"], TARGET_NOT_ALLOWED),
        "aWBTC": (t["WBTC"]["a_token"], TARGET_NOT_ALLOWED),
    }
    for name, (token, status) in cases.items():
        for data in (
            erc20.encode("transfer", STRANGER, 1),
            erc20.encode("transferFrom", installed.safe, STRANGER, 1),
        ):
            got = _outcome(devnet_chain, installed, token, data)
            assert got.startswith(_violation(status)), (name, got)


def test_approve_to_another_spender_reverts(
    devnet: dict[str, Any], devnet_chain: Chain, installed: RoleSpec
) -> None:
    erc20 = load_abi("ERC20")
    s = installed
    for token, spender, status in (
        # the collateral's spender is an Or (router or pool): neither branch holds
        (s.collateral.address, STRANGER, OR_VIOLATION),
        (s.debt.address, STRANGER, PARAMETER_NOT_ALLOWED),
        (s.debt.address, s.swap_router02, PARAMETER_NOT_ALLOWED),  # the debt: the pool only
    ):
        got = _outcome(devnet_chain, s, token, erc20.encode("approve", spender, 10**30))
        assert got.startswith(_violation(status)), (token, spender, got)
    # the allowed twins pass (the collateral to the router, or to the pool for a top-up)
    assert _outcome(devnet_chain, s, s.collateral.address, erc20.encode("approve", s.swap_router02, 10**30)) == "ok"  # fmt: skip
    assert _outcome(devnet_chain, s, s.collateral.address, erc20.encode("approve", s.pool, 10**30)) == "ok"  # fmt: skip
    assert _outcome(devnet_chain, s, s.debt.address, erc20.encode("approve", s.pool, 10**30)) == "ok"  # fmt: skip


def _swap(spec: RoleSpec, dep: dict[str, Any], recipient: str, amount_in: int) -> bytes:
    fee = dep["uniswap"]["pools"]["WBTC"]["fee"]
    params = (spec.collateral.address, spec.debt.address, fee, recipient, amount_in, 0, 0)
    return load_abi("SwapRouter02").encode("exactInputSingle", params)


def test_swap_with_another_recipient_reverts(
    devnet: dict[str, Any], devnet_chain: Chain, installed: RoleSpec
) -> None:
    s = installed
    got = _outcome(devnet_chain, s, s.swap_router02, _swap(s, devnet, STRANGER, 10**6))
    assert got.startswith(_violation(PARAMETER_NOT_ALLOWED)), got
    # SwapRouter02's "msg.sender" recipient constant (address(1)) is another recipient too
    one = "0x0000000000000000000000000000000000000001"
    got = _outcome(devnet_chain, s, s.swap_router02, _swap(s, devnet, one, 10**6))
    assert got.startswith(_violation(PARAMETER_NOT_ALLOWED)), got
    # the twin to the Safe passes the role (and then fails in the router: the Safe holds no
    # WBTC in its wallet here), so the recipient alone made the difference
    twin = _outcome(devnet_chain, s, s.swap_router02, _swap(s, devnet, s.safe, 10**6))
    assert "ConditionViolation" not in twin


def test_withdraw_to_another_address_reverts(
    devnet: dict[str, Any], devnet_chain: Chain, installed: RoleSpec
) -> None:
    s, pool = installed, load_abi("Pool")
    got = _outcome(
        devnet_chain, s, s.pool, pool.encode("withdraw", s.collateral.address, 10**6, STRANGER)
    )
    assert got.startswith(_violation(PARAMETER_NOT_ALLOWED)), got
    ok = _outcome(devnet_chain, s, s.pool, pool.encode("withdraw", s.collateral.address, 10**6, s.safe))  # fmt: skip
    assert ok == "ok"


def test_withdraw_above_the_allowance_reverts(
    devnet: dict[str, Any], devnet_chain: Chain, installed: RoleSpec
) -> None:
    s, pool = installed, load_abi("Pool")
    wbtc = s.collateral.address
    above = pool.encode("withdraw", wbtc, ALLOWANCE_WBTC + 1, s.safe)
    assert _outcome(devnet_chain, s, s.pool, above).startswith(_violation(ALLOWANCE_EXCEEDED))
    # Aave's "everything" (type(uint256).max) is above any allowance
    everything = pool.encode("withdraw", wbtc, 2**256 - 1, s.safe)
    assert _outcome(devnet_chain, s, s.pool, everything).startswith(_violation(ALLOWANCE_EXCEEDED))
    # the cap binds exactly: the whole allowance passes, and then not one unit more
    _send_as_agent(devnet_chain, s, s.pool, pool.encode("withdraw", wbtc, ALLOWANCE_WBTC, s.safe))
    one = pool.encode("withdraw", wbtc, 1, s.safe)
    assert _outcome(devnet_chain, s, s.pool, one).startswith(_violation(ALLOWANCE_EXCEEDED))


def test_delegatecall_and_ether_out_revert(
    devnet: dict[str, Any], devnet_chain: Chain, installed: RoleSpec
) -> None:
    """What the README promises beyond the issue's list: no delegatecall but the MultiSend
    batch, no ETH out."""
    s, pool = installed, load_abi("Pool")
    withdraw = pool.encode("withdraw", s.collateral.address, 10**6, s.safe)
    got = _outcome(devnet_chain, s, s.pool, withdraw, 1)  # the allowed call, delegatecalled
    assert got.startswith(_violation(1)), got  # DelegateCallNotAllowed
    # a batch of the allowed call through another MultiSend (no unwrapper registered for it)
    other = devnet["uniswap"]["swap_router02"]
    ms = load_abi("MultiSendCallOnly").encode(
        "multiSend",
        b"\x00"
        + bytes.fromhex(s.pool[2:])
        + bytes(32)
        + len(withdraw).to_bytes(32, "big")
        + withdraw,
    )
    assert "ConditionViolation" in _outcome(devnet_chain, s, other, ms, 1)
    roles = load_abi("Roles")
    resp = devnet_chain.w3.provider.make_request(
        "eth_call",  # type: ignore[arg-type]
        [
            {
                "from": AGENT,
                "to": s.module_address,
                "data": roles.encode_hex(
                    "execTransactionWithRole", STRANGER, 10**15, b"", 0, s.role_key, True
                ),
            },
            "latest",
        ],
    )
    raw = resp["error"]["data"]
    raw = raw["data"] if isinstance(raw, dict) else raw
    got = decode_revert(bytes.fromhex(raw[2:]), [roles])
    assert got.startswith(_violation(TARGET_NOT_ALLOWED)), got


def test_a_batch_cannot_split_past_the_allowance(
    devnet: dict[str, Any], devnet_chain: Chain, installed: RoleSpec
) -> None:
    """The calls of one MultiSend batch draw on the same allowance: two withdrawals of 60% each
    revert in the module, two of 50% pass (and leave nothing)."""
    s = installed

    def batch(*amounts: int) -> SafeTx:
        txs = [
            call_tx("Pool", s.pool, "withdraw", s.collateral.address, a, s.safe, human="w")
            for a in amounts
        ]
        return build_safe_tx(s.safe, s.multisend, txs)

    over = batch(ALLOWANCE_WBTC * 6 // 10, ALLOWANCE_WBTC * 6 // 10)
    got = _outcome(devnet_chain, s, over.to, bytes.fromhex(over.data[2:]), 1)
    assert got.startswith(_violation(ALLOWANCE_EXCEEDED)), got
    half = batch(ALLOWANCE_WBTC // 2, ALLOWANCE_WBTC - ALLOWANCE_WBTC // 2)
    _send_as_agent(devnet_chain, s, half.to, bytes.fromhex(half.data[2:]), op=1)
    assert _allowance_balance(devnet_chain, s, s.withdraw_key)[3] == 0


def test_the_allowance_refills_at_the_next_utc_midnight(
    devnet: dict[str, Any], devnet_chain: Chain
) -> None:
    allowance = 5 * 10**7  # 0.5 WBTC: two days of it keep the Safe's HF above 1
    spec = _spec(devnet, allowance)
    _install(devnet_chain, devnet, spec)
    pool, chain = load_abi("Pool"), devnet_chain
    wbtc = spec.collateral.address
    full = pool.encode("withdraw", wbtc, allowance, spec.safe)
    _send_as_agent(chain, spec, spec.pool, full)
    midnight = (chain.timestamp() // ALLOWANCE_PERIOD_S + 1) * ALLOWANCE_PERIOD_S
    one = pool.encode("withdraw", wbtc, 1, spec.safe)
    # a block one second before midnight UTC: still spent (calls run at the latest block)
    chain.rpc("evm_setNextBlockTimestamp", [midnight - 1])
    chain.mine()
    assert chain.timestamp() == midnight - 1
    assert _outcome(chain, spec, spec.pool, one).startswith(_violation(ALLOWANCE_EXCEEDED))
    # the block at midnight: refilled to the allowance, not beyond it
    chain.rpc("evm_setNextBlockTimestamp", [midnight])
    chain.mine()
    assert _outcome(chain, spec, spec.pool, full) == "ok"
    over = pool.encode("withdraw", wbtc, allowance + 1, spec.safe)
    assert _outcome(chain, spec, spec.pool, over).startswith(_violation(ALLOWANCE_EXCEEDED))
    _send_as_agent(chain, spec, spec.pool, full)
    assert _allowance_balance(chain, spec, spec.withdraw_key)[3] == 0


# -- roles plan -> owners execute -> roles check ------------------------------------------


def _config(tmp_path: Path, dep_path: Path, allowance: str = "2.5", name: str = "agent") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(
        f'[agent]\nstore_path = "{tmp_path}/agent.sqlite"\njournal_path = "{tmp_path}/p.jsonl"\n'
        f'[chain]\nname = "devnet"\ndeployment = "{dep_path}"\n'
        '[position]\ndeployment_safe = "safe_lean"\ntopup_asset = "WBTC"\nrepay_asset = "USDC"\n'
        f'[sinks]\nsafe_tx_builder_dir = "{tmp_path}/stb"\n'
        "[collectors.defillama]\nenabled = false\n[collectors.hyperliquid]\nenabled = false\n"
        "[collectors.dydx]\nenabled = false\n[collectors.closes]\nenabled = false\n"
        f'[roles]\nagent = "{AGENT}"\nrole_key = "{ROLE}"\n'
        + (f'allowance = "{allowance}"\n' if allowance else "")
    )
    return p


def _builder_value(typ: str, raw: Any) -> Any:
    """A Transaction Builder ``contractInputsValues`` string back to an ABI value, as the app
    parses its form (arrays and tuples as JSON)."""
    if isinstance(raw, str) and (typ.endswith("]") or typ.startswith("tuple")):
        raw = json.loads(raw)
    if typ.endswith("]"):
        return [_builder_value(typ[: typ.rindex("[")], x) for x in raw]
    if typ.startswith("uint") or typ.startswith("int"):
        return int(raw)
    if typ == "bool":
        return raw in (True, "true")
    if typ.startswith("bytes"):
        return bytes.fromhex(str(raw)[2:])
    return raw


def _encode_builder_tx(tx: dict[str, Any]) -> Call:
    """Encode one Transaction Builder entry the way the app does before the owners sign."""
    from eth_abi.abi import encode as abi_encode
    from eth_utils.abi import collapse_if_tuple, function_abi_to_4byte_selector

    if tx.get("data"):
        return Call(tx["to"], bytes.fromhex(tx["data"][2:]), int(tx["value"]))
    method = tx["contractMethod"]
    values = []
    for p in method["inputs"]:
        raw = tx["contractInputsValues"][p["name"]]
        if p["type"].startswith("tuple"):
            comps = [collapse_if_tuple(c) for c in p["components"]]
            items = json.loads(raw)
            values.append(
                [
                    tuple(_builder_value(t, v) for t, v in zip(comps, it, strict=True))
                    for it in items
                ]
            )
        else:
            values.append(_builder_value(p["type"], raw))
    types = [collapse_if_tuple(p) for p in method["inputs"]]
    selector = function_abi_to_4byte_selector({"type": "function", **method})
    return Call(tx["to"], bytes(selector) + abi_encode(types, values), int(tx["value"]))


@pytest.fixture
def dep_path(devnet: dict[str, Any], tmp_path: Path) -> Path:
    p = tmp_path / "deployment.json"
    write_deployment(devnet, p)
    return p


def _read_back(url: str, spec: RoleSpec) -> tuple[CheckLine, ...]:
    async def read() -> tuple[CheckLine, ...]:
        async with RpcClient(url, source="rpc:devnet") as rpc:
            return compare(spec, await read_role(rpc, spec))

    return asyncio.run(read())


def test_plan_execute_check_matches_and_each_changed_scope_is_a_mismatch(
    devnet: dict[str, Any],
    devnet_chain: Chain,
    dep_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = _config(tmp_path, dep_path)
    # before the install: the check fails on the module's absence
    assert main(["roles", "check", "--config", str(cfg)]) == 1
    assert "no contract at this address" in capsys.readouterr().out
    # without an allowance: the error suggests the session cap's 25% of the 10 WBTC collateral
    bare = _config(tmp_path, dep_path, allowance="", name="bare")
    assert main(["roles", "plan", "--config", str(bare)]) == 2
    err = capsys.readouterr().err
    assert "roles.allowance (whole WBTC per UTC day) is not set" in err
    assert '25%) of the position\'s 10 WBTC collateral is: allowance = "2.5"' in err, err

    assert main(["roles", "plan", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "executed by the owners" in out and "MISMATCH" not in out
    # on the fork, the installed role lets the key withdraw to the Safe and refuses the rest
    tried = out[out.index("calls by the agent's key through the role, on the fork:") :]
    for line in (
        "ok       withdraw 1 unit of WBTC to the Safe: allowed",
        "ok       withdraw 1 unit of WBTC to the agent's key: refused by the role (PARAMETER_NOT_ALLOWED)",
        "ok       withdraw one day's allowance + 1 of WBTC: refused by the role (ALLOWANCE_EXCEEDED)",
        "ok       borrow 1 unit of USDC: refused by the role (FUNCTION_NOT_ALLOWED)",
        "ok       transfer 1 unit of USDC to the agent's key: refused by the role (FUNCTION_NOT_ALLOWED)",
        "ok       approve the agent's key to spend WBTC: refused by the role (OR_VIOLATION)",
    ):
        assert line in tried, tried
    files = sorted((tmp_path / "stb").glob("roles-*.json"))
    assert len(files) == 1 and files[0].with_suffix(".txt").is_file()
    batch = json.loads(files[0].read_text())
    spec = _spec(devnet)
    assert batch["meta"]["createdFromSafeAddress"] == spec.safe
    assert len(batch["transactions"]) == 3 + 4 + 6 + 2 + 1  # deploy, enable, unwrap; targets...

    # the owners import the file and execute it: calls encoded from the file itself
    calls = [_encode_builder_tx(t) for t in batch["transactions"]]
    assert [c.data for c in calls] == [bytes.fromhex(t.data[2:]) for t in owners_batch(spec)]
    s = devnet["safe_lean"]
    exec_batch(devnet_chain, s["address"], s["owners"][0], s["multisend_call_only"], calls)

    assert main(["roles", "check", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "MISMATCH" not in out and "20/20 match the plan" in out, out
    # planning again would deploy onto the installed module: refused, with what to do instead
    assert main(["roles", "plan", "--config", str(cfg)]) == 2
    assert f"a module is already installed at {spec.module_address}" in capsys.readouterr().err
    assert main(["check", "--config", str(cfg)]) == 0, capsys.readouterr().out
    capsys.readouterr()

    roles = load_abi("Roles")
    module, role = spec.module_address, spec.role_key
    pool = load_abi("Pool")
    weth = devnet["tokens"]["WETH"]["address"]
    withdraw_sel = pool.selector("withdraw")
    base = _read_back(devnet_chain.url, spec)
    loose_withdraw = [
        (0, 5, 5, b""), (0, 1, 16, b"\x00" * 12 + bytes.fromhex(spec.collateral.address[2:])),
        (0, 1, 28, spec.withdraw_key), (0, 1, 0, b""),  # `to` passes anything
    ]  # fmt: skip
    changes: dict[str, tuple[str, bytes, str]] = {
        "borrow allowed": (
            module, roles.encode("allowFunction", role, spec.pool, pool.selector("borrow"), 0),
            f"function {spec.pool.lower()} 0x{pool.selector('borrow').hex()} not in the plan",
        ),
        "withdraw to anyone": (
            module,
            roles.encode("scopeFunction", role, spec.pool, withdraw_sel, loose_withdraw, 0),
            "Pool.withdraw(asset = WBTC, amount within the daily allowance, to = Safe): "
            "condition 3: static pass (planned static equal_to_avatar)",
        ),
        "WETH target allowed": (
            module, roles.encode("allowTarget", role, weth, 0),
            f"target {weth.lower()} not in the plan",
        ),
        "bigger allowance": (
            module,
            roles.encode("setAllowance", spec.withdraw_key, 10**9, 10**9, 10**9, 86_400, 0),
            "allowance hedge-agent-protector:wd.WBTC: 2.5 WBTC per day",
        ),
        "second member": (
            module, roles.encode("assignRoles", STRANGER, [role], [True]),
            f"role {ROLE} held by the agent's key only",
        ),
        "repay revoked": (
            module, roles.encode("revokeFunction", role, spec.pool, pool.selector("repay")),
            "Pool.repay(asset = USDC, any amount, rate mode 2, onBehalfOf = Safe): not scoped",
        ),
        "router target revoked": (
            module, roles.encode("revokeTarget", role, spec.swap_router02),
            f"target {spec.swap_router02.lower()} scoped: cleared: None",
        ),
        "module disabled": (
            spec.safe,
            load_abi("Safe").encode("disableModule", "0x0000000000000000000000000000000000000001", module),
            "module enabled on the Safe",
        ),
    }  # fmt: skip
    for name, (to, data, expected) in changes.items():
        snap = devnet_chain.snapshot()
        try:
            _owner_call(devnet_chain, devnet, to, data)
            lines = _read_back(devnet_chain.url, spec)
            bad = [ln for ln in lines if not ln.ok]
            assert len(bad) == 1, (name, [b.render() for b in bad])
            assert bad[0].render().startswith(f"MISMATCH {expected}"), (name, bad[0].render())
            assert len(lines) in (len(base), len(base) + 1)  # an extra grant adds its line
        finally:
            devnet_chain.revert(snap)
    # and the CLI's exit code says so
    snap = devnet_chain.snapshot()
    try:
        _owner_call(devnet_chain, devnet, *changes["borrow allowed"][:2])
        assert main(["roles", "check", "--config", str(cfg)]) == 1
        out = capsys.readouterr().out
        assert "1 MISMATCH" in out
        assert main(["check", "--config", str(cfg)]) == 1
        assert "roles: MISMATCH function" in capsys.readouterr().out
    finally:
        devnet_chain.revert(snap)
