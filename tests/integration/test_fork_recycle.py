"""A fork anvil past its memory limit is stopped between ticks and the next simulation starts a
fresh one (anvil's memory grows on a long-lived fork); the exporter counts it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agent.config import Settings
from agent.core.rpc_pool import RpcPool
from agent.ops.daemon import Operations
from agent.ops.procmem import rss_bytes
from agent.simulator.fork import ForkSimulator

pytestmark = pytest.mark.integration


async def test_a_fork_over_its_limit_is_recycled(
    devnet: dict[str, Any], devnet_url: str, fork_upstream: Callable[..., RpcPool]
) -> None:
    ops = Operations(Settings())
    sim = ForkSimulator(
        fork_upstream(devnet_url), pool=devnet["aave"]["pool"], chain_id=int(devnet["chain_id"])
    )
    try:
        rpc = await sim.ensure(0)
        first = sim.pid
        assert first is not None and (rss_bytes(first) or 0) > 1 * 2**20
        assert not await ops.recycle_fork(sim, 100_000)  # under the limit: kept
        assert not await ops.recycle_fork(sim, 0)  # 0 = never
        assert sim.pid == first
        assert await ops.recycle_fork(sim, 1)  # every anvil holds more than 1 MB
        assert sim.pid is None
        rpc = await sim.ensure(0)
        assert sim.pid not in (None, first)
        assert int(await rpc.request("eth_chainId"), 16) == int(devnet["chain_id"])
        assert b"hedge_agent_forks_recycled_total 1.0" in ops.telemetry.render()
    finally:
        await sim.stop()
        ops.telemetry.close()
