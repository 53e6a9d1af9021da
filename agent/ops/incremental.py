"""Reading only what is new, so a daemon that runs for months (or restarts after downtime) does
the work of the gap, not of its whole look-back, every tick.

* Liquidations: a checkpoint in the store (``tail:liquidations:<chain>``) holds the first hour
  not yet stored and the first block after the last scan. Each tick scans from there to the last
  complete hour; a tick within the same hour reads no logs at all. The first run (no checkpoint)
  scans the configured look-back; after downtime the checkpoint is old and the scan covers the gap.
  An hour left out because an event could not be priced is where the next scan starts, so it is
  retried, never skipped.
* Start-up backfill: on-chain snapshots only from the last stored one onwards (capped by
  ``backfill_hours``), instead of re-reading the whole window on every restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.collectors.liquidations import (
    HOUR,
    BlockClock,
    LiquidationScan,
    hour_floor,
    liquidation_volume,
)
from agent.core.market import MarketLayout
from agent.core.rpc import RpcClient
from agent.store.sqlite import Store


def checkpoint_name(chain: str) -> str:
    return f"tail:liquidations:{chain}"


@dataclass(frozen=True)
class TailResult:
    scan: LiquidationScan
    stored: int
    from_hour: int
    next_hour: int  # where the next scan starts


async def collect_new_liquidations(
    rpc: RpcClient,
    layout: MarketLayout,
    store: Store,
    *,
    lookback_blocks: int,
    chunk_blocks: int,
    confirmations: int,
    head: int,
) -> TailResult:
    head = max(0, head - confirmations)
    clock = BlockClock(rpc)
    end_hour = hour_floor(await clock.ts(head))
    name = checkpoint_name(layout.chain)
    cp = store.checkpoint(name)
    cursor = cp.cursor if cp is not None and isinstance(cp.cursor, dict) else None
    if cursor is None:
        start_block = max(0, head - lookback_blocks + 1)
        start_hour, lo = hour_floor(await clock.ts(start_block)), 0
    else:
        start_hour, lo = int(cursor["next_hour"]), min(int(cursor["next_block"]), head)
    if end_hour <= start_hour:
        return TailResult(LiquidationScan([]), 0, start_hour, start_hour)
    scan = await liquidation_volume(
        rpc,
        layout,
        start_hour=start_hour,
        end_hour=end_hour,
        head=head,
        chunk_blocks=chunk_blocks,
        clock=clock,
        lo=lo,
    )
    stored_hours = {o.ts for o in scan.observations}
    missing = [h for h in range(start_hour, end_hour, HOUR) if h not in stored_hours]
    next_hour = missing[0] if missing else end_hour
    # The next scan's blocks start after this one's, unless an hour must be read again.
    next_block = scan.to_block + 1 if not missing else lo
    stored = store.advance(
        name,
        since=start_hour,
        cursor={"next_hour": next_hour, "next_block": max(lo, next_block)},
        done=False,
        observations=scan.observations,
    )
    return TailResult(scan, stored, start_hour, next_hour)


def backfill_start(
    store: Store, layout: MarketLayout, *, head_ts: int, hours: float, step_s: int
) -> int:
    """Where the start-up backfill begins: the window's start, or just after the last on-chain
    snapshot already stored if that is later (a restart reads only its downtime)."""
    window_start = head_ts - int(hours * 3600)
    last = store.latest(f"tvl.{layout.protocol}.{layout.chain}")
    if last is None or not last.source.startswith("onchain:") or last.ts > head_ts:
        return window_start
    return max(window_start, last.ts + step_s)
