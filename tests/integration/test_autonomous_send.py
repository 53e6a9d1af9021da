"""The autonomous executor's sending against a real anvil (issue 23 item 4): fees under the
configured cap, a stuck transaction replaced at the same nonce with fees bumped by exactly
``fee_bump_bps`` (the original ends ``replaced``, the nonce is used once), no replacement past
the cap, and after a restart a fresh journaled intent that never reached the chain is broadcast
as its own bytes, once; an old one is not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from pydantic import SecretStr

from agent.core.anvil import AnvilProcess
from agent.core.rpc import RpcClient
from agent.sinks.autonomous import AutonomousExecutor
from agent.sinks.config import AutonomousConfig, LiveConfig
from agent.sinks.guardian import GuardianConfig
from agent.sinks.live import LiveSender, send_durably
from agent.store.ledger import ProposalLedger

pytestmark = pytest.mark.integration

KEY = "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6"  # anvil account 9
ME = Account.from_key(KEY).address
TO = "0x000000000000000000000000000000000000dEaD"
GWEI = 10**9


@pytest.fixture
def anvil() -> Any:
    with AnvilProcess() as a:
        yield a


def _cfg(**kw: Any) -> LiveConfig:
    return LiveConfig(enabled=True, signer_key=SecretStr("x"), receipt_timeout_s=20, **kw)


async def _nonce(rpc: RpcClient) -> int:
    return int(await rpc.request("eth_getTransactionCount", [ME, "latest"]), 16)


async def test_fee_cap_and_stuck_transaction_replaced_with_bumped_fees(
    anvil: AnvilProcess, tmp_path: Path
) -> None:
    store = ProposalLedger(tmp_path / "s.sqlite")
    async with RpcClient(anvil.url) as rpc:
        base = int((await rpc.get_block("latest"))["baseFeePerGas"], 16)
        tip = 2 * GWEI
        # room for one bump of 2 x base + tip (12.5%), not for two
        cap = -(-(2 * base + tip) * 11_250 // 10_000) + GWEI // 10
        cfg = _cfg(min_priority_fee_wei=tip, max_fee_per_gas_wei=cap, replace_after_s=0.3,
                   fee_bump_bps=1_250)  # fmt: skip
        sender = LiveSender(cfg, chain_id=31337, read_rpc=rpc, account=Account.from_key(KEY),
                            send_rpc=rpc)  # fmt: skip
        # under a tight cap the fee is the cap
        tight = LiveSender(_cfg(min_priority_fee_wei=tip, max_fee_per_gas_wei=base + GWEI),
                           chain_id=31337, read_rpc=rpc, account=Account.from_key(KEY),
                           send_rpc=rpc)  # fmt: skip
        s = await tight.sign(TO, "0x", value=1, gas=21_000)
        # 2 x base + tip would be base + 3 gwei; the cap wins, and the tip never exceeds it
        assert (s.tx.max_fee_per_gas, s.tx.max_priority_fee_per_gas) == (
            base + GWEI,
            min(tip, base + GWEI),
        )

        await rpc.request("evm_setAutomine", [False])

        async def mine_later() -> None:
            await asyncio.sleep(1.0)  # past two replace intervals: one bump fits, one not
            await rpc.request("evm_mine")

        miner = asyncio.create_task(mine_later())
        out = await send_durably(sender, store, "k1", [(TO, "0x", 1)], poll_s=0.05)
        await miner
        await rpc.request("evm_setAutomine", [True])
        by_status: dict[str, list[dict[str, Any]]] = {}
        for x in out:
            by_status.setdefault(x["status"], []).append(x)
        assert sorted(by_status) == ["mined", "replaced"], out
        first, bumped = by_status["replaced"][0], by_status["mined"][0]
        assert first["nonce"] == bumped["nonce"] == 0
        receipt = await rpc.request("eth_getTransactionReceipt", [bumped["tx_hash"]])
        tx = await rpc.request("eth_getTransactionByHash", [bumped["tx_hash"]])
        # by hand: each fee x 1.125, rounded up; the max fee at least 2 x base + the new tip
        tip1 = -(-tip * 11_250 // 10_000)
        fee0 = 2 * base + tip
        assert int(tx["maxPriorityFeePerGas"], 16) == tip1
        assert int(tx["maxFeePerGas"], 16) == max(-(-fee0 * 11_250 // 10_000), tip1)
        assert int(tx["maxFeePerGas"], 16) <= cap
        assert int(receipt["status"], 16) == 1
        assert await _nonce(rpc) == 1  # one transaction for the proposal
        assert await rpc.request("eth_getTransactionReceipt", [first["tx_hash"]]) is None
        # a second bump would pass the cap: only one replacement was made
        assert len(out) == 2
    store.close()


async def test_restart_rebroadcasts_a_fresh_unsent_intent_once(
    anvil: AnvilProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("G_KEY", KEY)
    store = ProposalLedger(tmp_path / "s.sqlite")
    async with RpcClient(anvil.url) as rpc:
        ex = AutonomousExecutor(
            AutonomousConfig(rebroadcast_within_s=600),
            [GuardianConfig(account=ME, key_env="G_KEY")],
            (),
            chain_id=31337,
            rpc=rpc,
        )
        g = ex.guardian
        assert g is not None and g.address == ME
        signed = await g.sign(TO, "0x", value=7)
        store.record_live_intent(tx_hash=signed.tx.tx_hash, idempotency_key="k1", account=ME,
                                 nonce=signed.tx.nonce, chain_id=31337, raw_tx=signed.raw)  # fmt: skip
        # the kill came here: nothing reached the chain
        assert await _nonce(rpc) == 0
        assert await ex.rebroadcast_fresh(store, now=time.time()) == [signed.tx.tx_hash]
        for _ in range(100):
            if await rpc.request("eth_getTransactionReceipt", [signed.tx.tx_hash]):
                break
            await asyncio.sleep(0.02)
        assert await _nonce(rpc) == 1
        # a second restart finds the nonce used: nothing is sent again
        assert await ex.rebroadcast_fresh(store, now=time.time()) == []
        # an intent older than the window is left to reconciliation (dropped, never sent)
        old = await g.sign(TO, "0x", value=8)
        store.record_live_intent(tx_hash=old.tx.tx_hash, idempotency_key="k2", account=ME,
                                 nonce=old.tx.nonce, chain_id=31337, raw_tx=old.raw)  # fmt: skip
        assert await ex.rebroadcast_fresh(store, now=time.time() + 601) == []
        assert await _nonce(rpc) == 1
    store.close()
