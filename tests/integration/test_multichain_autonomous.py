"""Autonomous protection on two chains in one daemon (issue 23, "one guardian per daemon"
lifted): two devnet chains (the session's ``devnet`` 31337 and ``devnet2`` 31338), one Safe
position on each with ``execution = "autonomous"``, each naming its own guardian
(``[[guardians]]``, keys from two environment variables). Each position's guard triggers in
the same tick; each repay is sent by that position's guardian on that position's chain only,
sized by hand from that chain's numbers, and sent once (a second tick sends nothing).

On the single-guardian version this fails at load (``[[guardians]]`` and
``positions[i].guardian`` did not exist), and with one ``[guardian]`` only one of the two
positions could be protected (the other stayed a proposal)."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from agent.app import App
from agent.config import load_settings
from agent.core.abi import load_abi
from agent.core.rpc import RpcClient
from agent.devnet.chain import Chain
from agent.pipeline.runner import Agent
from agent.sinks.autonomous import AutonomousExecutor
from agent.sinks.config import AutonomousConfig
from agent.sinks.guardian import GuardianConfig
from agent.store.ledger import ProposalLedger

pytestmark = pytest.mark.integration

KEYS = {
    name: "0x" + hashlib.sha256(f"hedge-agent multichain guardian {name}".encode()).hexdigest()
    for name in ("g-one", "g-two")
}
ADDR = {name: Account.from_key(k).address for name, k in KEYS.items()}
FUND_USDC = 1_000_000 * 10**6
MINT_ABI = [
    {
        "name": "mint",
        "type": "function",
        "inputs": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "outputs": [],
        "stateMutability": "nonpayable",
    }
]


def _fund(chain: Chain, dep: dict[str, Any], who: str) -> None:
    chain.set_balance(who, 10**18)  # gas
    usdc = chain.contract(dep["tokens"]["USDC"]["address"], MINT_ABI)
    chain.send(usdc, "mint", who, FUND_USDC, sender=dep["accounts"]["deployer"])


def _call(chain: Chain, to: str, abi: str, fn: str, *args: Any, block: int | str = "latest") -> Any:
    c = load_abi(abi)
    tag = hex(block) if isinstance(block, int) else block
    raw = chain.rpc("eth_call", [{"to": to, "data": c.encode_hex(fn, *args)}, tag])
    return c.decode_output(fn, bytes.fromhex(raw[2:]))


def _hf(chain: Chain, dep: dict[str, Any], block: int | str = "latest") -> int:
    safe, pool = dep["safe"]["address"], dep["aave"]["pool"]
    return int(_call(chain, pool, "Pool", "getUserAccountData", safe, block=block)[5])


def _config(tmp: Path, deps: dict[str, dict[str, Any]], guard: dict[str, tuple[str, str]]) -> Path:
    for name, dep in deps.items():
        (tmp / f"{name}.json").write_text(json.dumps(dep))
    off = "\n".join(
        f"[collectors.{c}]\nenabled = false"
        for c in ("defillama", "hyperliquid", "dydx", "closes", "liquidations")
    )
    chains = "".join(
        f'[[chains]]\nname = "{n}"\ndeployment = "{tmp}/{n}.json"\ntimeout_s = 5\n' for n in deps
    )
    guardians = "".join(
        f'[[guardians]]\nname = "g-{n}"\naccount = "{ADDR["g-" + n]}"\n'
        f'key_env = "MULTI_GUARDIAN_{n.upper()}"\nassets = ["USDC"]\n'
        for n in deps
    )
    positions = "".join(
        f'[[positions]]\nname = "safe-{n}"\nchain = "{n}"\nexecution = "autonomous"\n'
        f'guardian = "g-{n}"\ntopup_asset = "WETH"\nrepay_asset = "USDC"\n'
        f'[positions.guard]\ntrigger_hf = "{guard[n][0]}"\ntarget_hf = "{guard[n][1]}"\n'
        for n in deps
    )
    path = tmp / "multi.toml"
    path.write_text(
        f'[agent]\nstore_path = "{tmp}/agent.sqlite"\njournal_path = "{tmp}/proposals.jsonl"\n'
        "backfill_hours = 0\n"
        f"{chains}{guardians}{positions}"
        "[simulator]\nwarm_up = false\n"
        f'[sinks]\nsafe_tx_builder_dir = "{tmp}/stb"\n'
        "[sinks.autonomous]\nreceipt_timeout_s = 30\n"
        f"{off}\n"
    )
    return path


def _records(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "proposals.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _nonce(chain: Chain, who: str) -> int:
    return int(chain.rpc("eth_getTransactionCount", [who, "latest"]), 16)


def _repay_by_hand(chain: Chain, dep: dict[str, Any], block: int, target_wad: int) -> int:
    """The repay that takes the Safe to ``target_wad`` at ``block``, in USDC units: the debt
    projected 600 s at the variable rate (+1 of rounding), less the largest debt at the target
    (collateral x LT floored to base units), at the oracle price, rounded up."""
    safe, pool, usdc = dep["safe"]["address"], dep["aave"]["pool"], dep["tokens"]["USDC"]["address"]
    coll, debt, _, lt_bps, _, _ = _call(
        chain, pool, "Pool", "getUserAccountData", safe, block=block
    )
    price = int(
        _call(chain, dep["aave"]["oracle"], "AaveOracle", "getAssetPrice", usdc, block=block)[0]
    )
    rate_ray = int(_call(chain, pool, "Pool", "getReserveData", usdc, block=block)[0][4])
    growth = -(-debt * rate_ray * 600 // (10**27 * 365 * 86400))
    debt_now = debt + growth + (1 if growth else 0)
    max_debt = coll * lt_bps // 10_000 * 10**18 // target_wad
    return -(-(debt_now - max_debt) * 10**6 // price)


async def test_two_positions_on_two_chains_each_protected_by_its_own_guardian_once(
    tmp_path: Path,
    devnet: dict[str, Any],
    devnet2: dict[str, Any],
    devnet_chain: Chain,
    devnet2_chain: Chain,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deps = {"one": devnet, "two": devnet2}
    chains = {"one": devnet_chain, "two": devnet2_chain}
    for n in deps:
        _fund(chains[n], deps[n], ADDR[f"g-{n}"])
        monkeypatch.setenv(f"MULTI_GUARDIAN_{n.upper()}", KEYS[f"g-{n}"])
    # each guard's trigger just above its Safe's HF now, its target 0.10 above that (the two
    # positions' targets differ, so a repay sized for the other chain's target is caught)
    guard: dict[str, tuple[str, str]] = {}
    for n, bump in (("one", Decimal("0.05")), ("two", Decimal("0.08"))):
        hf = (Decimal(_hf(chains[n], deps[n])) / 10**18).quantize(Decimal("0.01"))
        guard[n] = (str(hf + bump), str(hf + bump + Decimal("0.10")))
    settings = load_settings(_config(tmp_path, deps, guard))
    async with App(settings) as app:
        agent = Agent(app.daemon_parts())
        await agent.setup()
        await agent.tick(1)
        auto = [r for r in _records(tmp_path) if r.get("autonomous")]
        assert sorted(r["position"] for r in auto) == ["safe-one", "safe-two"], [
            (r["action"], r.get("position"), r.get("autonomous")) for r in _records(tmp_path)
        ]
        sent_on: dict[str, int] = {}
        for r in auto:
            n = r["position"].removeprefix("safe-")
            chain, dep, me = chains[n], deps[n], ADDR[f"g-{n}"]
            other = ADDR["g-two" if n == "one" else "g-one"]
            a = r["autonomous"]
            assert r["action"] == "repay_debt" and a["mode"] == "guardian", r
            assert a["status"] == "mined" and a["sender"] == me
            assert r["chain_id"] == chain.chain_id()
            # every transaction on this position's chain, from this position's guardian
            for h in a["tx_hashes"]:
                receipt = chain.rpc("eth_getTransactionReceipt", [h])
                assert receipt is not None and receipt["from"].lower() == me.lower()
                assert receipt["status"] == "0x1"
            sent_on[n] = _nonce(chain, me)
            assert sent_on[n] == len(a["tx_hashes"]) >= 1  # approve (first time) + repay
            assert _nonce(chain, other) == 0  # the other chain's guardian never sent here
            # the amount by hand from this chain's numbers at the tick's block; the guardian
            # paid it; HF at the target (not below, not above by more than the accrual margin)
            target = int(Decimal(guard[n][1]) * 10**18)
            amount = int(r["transactions"][-1]["data"][2 + 8 + 64 : 2 + 8 + 128], 16)
            assert amount == _repay_by_hand(chain, dep, int(r["block_number"]), target)
            usdc = dep["tokens"]["USDC"]["address"]
            assert int(_call(chain, usdc, "ERC20", "balanceOf", me)[0]) == FUND_USDC - amount
            hf_after = _hf(chain, dep)
            assert target <= hf_after <= target + target // 1000, (n, hf_after, target)
        # /metrics: each guardian's balance on its own chain (read after the tick's sends)
        text = app.ops.telemetry.render().decode()
        for n in deps:
            usdc = deps[n]["tokens"]["USDC"]["address"]
            left = int(_call(chains[n], usdc, "ERC20", "balanceOf", ADDR[f"g-{n}"])[0])
            price = int(_call(chains[n], deps[n]["aave"]["oracle"], "AaveOracle",
                              "getAssetPrice", usdc)[0])  # fmt: skip
            line = f'hedge_agent_guardian_balance_usd{{asset="USDC",chain="{n}",guardian="g-{n}"}}'
            (value,) = [x.split()[-1] for x in text.splitlines() if x.startswith(line)]
            assert float(value) == pytest.approx(left * price / 10**14, rel=1e-12)
            assert f'hedge_agent_guardian_gas_eth{{chain="{n}",guardian="g-{n}"}}' in text
        # once: a second tick sends nothing more on either chain
        for c in chains.values():
            c.mine()
        await agent.tick(2)
        assert len([r for r in _records(tmp_path) if r.get("autonomous")]) == 2
        for n in deps:
            assert _nonce(chains[n], ADDR[f"g-{n}"]) == sent_on[n]
    # `status`: each guardian, for its position, on its chain
    from agent.commands.status import _status

    shown = await _status(str(tmp_path / "multi.toml"))
    # `check`: each guardian's key loads, and its balances on its position's chain
    from agent.ops.check import run_check

    notes: list[str] = []
    problems, _ = await run_check(str(tmp_path / "multi.toml"), notes=notes)
    assert not [p for p in problems if "guardian" in p], problems
    for n in deps:
        head = f"guardian g-{n} ({ADDR[f'g-{n}']}) for {deps[n]['safe']['address']} on {n}: "
        assert any(line.startswith(head) for line in shown.splitlines()), shown
        assert any(line.startswith(head) for line in notes), notes


async def test_a_waiting_send_on_one_chain_holds_back_only_that_chain(
    tmp_path: Path,
    devnet2: dict[str, Any],
    devnet2_chain: Chain,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same guardian key on two chains is two nonce sequences: a transaction still
    waiting on chain 31337 neither blocks the guardian on chain 31338 nor is broadcast there
    after a restart; one waiting on 31338 blocks it, and after a restart it is broadcast
    again on 31338, once."""
    import asyncio
    import time

    import structlog

    monkeypatch.setenv("G_ONE", KEYS["g-one"])
    ledger = ProposalLedger(tmp_path / "s.sqlite")
    me = ADDR["g-one"]
    devnet2_chain.set_balance(me, 10**18)
    async with RpcClient(devnet2["rpc_url"]) as rpc:
        ex = AutonomousExecutor(
            AutonomousConfig(rebroadcast_within_s=600),
            [GuardianConfig(name="g", account=me, key_env="G_ONE")],
            (),
            chain_id=31338,
            rpc=rpc,
        )
        (sender,) = ex.senders()
        foreign = "0x" + "01" * 32  # chain 31337's, still waiting there
        ledger.record_live_intent(tx_hash=foreign, idempotency_key="k1", account=me,
                                  nonce=0, chain_id=31337, raw_tx="0x00")  # fmt: skip
        assert await ex.blocked(sender, ledger) is None
        signed = await sender.sign("0x000000000000000000000000000000000000dEaD", "0x", value=1)
        ledger.record_live_intent(tx_hash=signed.tx.tx_hash, idempotency_key="k2", account=me,
                                  nonce=signed.tx.nonce, chain_id=31338,
                                  raw_tx=signed.raw)  # fmt: skip
        why = await ex.blocked(sender, ledger)
        assert why is not None and signed.tx.tx_hash in why and "nonce 0" in why
        # a restart: only this chain's intent is broadcast again (its own bytes); the other
        # chain's is not even tried here
        with structlog.testing.capture_logs() as events:
            assert await ex.rebroadcast_fresh(ledger, now=time.time()) == [signed.tx.tx_hash]
        assert not [e for e in events if e["event"] == "autonomous.rebroadcast_refused"]
        for _ in range(200):
            if await rpc.request("eth_getTransactionReceipt", [signed.tx.tx_hash]):
                break
            await asyncio.sleep(0.02)
        assert int(await rpc.request("eth_getTransactionCount", [me, "latest"]), 16) == 1
        assert {s.tx_hash: s.status for s in ledger.live_sends()}[foreign] == "intent"
    ledger.close()


def test_roles_plan_and_check_per_position_on_two_chains(
    tmp_path: Path,
    devnet: dict[str, Any],
    devnet2: dict[str, Any],
    devnet2_chain: Chain,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each position's own role (``[positions.roles]``, different allowances) on its own
    chain's lean Safe: ``roles plan --position safe-two`` plans chain two's only; once its
    owners executed it, ``roles check`` reads each position's role on its own chain (two
    matches the plan; one, never installed, is reported missing) and ``roles check
    --position safe-two`` passes alone."""
    import asyncio

    from agent.cli import main
    from agent.collectors.onchain import discover
    from agent.commands.roles import role_position, role_spec
    from agent.devnet.safe import Call, exec_batch
    from agent.planner.roles import owners_batch

    agent = "0x000000000000000000000000000000000000a9e7"
    deps = {"one": devnet, "two": devnet2}
    for name, dep in deps.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(dep))
    allowance = {"one": "1.5", "two": "2.5"}
    path = tmp_path / "roles.toml"
    path.write_text(
        f'[agent]\nstore_path = "{tmp_path}/a.sqlite"\njournal_path = "{tmp_path}/p.jsonl"\n'
        + "".join(f'[[chains]]\nname = "{n}"\ndeployment = "{tmp_path}/{n}.json"\n' for n in deps)
        + "".join(
            f'[[positions]]\nname = "safe-{n}"\nchain = "{n}"\ndeployment_safe = "safe_lean"\n'
            f'topup_asset = "WBTC"\nrepay_asset = "USDC"\n'
            f'[positions.roles]\nagent = "{agent}"\nallowance = "{allowance[n]}"\n'
            for n in deps
        )
        + f'[sinks]\nsafe_tx_builder_dir = "{tmp_path}/stb"\n'
    )
    assert main(["roles", "plan", "--config", str(path), "--position", "safe-two"]) == 0
    out = capsys.readouterr().out
    assert f"Safe {devnet2['safe_lean']['address']} (chain 31338)" in out
    assert "daily allowance: 2.5 WBTC withdrawn" in out and "MISMATCH" not in out
    # the owners of chain two's Safe execute the batch it planned
    s = load_settings(path)
    p = role_position(s, "safe-two")

    async def spec_of() -> Any:
        async with RpcClient(devnet2["rpc_url"]) as rpc:
            return role_spec(s, p, await discover(rpc, p.chain.config))

    spec = asyncio.run(spec_of())
    assert spec.allowance == 25 * 10**7  # 2.5 WBTC: this position's own allowance
    calls = [Call(t.to, bytes.fromhex(t.data[2:]), t.value) for t in owners_batch(spec)]
    lean = devnet2["safe_lean"]
    exec_batch(
        devnet2_chain, lean["address"], lean["owners"][0], lean["multisend_call_only"], calls
    )

    assert main(["roles", "check", "--config", str(path)]) == 1  # one's role is not installed
    out = capsys.readouterr().out
    one, two = out.split("position safe-two (chain two")
    assert one.startswith(f"position safe-one (chain one, Safe {devnet['safe_lean']['address']})")
    assert "no contract at this address" in one and "MISMATCH" in one
    assert "MISMATCH" not in two and "20/20 match the plan" in two, two
    assert main(["roles", "check", "--config", str(path), "--position", "safe-two"]) == 0
    assert "20/20 match the plan" in capsys.readouterr().out
