"""The warm fork against the real devnet, its upstream reads counted by a JSON-RPC proxy on
loopback (scripts/bench_support/proxy.py, no added latency): a second proposal at the same
block reads nothing from the upstream, a fork moved to a new block fetches what it needs in a
few batched requests, a fork replaced at the same block reads nothing again, and every result is
the one a fresh fork gives at that block, including state changed on the chain in between."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.collectors.onchain import discover, read_snapshot
from agent.config import chain_config_from_deployment
from agent.core.abi import load_abi
from agent.core.multicall import Call
from agent.core.rpc import RpcClient
from agent.core.rpc_pool import RpcPool
from agent.core.units import WAD
from agent.devnet.chain import Chain
from agent.planner.safe import SafeTx, build_safe_tx
from agent.planner.topup import plan_topup
from agent.simulator.fork import SAFE_NONCE_SLOT, ForkSimulator, ForkUnavailable, SimulationResult

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_support.proxy import RpcProxy
from faults.proxy import RpcProxy as FaultProxy

pytestmark = pytest.mark.integration


async def _top_up(devnet: dict[str, Any]) -> tuple[SafeTx, str, str, list[Call]]:
    safe = devnet["safe"]["address"]
    async with RpcClient(devnet["rpc_url"]) as rpc:
        layout = await discover(rpc, chain_config_from_deployment(devnet))
        snap = await read_snapshot(rpc, layout)
    plan = plan_topup(
        layout=layout,
        account_addr=safe,
        account=snap.accounts[safe],
        asset=layout.reserve("WETH"),
        reserve=snap.reserves["WETH"],
        target_hf_wad=21 * WAD // 10,
        max_spend_base=None,
        allowance=0,
    )
    st = build_safe_tx(safe, devnet["safe"]["multisend_call_only"], plan.transactions)
    reads = [Call("nonce", safe, load_abi("Safe"), "nonce")]
    return st, safe, layout.pool, reads


def _same(a: SimulationResult, b: SimulationResult) -> None:
    """Equal in everything but the fork-local transaction hashes."""
    assert a.success and b.success, (a.error, b.error)
    strip = tuple(replace(t, tx_hash=None) for t in a.transactions)
    assert replace(a, transactions=strip) == replace(
        b, transactions=tuple(replace(t, tx_hash=None) for t in b.transactions)
    )


async def _pinned(sim: ForkSimulator, head: int) -> None:
    """Blocks mined on the fork one second apart, whatever the wall clock says: the results
    of two simulations then compare exactly (interest accrues by the second)."""
    rpc = await sim.ensure(head)
    await rpc.request("anvil_setBlockTimestampInterval", [1])


async def test_warm_fork_reads_the_upstream_once_per_block_and_matches_a_fresh_fork(
    devnet: dict[str, Any], devnet_url: str, fork_upstream: Callable[..., RpcPool]
) -> None:
    st, safe, pool, reads = await _top_up(devnet)
    chain = Chain(devnet_url)
    chain_id = int(devnet["chain_id"])
    with RpcProxy(devnet_url, latency_ms=0) as proxy:
        warm = ForkSimulator(fork_upstream(proxy.url), pool=pool, chain_id=chain_id)
        fresh = ForkSimulator(fork_upstream(proxy.url), pool=pool, chain_id=chain_id)
        try:
            head = chain.block_number()
            await _pinned(warm, head)
            c0 = proxy.counts()
            first = await warm.simulate_safe(head, st, safe, "top-up", reads=reads)
            cold = proxy.counts().minus(c0)
            assert cold.requests > 50  # a new fork reads every account and slot it touches
            c0 = proxy.counts()
            second = await warm.simulate_safe(head, st, safe, "top-up", reads=reads)
            # All of it kept across the revert; one request asks the block's hash (a reorg at
            # the same height is a new block: issue 24.5).
            again_reads = proxy.counts().minus(c0)
            assert again_reads.requests == 1, again_reads
            assert dict(again_reads.methods) == {"eth_getBlockByNumber": 1}
            _same(second, first)
            assert warm.relay_stats.served >= cold.methods["eth_getStorageAt"]

            # The chain moves on and the Safe's state changes on it (its nonce, in storage):
            # the moved fork must see the new value, not the last block's.
            async with RpcClient(devnet_url) as rpc:
                safe_abi = load_abi("Safe")
                raw = await rpc.eth_call(safe, safe_abi.encode_hex("nonce"))
                nonce = int(safe_abi.decode_output("nonce", raw)[0])
            new_nonce = "0x" + (nonce + 3).to_bytes(32, "big").hex()
            chain.rpc("anvil_setStorageAt", [safe, hex(SAFE_NONCE_SLOT), new_nonce])
            chain.mine(12)
            head = chain.block_number()
            c0 = proxy.counts()
            await _pinned(warm, head)
            moved = await warm.simulate_safe(head, st, safe, "top-up", reads=reads)
            step = proxy.counts().minus(c0)
            # the block's hash, anvil_reset's block and chain id, the working set in one
            # JSON-RPC batch, and a slot keyed by the block number itself (the EIP-2935
            # block-hash history)
            assert step.requests <= 6, step
            assert sum(step.methods.values()) > 50  # the same reads, batched
            assert moved.reads["nonce"] == (nonce + 3 + 1,)  # executed at the new nonce
            assert moved.fork_block == head
            c0 = proxy.counts()
            await _pinned(fresh, head)
            reference = await fresh.simulate_safe(head, st, safe, "top-up", reads=reads)
            assert proxy.counts().minus(c0).requests > 50
            _same(moved, reference)

            # A fork replaced at the same block (a frozen or recycled one) reads nothing again
            # but what a new anvil process asks at start.
            await warm.stop()
            c0 = proxy.counts()
            await _pinned(warm, head)
            again = await warm.simulate_safe(head, st, safe, "top-up", reads=reads)
            restart = proxy.counts().minus(c0)
            assert "eth_getStorageAt" not in restart.methods, restart
            assert restart.requests <= 5, restart  # the block's hash, and a new anvil's start
            _same(again, reference)
        finally:
            await warm.stop()
            await fresh.stop()


async def test_an_upstream_failure_still_reaches_the_fork_through_the_relay(
    devnet: dict[str, Any], devnet_url: str, fork_upstream: Callable[..., RpcPool]
) -> None:
    """The relay hands the upstream's HTTP errors to the fork as they came: a failing upstream
    is infrastructure (ForkUnavailable, retried), never a verdict on the proposal; once it
    recovers, the same simulator works again."""
    st, safe, pool, reads = await _top_up(devnet)
    proxy = FaultProxy(devnet_url)
    upstream = fork_upstream(proxy.url, timeout_s=30)
    sim = ForkSimulator(upstream, pool=pool, chain_id=int(devnet["chain_id"]), call_timeout_s=30)
    try:
        head = Chain(devnet_url).block_number()
        proxy.inject("http:502", {"eth_getStorageAt", "eth_getAccountInfo", "eth_getCode"})
        with pytest.raises(ForkUnavailable):
            await sim.simulate_safe(head, st, safe, "top-up", reads=reads)
        proxy.clear()
        res = await sim.simulate_safe(head, st, safe, "top-up", reads=reads)
        assert res.success, res.error
    finally:
        await sim.stop()
        proxy.close()


async def test_start_up_priming_leaves_the_working_set_in_the_fork(
    devnet: dict[str, Any], devnet_url: str, fork_upstream: Callable[..., RpcPool]
) -> None:
    """Start-up priming (``Proposer.warm_up``): proposals simulated in a sequence, reverted,
    then ``prime()``. anvil forgot on the revert what the sequence loaded; ``prime()`` loads it
    again (batched, from the relay's memory) outside any snapshot, so the next proposal at
    that block has the fork read nothing through the relay, and its result is a fresh fork's."""
    st, safe, pool, reads = await _top_up(devnet)
    chain = Chain(devnet_url)
    chain_id = int(devnet["chain_id"])
    with RpcProxy(devnet_url, latency_ms=0) as proxy:
        warm = ForkSimulator(fork_upstream(proxy.url), pool=pool, chain_id=chain_id)
        fresh = ForkSimulator(fork_upstream(proxy.url), pool=pool, chain_id=chain_id)
        try:
            head = chain.block_number()
            await _pinned(warm, head)
            async with warm.sequence(head):  # the warm-up's sequence, discarded
                taught = await warm.simulate_safe(head, st, safe, "top-up", reads=reads)
            assert taught.success, taught.error
            before = replace(warm.relay_stats)
            await warm.prime()
            loaded = warm.relay_stats.served - before.served
            assert loaded > 50, warm.relay_stats  # the accounts and slots, from memory
            assert warm.relay_stats.forwarded == before.forwarded  # none from the upstream

            before = replace(warm.relay_stats)
            c0 = proxy.counts()
            first = await warm.simulate_safe(head, st, safe, "top-up", reads=reads)
            # anvil holds all of it: no state through the relay (at most a lookup of a
            # transaction the fork mined itself, answered locally: 79 reads unprimed), and
            # upstream only the block's hash (the reorg check)
            assert warm.relay_stats.served - before.served <= 2, (warm.relay_stats, before)
            assert warm.relay_stats.forwarded == before.forwarded
            assert dict(proxy.counts().minus(c0).methods) == {"eth_getBlockByNumber": 1}
            before = replace(warm.relay_stats)
            await warm.prime()  # nothing left to load
            assert warm.relay_stats == before

            await _pinned(fresh, head)
            _same(first, await fresh.simulate_safe(head, st, safe, "top-up", reads=reads))
        finally:
            await warm.stop()
            await fresh.stop()
