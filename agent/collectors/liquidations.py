"""Aave V3 liquidation volume: ``LiquidationCall`` events from ``eth_getLogs``, valued in USD,
summed per hour.

Series ``liquidations.<protocol>.<chain>`` (e.g. ``liquidations.aave-v3.ethereum``), unit "usd",
ts = the hour's start (UTC), source ``onchain:<chain>:LiquidationCall``.

* **Valuation: the debt covered, at the debt asset's Aave oracle price at the event's block.**
  ``usd = debtToCover / 10^decimals(debtAsset) * AaveOracle.getAssetPrice(debtAsset) /
  BASE_CURRENCY_UNIT``. The debt repaid is what "liquidation volume" means on lending dashboards,
  and it excludes the liquidation bonus (collateral value = debt value x bonus). The price is the
  oracle's answer at the *end* of the event's block: liquidators back-run the oracle update that
  makes a position liquidatable in the same block, so the state before the block would often
  still hold the pre-drop price. Prices and the block's timestamp come from one Multicall3
  ``eth_call`` per block that has events.
* **Whole hours only, zeros included.** A scan is widened back to the first block of its first
  hour, and only hours that ended at or before the scanned head are emitted; an hour with no
  event is stored as 0 (S5 tells gaps from calm). So every stored value is the complete hour, and
  re-scanning rewrites the same value (idempotent upserts). ``known_at`` = the hour's end: the
  total is not known before, so backtests never see it early.
* An event whose price cannot be read (reverted call, non-positive answer) is a *problem*, and its
  hour is not stored rather than stored too low.
* ``eth_getLogs`` is chunked (``chunk_blocks``); a provider "range too large" / "more than N
  results" answer halves the chunk and retries the same start, down to a single block.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog
from eth_utils.address import to_checksum_address

from agent.core.abi import load_abi
from agent.core.errors import MalformedResponse, RpcError, SourceError
from agent.core.market import MarketLayout
from agent.core.models import Observation
from agent.core.multicall import Call, multicall
from agent.core.rpc import RpcClient

log = structlog.get_logger(__name__)

HOUR = 3600
EVENT = "LiquidationCall"

# Messages providers use when an eth_getLogs range or result set is too big (geth/Infura "query
# returned more than 10000 results", Alchemy "Log response size exceeded ...", QuickNode
# "eth_getLogs is limited to a 10,000 range", BSC/Polygon nodes "exceed maximum block range:
# 5000", Ankr "block range is too wide", others "block range too large", "range limit").
RANGE_ERROR = re.compile(
    r"more than \d+ results|block range|range (is )?too (large|wide|big)|log response size"
    r"|response size|too many (results|logs|blocks)|limited to (a )?[\d,]+"
    r"|max(imum)? (block )?range|range limit|exceed(s|ed)?\b.*\brange|returned too many",
    re.IGNORECASE,
)


def hour_floor(ts: int) -> int:
    return ts // HOUR * HOUR


def is_range_error(exc: Exception) -> bool:
    """A provider refusing an ``eth_getLogs`` range as too large (not a transport failure)."""
    if isinstance(exc, RpcError):
        text = f"{exc.rpc_message} {exc.data if isinstance(exc.data, str) else ''}"
        return bool(RANGE_ERROR.search(text))
    if isinstance(exc, SourceError):
        return bool(RANGE_ERROR.search(exc.message))
    return False


def liquidation_topic() -> str:
    abi = load_abi("Pool")
    for topic, item in abi.events.items():
        if item["name"] == EVENT:
            return "0x" + topic.hex()
    raise MalformedResponse("contracts_abi/Pool.json", f"no {EVENT} event in the Pool ABI")


# -- logs -----------------------------------------------------------------------------------


@dataclass
class LogsResult:
    logs: list[dict[str, Any]]
    chunk_blocks: int  # the chunk size that worked last (after any halving)
    requests: int


async def get_logs(
    rpc: RpcClient,
    address: str,
    topics: Sequence[str | None],
    from_block: int,
    to_block: int,
    *,
    chunk_blocks: int,
    on_chunk: Callable[[int, int, int], None] | None = None,
) -> LogsResult:
    """``eth_getLogs`` over ``[from_block, to_block]`` in chunks. On a range error the chunk is
    halved and the same start retried; a single block that still fails raises."""
    if chunk_blocks < 1:
        raise ValueError("chunk_blocks must be >= 1")
    chunk = chunk_blocks
    start = from_block
    out: list[dict[str, Any]] = []
    requests = 0
    while start <= to_block:
        end = min(to_block, start + chunk - 1)
        requests += 1
        try:
            got = await rpc.request(
                "eth_getLogs",
                [
                    {
                        "address": address,
                        "topics": list(topics),
                        "fromBlock": hex(start),
                        "toBlock": hex(end),
                    }
                ],
            )
        except (RpcError, SourceError) as exc:
            if end > start and is_range_error(exc):
                chunk = max(1, (end - start + 1) // 2)
                log.info(
                    "liquidations.get_logs.halved",
                    source=rpc.source,
                    from_block=start,
                    to_block=end,
                    chunk_blocks=chunk,
                    error=str(exc)[:200],
                )
                continue
            raise
        if not isinstance(got, list):
            raise MalformedResponse(rpc.source, f"eth_getLogs returned {type(got).__name__}")
        out += got
        if on_chunk is not None:
            on_chunk(start, end, len(got))
        start = end + 1
    return LogsResult(out, chunk, requests)


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Liquidation:
    block_number: int
    tx_hash: str
    log_index: int
    collateral_asset: str
    debt_asset: str
    user: str
    debt_to_cover: int
    liquidated_collateral_amount: int
    liquidator: str
    receive_a_token: bool


@dataclass(frozen=True)
class PricedLiquidation:
    event: Liquidation
    timestamp: int
    debt_price_base: int  # oracle base currency units (1e8 = 1 USD on v3 markets)
    debt_decimals: int
    base_unit: int

    @property
    def usd(self) -> Decimal:
        return (
            Decimal(self.event.debt_to_cover)
            * Decimal(self.debt_price_base)
            / (Decimal(10) ** self.debt_decimals * Decimal(self.base_unit))
        )


def _hex_int(v: Any, what: str) -> int:
    if not isinstance(v, str) or not v.startswith("0x"):
        raise ValueError(f"{what} is not a hex quantity: {v!r}")
    return int(v, 16)


def decode_liquidations(
    logs: Sequence[dict[str, Any]], pool: str
) -> tuple[list[Liquidation], list[str]]:
    """Decode raw ``LiquidationCall`` logs (removed logs are dropped). Returns events sorted by
    (block, log index) and problems for logs that do not decode."""
    abi = load_abi("Pool")
    events: list[Liquidation] = []
    problems: list[str] = []
    for i, raw in enumerate(logs):
        try:
            if raw.get("removed") is True:
                continue
            addr = raw.get("address")
            if not isinstance(addr, str) or addr.lower() != pool.lower():
                raise ValueError(f"log from {addr!r}, not the pool {pool}")
            topics = [bytes.fromhex(str(t)[2:]) for t in raw["topics"]]
            data = bytes.fromhex(str(raw["data"])[2:])
            decoded = abi.decode_event(topics, data)
            if decoded is None or decoded.method != EVENT:
                raise ValueError("not a decodable LiquidationCall")
            a = decoded.args
            events.append(
                Liquidation(
                    block_number=_hex_int(raw.get("blockNumber"), "blockNumber"),
                    tx_hash=str(raw.get("transactionHash")),
                    log_index=_hex_int(raw.get("logIndex"), "logIndex"),
                    collateral_asset=to_checksum_address(a["collateralAsset"]),
                    debt_asset=to_checksum_address(a["debtAsset"]),
                    user=to_checksum_address(a["user"]),
                    debt_to_cover=int(a["debtToCover"]),
                    liquidated_collateral_amount=int(a["liquidatedCollateralAmount"]),
                    liquidator=to_checksum_address(a["liquidator"]),
                    receive_a_token=bool(a["receiveAToken"]),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"LiquidationCall log {i} ({raw.get('transactionHash')}): {exc}")
    events.sort(key=lambda e: (e.block_number, e.log_index))
    return events, problems


async def price_liquidations(
    rpc: RpcClient, layout: MarketLayout, events: Sequence[Liquidation], *, head: int
) -> tuple[list[PricedLiquidation], list[tuple[Liquidation, str]]]:
    """Value each event with the debt asset's oracle price at its block (one Multicall3
    ``eth_call`` per block with events). Returns priced events and (event, reason) failures."""
    if not events:
        return [], []
    oracle_abi, mc_abi, erc20 = load_abi("AaveOracle"), load_abi("Multicall3"), load_abi("ERC20")
    decimals = {r.asset.lower(): r.decimals for r in layout.reserves}
    unknown = sorted({e.debt_asset for e in events if e.debt_asset.lower() not in decimals})
    setup = [
        Call("unit", layout.oracle, oracle_abi, "BASE_CURRENCY_UNIT"),
        Call("base", layout.oracle, oracle_abi, "BASE_CURRENCY"),
    ] + [Call(f"dec:{a}", a, erc20, "decimals") for a in unknown]
    out, failures = await multicall(rpc, setup, block=head, address=layout.multicall3)
    if "unit" not in out or "base" not in out:
        raise MalformedResponse(
            rpc.source,
            "AaveOracle base currency unreadable: " + "; ".join(f.reason for f in failures),
        )
    base_unit = int(out["unit"][0])
    if int(str(out["base"][0]), 16) != 0 or base_unit <= 0:
        raise MalformedResponse(
            rpc.source,
            f"AaveOracle {layout.oracle} prices in {out['base'][0]} (unit {base_unit}), not USD",
        )
    for a in unknown:
        if f"dec:{a}" in out:
            decimals[a.lower()] = int(out[f"dec:{a}"][0])

    by_block: dict[int, list[Liquidation]] = {}
    for e in events:
        by_block.setdefault(e.block_number, []).append(e)
    priced: list[PricedLiquidation] = []
    failed: list[tuple[Liquidation, str]] = []
    for block, evs in sorted(by_block.items()):
        assets = sorted({e.debt_asset for e in evs})
        calls = [Call("time", layout.multicall3, mc_abi, "getCurrentBlockTimestamp")] + [
            Call(f"price:{a}", layout.oracle, oracle_abi, "getAssetPrice", (a,)) for a in assets
        ]
        res, fails = await multicall(rpc, calls, block=block, address=layout.multicall3)
        reasons = {f.tag: f.reason for f in fails}
        if "time" not in res:
            raise MalformedResponse(
                rpc.source, f"Multicall3 gave no timestamp at block {block}: {reasons.get('time')}"
            )
        ts = int(res["time"][0])
        for e in evs:
            tag = f"price:{e.debt_asset}"
            dec = decimals.get(e.debt_asset.lower())
            if tag not in res:
                failed.append((e, reasons.get(tag, "price not read")))
            elif int(res[tag][0]) <= 0:
                failed.append((e, f"oracle price {int(res[tag][0])} is not positive"))
            elif dec is None:
                failed.append((e, f"decimals of {e.debt_asset} unreadable"))
            else:
                priced.append(PricedLiquidation(e, ts, int(res[tag][0]), dec, base_unit))
    return priced, failed


def hourly_volume(
    priced: Sequence[PricedLiquidation],
    *,
    protocol: str,
    chain: str,
    start_hour: int,
    end_hour: int,
    skip_hours: frozenset[int] = frozenset(),
) -> list[Observation]:
    """One observation per hour in ``[start_hour, end_hour)`` (0 when nothing happened), except
    ``skip_hours`` (hours with an unpriced event)."""
    sums: dict[int, Decimal] = {}
    for p in priced:
        h = hour_floor(p.timestamp)
        sums[h] = sums.get(h, Decimal(0)) + p.usd
    key = f"liquidations.{protocol}.{chain}"
    source = f"onchain:{chain}:{EVENT}"
    return [
        Observation(key, h, float(sums.get(h, Decimal(0))), "usd", source, h + HOUR)
        for h in range(start_hour, end_hour, HOUR)
        if h not in skip_hours
    ]


# -- block <-> time -------------------------------------------------------------------------


class BlockClock:
    """Block timestamps with a cache, and "first block at or after time T" searches."""

    def __init__(self, rpc: RpcClient) -> None:
        self.rpc = rpc
        self._ts: dict[int, int] = {}

    async def ts(self, number: int) -> int:
        if number not in self._ts:
            block = await self.rpc.get_block(number)
            self._ts[number] = _hex_int(block.get("timestamp"), "timestamp")
        return self._ts[number]

    async def first_at_or_after(self, t: int, lo: int, hi: int) -> int:
        """The first block in ``[lo, hi]`` with timestamp >= ``t``; ``hi + 1`` if none.
        Interpolation steps alternate with bisection, so uneven block times (a devnet's time
        jumps) still converge in O(log n) header reads."""
        if await self.ts(hi) < t:
            return hi + 1
        if await self.ts(lo) >= t:
            return lo
        step = 0
        while hi - lo > 1:  # invariant: ts(lo) < t <= ts(hi)
            if step % 2 == 0:
                tl, th = await self.ts(lo), await self.ts(hi)
                guess = lo + (t - tl) * (hi - lo) // max(1, th - tl)
                mid = min(max(guess, lo + 1), hi - 1)
            else:
                mid = (lo + hi) // 2
            step += 1
            if await self.ts(mid) >= t:
                hi = mid
            else:
                lo = mid
        return hi


# -- the collector --------------------------------------------------------------------------


@dataclass
class LiquidationScan:
    observations: list[Observation]
    events: list[PricedLiquidation] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    from_block: int = 0
    to_block: int = -1
    start_hour: int = 0
    end_hour: int = 0
    chunk_blocks: int = 0
    log_requests: int = 0


async def liquidation_volume(
    rpc: RpcClient,
    layout: MarketLayout,
    *,
    start_hour: int,
    end_hour: int,
    head: int,
    chunk_blocks: int,
    clock: BlockClock | None = None,
    lo: int = 0,
) -> LiquidationScan:
    """Hourly volume for the whole hours ``[start_hour, end_hour)``; ``end_hour`` must not be
    after the head block's hour (``hour_floor(ts(head))``), so each hour is complete."""
    if start_hour % HOUR or end_hour % HOUR:
        raise ValueError("start_hour and end_hour must be whole hours")
    clock = clock or BlockClock(rpc)
    if end_hour > hour_floor(await clock.ts(head)):
        raise ValueError(f"hour {end_hour} has not ended by block {head}")
    scan = LiquidationScan([], start_hour=start_hour, end_hour=end_hour, chunk_blocks=chunk_blocks)
    if end_hour <= start_hour:
        return scan
    first = await clock.first_at_or_after(start_hour, lo, head)
    last = await clock.first_at_or_after(end_hour, first, head) - 1
    scan.from_block, scan.to_block = first, last
    events: list[Liquidation] = []
    if first <= last:
        got = await get_logs(
            rpc, layout.pool, [liquidation_topic()], first, last, chunk_blocks=chunk_blocks
        )
        scan.chunk_blocks, scan.log_requests = got.chunk_blocks, got.requests
        events, scan.problems = decode_liquidations(got.logs, layout.pool)
    priced, failed = await price_liquidations(rpc, layout, events, head=head)
    skip: set[int] = set()
    for e, reason in failed:
        ts = await clock.ts(e.block_number)
        skip.add(hour_floor(ts))
        scan.problems.append(
            f"{EVENT} in tx {e.tx_hash} (block {e.block_number}): {reason}; "
            f"hour {hour_floor(ts)} not stored"
        )
    scan.events = priced
    scan.observations = hourly_volume(
        priced,
        protocol=layout.protocol,
        chain=layout.chain,
        start_hour=start_hour,
        end_hour=end_hour,
        skip_hours=frozenset(skip),
    )
    return scan


async def collect_liquidations(
    rpc: RpcClient,
    layout: MarketLayout,
    *,
    lookback_blocks: int,
    chunk_blocks: int,
    confirmations: int = 0,
    head: int | None = None,
) -> LiquidationScan:
    """The complete hours touched by the last ``lookback_blocks`` blocks (widened back to the
    start of the first one's hour) up to ``head`` (default: latest - ``confirmations``)."""
    if head is None:
        head = max(0, await rpc.block_number() - confirmations)
    clock = BlockClock(rpc)
    start_block = max(0, head - lookback_blocks + 1)
    start_hour = hour_floor(await clock.ts(start_block))
    end_hour = hour_floor(await clock.ts(head))
    return await liquidation_volume(
        rpc,
        layout,
        start_hour=start_hour,
        end_hour=end_hour,
        head=head,
        chunk_blocks=chunk_blocks,
        clock=clock,
    )
