"""Autonomous protection on the stressed devnet (issue 23 items 4-5): the main Safe's position
has ``execution = "autonomous"`` and a funded guardian (a key of the test's own, from an
environment variable). The liquidation guard triggers, and its repay is SENT by the guardian (``Pool.repay``
onBehalfOf the Safe, from the guardian's own USDC) through the durable live path, mined within
two blocks of the tick's block, and the Safe's HF afterwards is the one computed here by hand
from the chain's numbers. A real ``kill -9`` between the journaled intent and the broadcast
(the private send URL is a real proxy that holds ``eth_sendRawTransaction``), then a restart:
the journaled transaction is broadcast once, nothing twice.

Both tests share the session's stressed devnet (tests/e2e/conftest.py) and put the chain back
to the stressed state themselves."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from eth_account import Account
from faults.proxy import RpcProxy

from agent.core.abi import load_abi
from agent.devnet.chain import Chain

if TYPE_CHECKING:
    from conftest import StressedDevnet  # tests/e2e/conftest.py (annotation only)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# A key of the test's own (anvil's ten are the devnet's deployer, owners, whales, liquidator).
GUARDIAN_KEY = "0x" + hashlib.sha256(b"hedge-agent e2e guardian").hexdigest()
GUARDIAN = Account.from_key(GUARDIAN_KEY).address
FUND_USDC = 2_000_000 * 10**6
SEND = "eth_sendRawTransaction"


def _config(tmp: Path, devnet: StressedDevnet, private_url: str | None = None) -> Path:
    text = devnet.config(tmp).replace(
        '[position]\nkind = "safe"', '[position]\nkind = "safe"\nexecution = "autonomous"'
    )
    assert 'execution = "autonomous"' in text
    # the stressed Safe's HF is ~1.43: under stress the guard's trigger is 1.45, so the guard
    # (not only the layer rule) has the position
    text = text.replace('stress_trigger_hf = "1.40"', 'stress_trigger_hf = "1.45"')
    text += f'\n[guardian]\naccount = "{GUARDIAN}"\nkey_env = "E2E_GUARDIAN_KEY"\n'
    if private_url:
        text = text.replace("[sinks]\n", f'[sinks]\nautonomous.private_rpc_url = "{private_url}"\n')
    path = tmp / "agent.toml"
    path.write_text(text)
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "HEDGE_AGENT_AGENT__LOG_FORMAT": "json", "E2E_GUARDIAN_KEY": GUARDIAN_KEY}


def _fund_guardian(chain: Chain, dep: dict[str, Any], approve: bool) -> str:
    """The treasury funds the guardian with USDC (the devnet's token mints openly) and, as the
    README says, has it approve the Pool once."""
    usdc = dep["tokens"]["USDC"]["address"]
    erc20 = load_abi("ERC20")
    chain.set_balance(GUARDIAN, 10**18)  # gas
    chain.impersonate(GUARDIAN)  # the set-up only; the agent signs with the key
    mint = "0x40c10f19" + "00" * 12 + GUARDIAN[2:].lower() + f"{FUND_USDC:064x}"
    for data in [mint] + (
        [erc20.encode_hex("approve", dep["aave"]["pool"], 2**256 - 1)] if approve else []
    ):
        h = chain.rpc("eth_sendTransaction", [{"from": GUARDIAN, "to": usdc, "data": data}])
        assert _receipt(chain, h)["status"] == "0x1"
    return str(usdc)


def _receipt(chain: Chain, tx_hash: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (got := chain.rpc("eth_getTransactionReceipt", [tx_hash])) is None:
        assert time.monotonic() < deadline, f"{tx_hash} not mined"
        time.sleep(0.02)
    return dict(got)


def _balance(chain: Chain, token: str, who: str, block: int | str = "latest") -> int:
    erc20 = load_abi("ERC20")
    tag = hex(block) if isinstance(block, int) else block
    raw = chain.rpc("eth_call", [{"to": token, "data": erc20.encode_hex("balanceOf", who)}, tag])
    return int(raw, 16)


def _account_data(chain: Chain, pool: str, who: str, block: int | str) -> tuple[int, ...]:
    abi = load_abi("Pool")
    tag = hex(block) if isinstance(block, int) else block
    raw = chain.rpc(
        "eth_call", [{"to": pool, "data": abi.encode_hex("getUserAccountData", who)}, tag]
    )
    return tuple(int(x) for x in abi.decode_output("getUserAccountData", bytes.fromhex(raw[2:])))


def _records(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "proposals.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--once", "--config", str(config)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _nonce(chain: Chain, who: str) -> int:
    return int(chain.rpc("eth_getTransactionCount", [who, "latest"]), 16)


def test_guardian_repays_within_two_blocks_to_the_hand_computed_hf(
    tmp_path: Path, stressed_devnet: StressedDevnet
) -> None:
    dep = stressed_devnet.dep
    chain = Chain(str(dep["rpc_url"]))
    snap = chain.snapshot()
    try:
        usdc = _fund_guardian(chain, dep, approve=True)
        safe, pool = dep["safe"]["address"], dep["aave"]["pool"]
        safe_usdc0 = _balance(chain, usdc, safe)
        out = _once(_config(tmp_path, stressed_devnet))
        assert out.returncode == 0, out.stderr[-3000:]
        auto = [r for r in _records(tmp_path) if r.get("autonomous")]
        assert len(auto) == 1, [r["action"] for r in _records(tmp_path)]
        r = auto[0]
        assert r["action"] == "repay_debt" and r["autonomous"]["mode"] == "guardian"
        assert r["policy"]["action_key"].startswith("guard:"), r["policy"]  # the guard's
        a = r["autonomous"]
        assert a["status"] == "mined" and a["sender"] == GUARDIAN
        assert [s["status"] for s in r["live"]] == ["mined"]  # the approval was given before
        receipt = chain.rpc("eth_getTransactionReceipt", [a["tx_hashes"][0]])
        assert receipt["from"].lower() == GUARDIAN.lower()
        trigger = int(r["block_number"])
        mined = int(receipt["blockNumber"], 16)
        assert 0 < mined - trigger <= 2, (trigger, mined)
        # the amount: what the plan says, paid by the guardian, not by the Safe's wallet
        call = r["transactions"][-1]
        amount = int(call["data"][2 + 8 + 64 : 2 + 8 + 128], 16)
        assert _balance(chain, usdc, GUARDIAN) == FUND_USDC - amount
        assert _balance(chain, usdc, safe) == safe_usdc0
        # HF by hand: collateral x LT / (debt - repaid), from the chain's numbers before
        coll, debt, _, lt_bps, _, hf_before = _account_data(chain, pool, safe, mined - 1)
        oracle = load_abi("AaveOracle")
        raw = chain.rpc("eth_call", [{"to": dep["aave"]["oracle"],
                                      "data": oracle.encode_hex("getAssetPrice", usdc)}, hex(mined - 1)])  # fmt: skip
        price = int(raw, 16)
        repaid_base = amount * price // 10**6
        hf_hand = coll * lt_bps * 10**18 // 10_000 // (debt - repaid_base)
        hf_after = _account_data(chain, pool, safe, mined)[5]
        assert abs(hf_after - hf_hand) <= hf_hand // 10**5, (
            hf_after,
            hf_hand,
        )  # 0.1 bp: a block's interest
        assert abs(a["health_factor_after"] - hf_after / 1e18) < 1e-9
        assert a["health_factor_before"] == pytest.approx(hf_before / 1e18, rel=1e-4)
        target = float(r["simulation"]["health_factor_after"])
        assert hf_after / 1e18 == pytest.approx(target, rel=1e-3)  # the fork said the same
        assert hf_after > hf_before
        assert hf_after >= 16 * 10**17  # the guard's target, HF 1.60
        # `hedge-agent status` shows it
        shown = subprocess.run(
            [sys.executable, "-m", "agent.cli", "status", "--config", str(tmp_path / "agent.toml")],
            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert "autonomous execution: on for" in shown.stdout
        assert f"repay_debt {r.get('position') or r['account']} by the guardian: " in shown.stdout
        assert f"{a['tx_hashes'][0][:10]}.. mined" in shown.stdout
    finally:
        assert chain.revert(snap)


def test_kill9_between_intent_and_broadcast_then_restart_sends_once(
    tmp_path: Path, stressed_devnet: StressedDevnet
) -> None:
    dep = stressed_devnet.dep
    chain = Chain(str(dep["rpc_url"]))
    snap = chain.snapshot()
    proxy = RpcProxy(str(dep["rpc_url"]))
    try:
        _fund_guardian(chain, dep, approve=True)
        nonce0 = _nonce(chain, GUARDIAN)
        proxy.inject("hang", {SEND})
        config = _config(tmp_path, stressed_devnet, proxy.url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proxy.wait_for(SEND, 1, timeout=240, forwarded=False)
            time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert proxy.forwarded[SEND] == 0 and _nonce(chain, GUARDIAN) == nonce0
        db = sqlite3.connect(tmp_path / "agent.sqlite")
        rows = db.execute("SELECT status, account, nonce FROM live_sends").fetchall()
        db.close()
        assert rows == [("intent", GUARDIAN, nonce0)]
        proxy.clear()
        out = _once(config)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "recovery.autonomous_rebroadcast" in out.stdout + out.stderr
        assert proxy.forwarded[SEND] == 1  # the journaled bytes, once
        assert _nonce(chain, GUARDIAN) == nonce0 + 1
        db = sqlite3.connect(tmp_path / "agent.sqlite")
        rows = db.execute("SELECT status FROM live_sends").fetchall()
        db.close()
        assert rows == [("mined",)]
        keys = [r["idempotency_key"] for r in _records(tmp_path)]
        assert len(keys) == len(set(keys))
    finally:
        proxy.close()
        assert chain.revert(snap)
        # a fork anvil of the killed daemon is reaped by the restart (its pidfile names the
        # dead owner); nothing of this test stays running


MEMBER_KEY = "0x" + hashlib.sha256(b"hedge-agent e2e protector").hexdigest()
MEMBER = Account.from_key(MEMBER_KEY).address
ALLOWANCE_WBTC = 25 * 10**7  # 2.5 WBTC a day: 25% of the lean Safe's 10 WBTC


def test_role_deleverages_the_lean_safe_within_two_blocks(
    tmp_path: Path, stressed_devnet: StressedDevnet
) -> None:
    """The empty-wallet Safe (WBTC collateral, no spare tokens): its only protection is a
    deleverage, sent by the role's member as one ``execTransactionWithRole`` through the Roles
    module the owners installed from ``roles plan``'s batch; no Safe signature is used."""
    from agent.devnet.safe import Call, exec_batch
    from agent.planner.roles import RoleSpec, Token, bytes32_string, owners_batch

    dep = stressed_devnet.dep
    chain = Chain(str(dep["rpc_url"]))
    snap = chain.snapshot()
    try:
        t, z, lean = dep["tokens"], dep["zodiac"], dep["safe_lean"]
        spec = RoleSpec(
            chain_id=int(dep["chain_id"]),
            safe=lean["address"],
            pool=dep["aave"]["pool"],
            swap_router02=dep["uniswap"]["swap_router02"],
            collateral=Token("WBTC", t["WBTC"]["address"], 8),
            debt=Token("USDC", t["USDC"]["address"], 6),
            multisend=lean["multisend_call_only"],
            unwrapper=z["multisend_unwrapper"],
            mastercopy=z["roles_mastercopy"],
            factory=z["module_proxy_factory"],
            role_key=bytes32_string("hedge-agent-protector", "role"),
            agent=MEMBER,
            allowance=ALLOWANCE_WBTC,
        )
        calls = [Call(x.to, bytes.fromhex(x.data[2:])) for x in owners_batch(spec)]
        exec_batch(chain, lean["address"], lean["owners"][0], lean["multisend_call_only"], calls)
        chain.set_balance(MEMBER, 10**18)  # gas
        safe_nonce = chain.rpc("eth_call", [{"to": lean["address"], "data": "0xaffed0e0"}])
        text = (
            stressed_devnet.config(tmp_path, "devnet-lean.toml").replace(
                '[position]\nkind = "safe"', '[position]\nkind = "safe"\nexecution = "autonomous"'
            )
            + '\n[roles]\nagent = "' + MEMBER + '"\nallowance = "2.5"\n'
            + '\n[sinks.autonomous.role_key]\nkey_env = "E2E_MEMBER_KEY"\n'
        )  # fmt: skip
        assert 'execution = "autonomous"' in text
        config = tmp_path / "agent.toml"
        config.write_text(text)
        out = subprocess.run(
            [sys.executable, "-m", "agent.cli", "run", "--once", "--config", str(config)],
            cwd=ROOT,
            env=_env() | {"E2E_MEMBER_KEY": MEMBER_KEY},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        auto = [r for r in _records(tmp_path) if r.get("autonomous")]
        assert len(auto) == 1, [(r["action"], r.get("error")) for r in _records(tmp_path)]
        r = auto[0]
        a = r["autonomous"]
        assert r["action"] == "deleverage" and a["mode"] == "role", a
        assert r["policy"]["action_key"].startswith("guard:"), r["policy"]  # HF 1.36 <= 1.40
        assert a["status"] == "mined" and a["sender"] == MEMBER
        assert r["deleverage"]["slippage_bps"] == 3  # planned for immediate execution
        receipt = _receipt(chain, a["tx_hashes"][0])
        assert receipt["to"].lower() == spec.module_address.lower()
        assert receipt["from"].lower() == MEMBER.lower()
        trigger, mined = int(r["block_number"]), int(receipt["blockNumber"], 16)
        assert 0 < mined - trigger <= 2, (trigger, mined)
        # no owner signed anything: the Safe's nonce is where the install left it
        assert chain.rpc("eth_call", [{"to": lean["address"], "data": "0xaffed0e0"}]) == safe_nonce
        hf_after = _account_data(chain, dep["aave"]["pool"], lean["address"], mined)[5]
        fork_hf = float(r["simulation"]["health_factor_after"])
        assert hf_after / 1e18 == pytest.approx(fork_hf, rel=1e-4)  # what the fork computed
        assert hf_after / 1e18 >= float(r["comparison"]["target_health_factor"]) * 0.999
        assert abs(a["health_factor_after"] - hf_after / 1e18) < 1e-9
    finally:
        assert chain.revert(snap)
