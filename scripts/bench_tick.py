"""Benchmark one tick's on-chain read against a fresh devnet: requests per tick (should stay 1
whatever the number of watched accounts) and wall time. Prints figures; asserts nothing.

    .venv/bin/python scripts/bench_tick.py [--ticks 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from agent.collectors.onchain import discover, read_snapshot, snapshot_calls
from agent.config import chain_config_from_deployment
from agent.core.anvil import AnvilProcess
from agent.core.market import MarketLayout
from agent.core.metrics import METRICS
from agent.core.rpc import RpcClient
from agent.devnet.deploy import deploy


async def bench(url: str, dep: dict[str, object], ticks: int) -> None:
    d: dict[str, dict[str, object]] = dep  # type: ignore[assignment]
    cfg = chain_config_from_deployment(dep)
    whales = [str(w) for w in d["accounts"]["whales"]]  # type: ignore[union-attr]
    async with RpcClient(url, source="rpc:bench") as rpc:
        base = await discover(rpc, cfg)
        print(
            f"{'accounts':>8} {'calls/tick':>10} {'requests/tick':>13} {'median ms':>9} {'p95 ms':>7}"
        )
        for n in (1, 4, len(whales) + 1):
            layout = MarketLayout(
                **{**base.__dict__, "accounts": (base.accounts + tuple(whales))[:n]}
            )
            times = []
            METRICS.reset()
            for _ in range(ticks):
                t0 = time.perf_counter()
                await read_snapshot(rpc, layout)
                times.append((time.perf_counter() - t0) * 1000)
            req = METRICS.sources["rpc:bench"].requests / ticks
            p95 = statistics.quantiles(times, n=20)[-1]
            print(
                f"{n:>8} {len(snapshot_calls(layout)):>10} {req:>13.1f} {statistics.median(times):>9.2f} {p95:>7.2f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ticks", type=int, default=50)
    args = ap.parse_args()
    with AnvilProcess() as anvil:
        dep = deploy(anvil.url, anvil_pid=anvil.pid)
        asyncio.run(bench(anvil.url, dep, args.ticks))


if __name__ == "__main__":
    main()
