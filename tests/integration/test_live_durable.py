"""Crash-safe live sending against a real anvil: each transaction is journaled as an intent
(hash, nonce, account, raw) before it is broadcast; reconciliation settles every open intent
by hash and nonce (mined, pending, replaced, dropped) and never sends again; the signer's
nonce is re-read before each send, so a transaction sent by hand never blocks the agent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from pydantic import SecretStr

from agent.core.anvil import AnvilProcess
from agent.core.rpc import RpcClient, send_client
from agent.sinks.config import LiveConfig
from agent.sinks.live import LiveSender, open_sends_of, reconcile_live_sends, send_durably
from agent.store.ledger import ProposalLedger

pytestmark = pytest.mark.integration

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil account 1
ME = Account.from_key(KEY).address
TO = "0x000000000000000000000000000000000000dEaD"


@pytest.fixture
def anvil() -> Any:
    with AnvilProcess() as a:
        yield a


async def _nonce(rpc: RpcClient, tag: str = "latest") -> int:
    return int(await rpc.request("eth_getTransactionCount", [ME, tag]), 16)


async def test_one_transaction_per_proposal_and_reconciliation(
    anvil: AnvilProcess, tmp_path: Path
) -> None:
    cfg = LiveConfig(enabled=True, signer_key=SecretStr(KEY), private_rpc_url=SecretStr(anvil.url),
                     receipt_timeout_s=10)  # fmt: skip
    store = ProposalLedger(tmp_path / "s.sqlite")
    async with (
        RpcClient(anvil.url) as rpc,
        send_client(cfg.private_rpc_url.get_secret_value()) as send,
    ):
        sender = LiveSender(cfg, chain_id=31337, read_rpc=rpc, send_rpc=send)
        # 1. a proposal is sent once: the second call finds its transaction and sends nothing
        first = await send_durably(sender, store, "k1", [(TO, "0x", 1)], poll_s=0.05)
        again = await send_durably(sender, store, "k1", [(TO, "0x", 1)], poll_s=0.05)
        assert [s["status"] for s in first] == ["mined"] and again == first
        assert await _nonce(rpc) == 1

        # 2. a transaction sent by hand from the same signer: the next send re-reads the nonce
        manual = sender._account.sign_transaction(
            {
                "type": 2,
                "chainId": 31337,
                "nonce": 1,
                "to": TO,
                "value": 0,
                "gas": 21000,
                "maxFeePerGas": 10**10,
                "maxPriorityFeePerGas": 10**9,
            }
        )
        await rpc.request("eth_sendRawTransaction", ["0x" + bytes(manual.raw_transaction).hex()])
        second = await send_durably(sender, store, "k2", [(TO, "0x", 2)], poll_s=0.05)
        assert second[0]["nonce"] == 2 and second[0]["status"] == "mined"

        # 3. crash after the intent, before the broadcast: found nowhere, nonce unused -> open
        # until the give-up time, then dropped; never re-sent
        signed = await sender.sign(TO, "0x", value=3)
        store.record_live_intent(tx_hash=signed.tx.tx_hash, idempotency_key="k3", account=ME,
                                 nonce=signed.tx.nonce, chain_id=31337, raw_tx=signed.raw)  # fmt: skip
        assert await reconcile_live_sends(store, rpc, give_up_after_s=3600) == []
        assert [s.status for s in open_sends_of(store, ME)] == ["intent"]
        assert await reconcile_live_sends(store, rpc, give_up_after_s=-1)
        assert [s.status for s in store.live_sends("k3")] == ["dropped"]
        assert await _nonce(rpc) == 3  # nothing was sent for k3

        # 4. a pending transaction (mining paused), then mined: pending -> mined
        await rpc.request("evm_setAutomine", [False])
        pending = await sender.sign(TO, "0x", value=4)
        store.record_live_intent(tx_hash=pending.tx.tx_hash, idempotency_key="k4", account=ME,
                                 nonce=pending.tx.nonce, chain_id=31337, raw_tx=pending.raw)  # fmt: skip
        await sender.broadcast(pending)
        store.set_live_status(pending.tx.tx_hash, "sent", "answer lost")
        await reconcile_live_sends(store, rpc, give_up_after_s=3600)
        assert [s.status for s in store.live_sends("k4")] == ["pending"]
        await rpc.request("evm_mine")
        await rpc.request("evm_setAutomine", [True])
        await reconcile_live_sends(store, rpc, give_up_after_s=3600)
        assert [s.status for s in store.live_sends("k4")] == ["mined"]

        # 5. an intent whose nonce another transaction used: replaced, never re-sent
        lost = await sender.sign(TO, "0x", value=5)
        store.record_live_intent(tx_hash=lost.tx.tx_hash, idempotency_key="k5", account=ME,
                                 nonce=lost.tx.nonce, chain_id=31337, raw_tx=lost.raw)  # fmt: skip
        other = await sender.sign(TO, "0x", value=6)  # same nonce, other transaction
        assert other.tx.nonce == lost.tx.nonce
        await sender.broadcast(other)
        await reconcile_live_sends(store, rpc, give_up_after_s=3600)
        assert [s.status for s in store.live_sends("k5")] == ["replaced"]
        assert open_sends_of(store, ME) == []
        # every transaction the chain saw from the signer: k1, manual, k2, k4, other
        assert await _nonce(rpc) == 5
    store.close()


async def test_lost_broadcast_answer_leaves_an_open_intent_not_a_second_send(
    anvil: AnvilProcess, tmp_path: Path
) -> None:
    """The private RPC accepts nothing (refused): the intent stays open as ``sent`` with the
    reason; the same proposal is not sent again, and a new one waits for it."""
    cfg = LiveConfig(enabled=True, signer_key=SecretStr(KEY),
                     private_rpc_url=SecretStr("http://127.0.0.1:9"), receipt_timeout_s=5)  # fmt: skip
    store = ProposalLedger(tmp_path / "s.sqlite")
    async with (
        RpcClient(anvil.url) as rpc,
        send_client(cfg.private_rpc_url.get_secret_value()) as send,
    ):
        sender = LiveSender(cfg, chain_id=31337, read_rpc=rpc, send_rpc=send)
        sender._chain_checked = True  # the refusing endpoint cannot answer eth_chainId either
        out = await send_durably(sender, store, "k1", [(TO, "0x", 1)], poll_s=0.05)
        assert [s["status"] for s in out] == ["sent"] and "broadcast answer lost" in out[0][
            "detail"
        ]
        assert await send_durably(sender, store, "k1", [(TO, "0x", 1)]) == out
        assert [s.idempotency_key for s in open_sends_of(store, ME)] == ["k1"]
        assert await _nonce(rpc) == 0
    store.close()


def test_forks_left_by_a_dead_daemon_are_reaped(tmp_path: Path) -> None:
    """The pidfile a fork leaves names its owner; when the owner is dead (a daemon killed with
    -9 on a system without PR_SET_PDEATHSIG), the next start kills the fork. A live owner's
    fork is left alone."""
    import json
    import subprocess

    from agent.core.anvil import reap_orphans

    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = AnvilProcess(pid_dir=tmp_path)
    orphan.start()
    kept = AnvilProcess(pid_dir=tmp_path)
    kept.start()
    try:
        assert orphan.proc is not None and kept.proc is not None
        pidfile = tmp_path / f"anvil-{orphan.proc.pid}.json"
        info = json.loads(pidfile.read_text())
        assert info["owner"] == os.getpid() and info["port"] == orphan.port
        pidfile.write_text(json.dumps(info | {"owner": dead.pid}))
        (tmp_path / f"anvil-{kept.proc.pid}.json").write_text(
            json.dumps({"pid": kept.proc.pid, "owner": os.getppid(), "port": kept.port})
        )
        assert reap_orphans(tmp_path) == [orphan.proc.pid]
        assert orphan.proc.wait(timeout=10) is not None
        assert not pidfile.exists()
        assert kept.alive() and (tmp_path / f"anvil-{kept.proc.pid}.json").exists()
    finally:
        orphan.stop()
        kept.stop()
    assert list(tmp_path.glob("anvil-*.json")) == []
