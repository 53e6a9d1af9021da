"""Live submission for real: the guard, then the sender signs an owner's ``execTransaction`` of a
repay batch and sends it raw to the devnet anvil standing in for the private RPC. Every
captured log event and the journal are searched for the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from pydantic import SecretStr
from structlog.testing import capture_logs

from agent.collectors.onchain import discover, read_snapshot
from agent.config import chain_config_from_deployment
from agent.core.errors import ConfigError, Halt
from agent.core.rpc import RpcClient, send_client
from agent.core.units import WAD
from agent.devnet.chain import Chain
from agent.planner.repay import plan_repay
from agent.planner.safe import build_safe_tx
from agent.sinks.config import LiveConfig
from agent.sinks.journal import ProposalJournal
from agent.sinks.live import LiveSender, check_live_allowed

pytestmark = pytest.mark.integration

# anvil's default mnemonic, accounts 1 and 2: the devnet Safe owners.
ANVIL_KEYS = [
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
]


def owner_key(owner: str) -> str:
    for k in ANVIL_KEYS:
        if Account.from_key(k).address == owner:
            return k
    pytest.skip(f"devnet owner {owner} is not one of anvil's default accounts")


chain_config = chain_config_from_deployment


async def test_guard_and_send_repay_via_private_rpc(
    devnet: dict[str, Any], devnet_chain: Chain, tmp_path: Path
) -> None:
    safe, owner = devnet["safe"]["address"], devnet["safe"]["owners"][0]
    key = owner_key(owner)
    cfg = LiveConfig(enabled=True, signer_key=SecretStr(key), private_rpc_url=SecretStr(devnet["rpc_url"]),
                     receipt_timeout_s=30)  # fmt: skip
    journal = ProposalJournal(tmp_path / "proposals.jsonl")
    target = 2 * WAD
    with capture_logs() as events:
        async with RpcClient(devnet["rpc_url"], source="rpc:devnet") as rpc:
            layout = await discover(rpc, chain_config(devnet))
            snap = await read_snapshot(rpc, layout)
            plan = plan_repay(layout=layout, account_addr=safe, account=snap.accounts[safe],
                              asset=layout.reserve("USDC"), reserve=snap.reserves["USDC"],
                              target_hf_wad=target)  # fmt: skip
            st = build_safe_tx(safe, devnet["safe"]["multisend_call_only"], plan.transactions)
            # Refusals first: each names its reason and none echoes the key.
            refusals = []
            for args in [
                (LiveConfig(signer_key=SecretStr(key)), 31337, 31337, True, True),
                (cfg.model_copy(update={"signer_key": None}), 31337, 31337, True, False),
                (cfg, 1, 31337, True, True),
                (cfg, 31337, 31337, [True, False], True),
            ]:
                with pytest.raises((ConfigError, Halt)) as ei:
                    check_live_allowed(*args)  # type: ignore[arg-type]
                refusals.append(str(ei.value))
            check_live_allowed(cfg, await rpc.chain_id(), 31337, [True], signer_present=True)
            async with send_client(devnet["rpc_url"]) as send:
                sender = LiveSender(cfg, chain_id=31337, read_rpc=rpc, send_rpc=send)
                assert sender.address == owner
                sent = await sender.send_safe_exec(st)
                receipt = await sender.wait_receipt(sent.tx_hash, poll_s=0.05)
            after = (await read_snapshot(rpc, layout)).accounts[safe]
        journal.append({"idempotency_key": "live-test", "id": "live1", "status": "sent",
                        "live": sent.as_dict(), "config": cfg.model_dump(), "refusals": refusals})  # fmt: skip
    assert receipt["status"] == "0x1" and receipt["from"].lower() == owner.lower()
    assert after.health_factor_wad >= target
    assert any(e["event"] == "live.sent" for e in events)
    assert any(e["event"] == "live.mined" for e in events)
    assert "sinks.live.enabled is false" in refusals[0]
    assert "no signer configured" in refusals[1]
    assert "RPC reports chain id 1, configuration expects 31337" in refusals[2]
    assert "simulation failed this tick for transaction(s) 2 of 2" in refusals[3]
    # The key, with and without 0x, in any case, is nowhere.
    haystack = (
        json.dumps(events, default=repr) + journal.path.read_text() + "".join(refusals)
    ).lower()
    assert key.lower() not in haystack and key[2:].lower() not in haystack
    assert Account.from_key(key).address.lower() in haystack  # the address is fine to log
