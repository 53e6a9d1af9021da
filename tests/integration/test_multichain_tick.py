"""The daemon's tick over two real devnet chains (chain ids 31337 and 31338): each read with
one Multicall3 call per tick, and a chain whose anvil is killed mid-run leaves the other
chain's reading, evaluation and readiness intact (its own positions wait, and say why)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.app import App
from agent.config import load_settings
from agent.core.anvil import AnvilProcess
from agent.core.errors import Halt
from agent.core.metrics import METRICS
from agent.devnet.chain import Chain
from agent.devnet.deploy import deploy, devnet_chain_id
from agent.pipeline.runner import Agent


@pytest.fixture
def chain2() -> Iterator[tuple[AnvilProcess, dict[str, Any]]]:
    """A second chain of our own (not the shared fixture): this test kills its anvil."""
    anvil = AnvilProcess(chain_id=devnet_chain_id(2))
    anvil.start()
    try:
        yield anvil, deploy(anvil.url, anvil_pid=anvil.pid, chain_index=2)
    finally:
        anvil.stop()


def _config(tmp_path: Path, dep1: dict[str, Any], dep2: dict[str, Any]) -> Path:
    for i, dep in ((1, dep1), (2, dep2)):
        (tmp_path / f"dep{i}.json").write_text(json.dumps(dep))
    off = "\n".join(
        f"[collectors.{c}]\nenabled = false"
        for c in ("defillama", "hyperliquid", "dydx", "closes", "liquidations")
    )
    path = tmp_path / "multi.toml"
    path.write_text(
        f"""
[agent]
store_path = "{tmp_path}/agent.sqlite"
journal_path = "{tmp_path}/proposals.jsonl"
backfill_hours = 0

[[chains]]
name = "one"
deployment = "{tmp_path}/dep1.json"
timeout_s = 2

[[chains]]
name = "two"
deployment = "{tmp_path}/dep2.json"
timeout_s = 2

[[positions]]
chain = "one"
[[positions]]
chain = "two"

[simulator]
enabled = false

[sinks]
safe_tx_builder_dir = "{tmp_path}/stb"
{off}
"""
    )
    return path


async def test_each_chain_is_read_in_one_call_and_a_dead_chain_is_left_out(
    tmp_path: Path, devnet: dict[str, Any], chain2: tuple[AnvilProcess, dict[str, Any]]
) -> None:
    anvil2, dep2 = chain2
    settings = load_settings(_config(tmp_path, devnet, dep2))
    async with App(settings) as app:
        agent = Agent(app.daemon_parts())
        await agent.setup()
        assert set(agent.layouts) == {"one", "two"}
        assert [p.chain.chain_id for p in agent.proposers] == [31337, 31338]
        first = await agent.tick(1)
        # one snapshot call per chain per tick (eth_call to Multicall3), on each chain's RPC
        calls = METRICS.snapshot()
        assert calls["rpc:one"]["requests"] == calls["rpc:two"]["requests"]
        store = app.store
        one, two = store.latest("tvl.aave-v3.one"), store.latest("tvl.aave-v3.two")
        assert one is not None and two is not None
        assert one.source.startswith("onchain:one:") and two.source.startswith("onchain:two:")
        assert app.ops.telemetry.dependencies["rpc:two"].ok

        anvil2.stop()  # chain two's node is gone (process group killed)
        Chain(devnet["rpc_url"]).mine()  # a new block, no time jump (others share this chain)
        with structlog.testing.capture_logs() as events:
            report = await agent.tick(2)  # does not raise: chain one is still protected
        after = store.latest("tvl.aave-v3.one")
        assert report.block_number > first.block_number
        assert after is not None and after.source == f"onchain:one:block={report.block_number}"
        assert store.latest("tvl.aave-v3.two") == two  # nothing new, nothing lost
        (unread,) = [e for e in events if e["event"] == "chain.unread"]
        assert unread["error"].startswith("two: ") and "its positions wait" in unread["note"]
        dep = app.ops.telemetry.dependencies["rpc:two"]
        assert not dep.ok and dep.error
        assert app.ops.telemetry.dependencies["rpc:one"].ok
        assert app.ops.telemetry.readiness()[0] is False  # /readyz tells the operator


async def test_the_chain_id_is_checked_in_the_snapshot_batch(
    tmp_path: Path, devnet: dict[str, Any]
) -> None:
    """No eth_chainId per tick (the snapshot's Multicall3 batch reads block.chainid), and a
    node whose chain id changes under the daemon still halts it, with the one message."""
    (tmp_path / "dep.json").write_text(json.dumps(devnet))
    path = tmp_path / "one.toml"
    path.write_text(
        f'[agent]\nstore_path = "{tmp_path}/a.sqlite"\njournal_path = "{tmp_path}/p.jsonl"\n'
        f'backfill_hours = 0\n[chain]\nname = "one"\ndeployment = "{tmp_path}/dep.json"\n'
        f'[simulator]\nenabled = false\n[sinks]\nsafe_tx_builder_dir = "{tmp_path}/stb"\n'
        "[collectors.liquidations]\nenabled = false\n"
    )
    chain = Chain(devnet["rpc_url"])
    async with App(load_settings(path)) as app:
        agent = Agent(app.daemon_parts())
        await agent.setup()
        await agent.tick(1)
        assert METRICS.sources["rpc:one"].methods == {"eth_call": 1}  # the whole tick
        chain.rpc("anvil_setChainId", [5])
        try:
            with pytest.raises(Halt, match=r"is on chain 5, configuration expects 31337"):
                await agent.tick(2)
        finally:
            chain.rpc("anvil_setChainId", [31337])


def _send_on(chain: Chain) -> tuple[str, str, int, int]:
    """A real transaction mined on ``chain``: (hash, sender, nonce, block)."""
    sender = chain.accounts()[0]
    nonce = int(chain.rpc("eth_getTransactionCount", [sender, "latest"]), 16)
    tx_hash = chain.rpc("eth_sendTransaction", [{"from": sender, "to": sender, "value": "0x0"}])
    receipt = chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.01)
    return tx_hash, sender, nonce, int(receipt["blockNumber"])


@pytest.mark.integration  # each devnet chain snapshotted and reverted around the test
async def test_each_chains_sends_are_reconciled_on_that_chains_rpc(
    tmp_path: Path, devnet: dict[str, Any], devnet2: dict[str, Any]
) -> None:
    """A send recorded for the second chain (chain id 31338) is settled on the second chain's
    RPC, at start-up and at a tick: one reconciliation per chain, not only on the first's
    (which knows no such hash: there it would stay open, never learning it was mined)."""
    two = Chain(devnet2["rpc_url"])
    settings = load_settings(_config(tmp_path, devnet, devnet2))
    async with App(settings) as app:
        ledger = app.ledger

        def intent(tx: tuple[str, str, int, int], key: str) -> None:
            tx_hash, sender, nonce, _ = tx
            ledger.record_live_intent(
                tx_hash=tx_hash,
                idempotency_key=key,
                account=sender,
                nonce=nonce,
                chain_id=31338,
                raw_tx="0x",
            )

        def status(tx_hash: str) -> tuple[str, str | None]:
            (s,) = [s for s in ledger.live_sends() if s.tx_hash == tx_hash]
            return s.status, s.detail

        # a kill left the intent open: the send was mined on chain two meanwhile
        at_start = _send_on(two)
        intent(at_start, "topup:31338:before")
        agent = Agent(app.daemon_parts())
        await agent.setup()
        assert status(at_start[0]) == ("mined", f"block {at_start[3]}")

        during = _send_on(two)  # an open send the next tick settles
        intent(during, "topup:31338:during")
        assert status(during[0]) == ("intent", None)
        # Chain two (listed second) runs 10 minutes ahead: it sets the evaluation clock, so
        # the tick reports its block and time, not the first-listed chain's.
        one = Chain(devnet["rpc_url"]).w3.eth.get_block("latest")
        ahead = max(int(one["timestamp"]), int(two.w3.eth.get_block("latest")["timestamp"])) + 600
        two.rpc("evm_mine", [ahead])
        head = int(two.w3.eth.block_number)
        report = await agent.tick(1)
        assert (report.block_number, report.timestamp) == (head, ahead)
        assert status(during[0]) == ("mined", f"block {during[3]}")
        assert not ledger.live_sends(open_only=True)
