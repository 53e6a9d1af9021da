"""Reading only what is new, on the devnet: the liquidation collector scans from its stored
checkpoint (no logs at all within an hour, only the new blocks after it), an hour with a real
liquidation is valued as by hand, and the stored series equals a full re-scan's. The start-up
backfill after a restart reads only the downtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_liquidations import HOUR, liquidate_safe, usd_by_hand

from agent.collectors.liquidations import collect_liquidations
from agent.collectors.onchain import discover, read_snapshot, snapshot_observations
from agent.config import chain_config_from_deployment
from agent.core.metrics import METRICS
from agent.core.rpc import RpcClient
from agent.devnet.chain import Chain
from agent.ops.incremental import backfill_start, checkpoint_name, collect_new_liquidations
from agent.store.sqlite import Store

pytestmark = pytest.mark.integration

KEY = "liquidations.aave-v3.devnet"


def _get_logs() -> int:
    return sum(s.methods.get("eth_getLogs", 0) for s in METRICS.sources.values())


async def test_liquidations_read_from_the_checkpoint(
    devnet: dict[str, Any], devnet_chain: Chain, devnet_url: str, tmp_path: Path
) -> None:
    c = devnet_chain
    store = Store(tmp_path / "s.sqlite")
    args = {"lookback_blocks": 10_000, "chunk_blocks": 50, "confirmations": 0}
    async with RpcClient(devnet_url, source="rpc:t") as rpc:
        layout = await discover(rpc, chain_config_from_deployment(devnet))
        c.mine(HOUR)
        first = await collect_new_liquidations(
            rpc, layout, store, head=await rpc.block_number(), **args
        )
        assert first.stored > 0 and first.next_hour == first.scan.end_hour
        cp = store.checkpoint(checkpoint_name("devnet"))
        assert cp is not None and cp.cursor["next_hour"] == first.next_hour
        assert cp.cursor["next_block"] == first.scan.to_block + 1

        # Same hour again: nothing to read, no eth_getLogs.
        METRICS.reset()
        c.mine(1)
        again = await collect_new_liquidations(
            rpc, layout, store, head=await rpc.block_number(), **args
        )
        assert again.stored == 0 and again.scan.observations == [] and _get_logs() == 0

        # A real liquidation, then the hour closes: only the new blocks are scanned.
        event = liquidate_safe(c, devnet)
        c.mine(HOUR)
        METRICS.reset()
        head = await rpc.block_number()
        new = await collect_new_liquidations(rpc, layout, store, head=head, **args)
        assert new.from_hour == first.next_hour
        assert new.scan.from_block == first.scan.to_block + 1  # nothing read twice
        assert 1 <= _get_logs() <= (new.scan.to_block - new.scan.from_block) // 50 + 1
        hour = c.timestamp(event["block"]) // HOUR * HOUR
        assert store.latest(KEY) is not None
        stored = store.series(KEY)
        assert stored[stored.index.asi8 // 10**9 == hour].iloc[0] == float(
            usd_by_hand(c, devnet, event)
        )

        # The incremental series is exactly a full re-scan's, hour for hour.
        full = await collect_liquidations(rpc, layout, head=head, **args)
    full_series = {o.ts: o.value for o in full.observations}
    ours = {int(t.timestamp()): float(v) for t, v in stored.items()}
    assert {t: v for t, v in ours.items() if t in full_series} == full_series
    assert sorted(ours) == list(range(min(ours), max(ours) + HOUR, HOUR))  # no gap
    store.close()


async def test_restart_backfills_only_the_downtime(
    devnet: dict[str, Any], devnet_chain: Chain, devnet_url: str, tmp_path: Path
) -> None:
    c = devnet_chain
    store = Store(tmp_path / "s.sqlite")
    async with RpcClient(devnet_url, source="rpc:t") as rpc:
        layout = await discover(rpc, chain_config_from_deployment(devnet))
        head_ts = c.timestamp(c.block_number())
        # Empty store: the whole window.
        assert backfill_start(store, layout, head_ts=head_ts, hours=60, step_s=3600) == (
            head_ts - 60 * 3600
        )
        snap = await read_snapshot(rpc, layout)
        obs, _ = snapshot_observations(snap, layout)
        store.upsert(obs)
        c.mine(5 * HOUR)  # five hours of downtime
        head_ts = c.timestamp(c.block_number())
        start = backfill_start(store, layout, head_ts=head_ts, hours=60, step_s=3600)
        assert start == snap.timestamp + 3600  # just after the last stored snapshot
        # A long downtime is capped by the window.
        assert backfill_start(
            store, layout, head_ts=head_ts + 100 * HOUR, hours=60, step_s=3600
        ) == (head_ts + 100 * HOUR - 60 * 3600)
    store.close()
