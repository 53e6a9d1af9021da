"""On-chain reader for one chain: Aave V3 market, positions, Chainlink feeds, perp funding.

``discover`` resolves the market layout once (pool, oracle, data provider, tokens, decimals,
liquidation thresholds) from the ``PoolAddressesProvider``; after that every tick is **one**
Multicall3 ``aggregate3`` ``eth_call`` (``read_snapshot``), whatever the number of reserves.
The same call at a past block number backfills history (``backfill_snapshots``).
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils.address import to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agent.core.abi import load_abi
from agent.core.address import Address
from agent.core.errors import ConfigError, MalformedResponse, RpcError
from agent.core.market import (
    ADDRESS_PATTERN,
    AccountState,
    ChainSnapshot,
    FeedConfig,
    FeedRound,
    MarketLayout,
    ReserveMeta,
    ReserveState,
)
from agent.core.models import Observation
from agent.core.multicall import MULTICALL3_ADDRESS, Call, multicall
from agent.core.rpc import RpcClient
from agent.core.units import (
    AAVE_BASE_UNIT_USD,
    MAX_UINT256,
    SECONDS_PER_YEAR,
    WAD,
    ray_apr_to_apy,
    wad_to_float,
)

_ADDR = ADDRESS_PATTERN


class ChainConfig(BaseModel):
    """Where and what to read on one chain. Addresses are the only difference between the
    devnet and a real deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "devnet"
    chain_id: int = Field(31337, gt=0)
    rpc_url: SecretStr = SecretStr("")
    # Fallback URLs of the same chain, tried in turn after rpc_url on 429, 5xx and timeouts.
    rpc_urls: tuple[SecretStr, ...] = ()
    deployment: str | None = None  # devnet deployment file; fills the addresses below
    multicall3: Address = MULTICALL3_ADDRESS
    protocol: str = "aave-v3"
    pool_addresses_provider: Address | None = None
    reserves: tuple[Address, ...] = ()
    accounts: tuple[Address, ...] = ()
    feeds: dict[str, FeedConfig] = Field(default_factory=dict)
    perps: dict[str, Address] = Field(default_factory=dict)
    tvl_net_of_debt: bool = False
    timeout_s: float = Field(10.0, gt=0)  # one HTTP attempt at one URL
    # One request in all (every URL and retry of rpc_url/rpc_urls): a hung provider costs this.
    request_deadline_s: float = Field(12.0, gt=0)
    # With rpc_urls: a URL whose head is more than this behind the best one is left (and taken
    # back once it is within the bound again).
    max_lag_blocks: int = Field(10, ge=0)


async def discover(rpc: RpcClient, cfg: ChainConfig) -> MarketLayout:
    """Resolve the market layout from the addresses provider: two batched calls at start-up."""
    if cfg.pool_addresses_provider is None:
        raise ConfigError(f"chain {cfg.name}: pool_addresses_provider is not configured")
    provider = load_abi("PoolAddressesProvider")
    pool_abi, dp_abi, erc20 = (
        load_abi("Pool"),
        load_abi("AaveProtocolDataProvider"),
        load_abi("ERC20"),
    )
    feed_abi = load_abi("AggregatorV3")
    pap = cfg.pool_addresses_provider
    first, failures = await multicall(
        rpc,
        [
            Call("pool", pap, provider, "getPool"),
            Call("oracle", pap, provider, "getPriceOracle"),
            Call("dp", pap, provider, "getPoolDataProvider"),
        ],
        address=cfg.multicall3,
    )
    if failures:
        raise MalformedResponse(rpc.source, "; ".join(f.reason for f in failures))
    pool, oracle, dp = (to_checksum_address(first[k][0]) for k in ("pool", "oracle", "dp"))
    calls: list[Call] = []
    for asset in cfg.reserves:
        calls += [
            Call(f"rd:{asset}", pool, pool_abi, "getReserveData", (asset,)),
            Call(f"sym:{asset}", asset, erc20, "symbol"),
            Call(f"dec:{asset}", asset, erc20, "decimals"),
            Call(f"cfg:{asset}", dp, dp_abi, "getReserveConfigurationData", (asset,)),
        ]
    calls += [
        Call(f"fdec:{name}", f.address, feed_abi, "decimals") for name, f in cfg.feeds.items()
    ]
    out, failures = await multicall(rpc, calls, address=cfg.multicall3)
    if failures:
        raise MalformedResponse(
            rpc.source, "market discovery failed: " + "; ".join(f.reason for f in failures)
        )
    reserves = []
    for asset in cfg.reserves:
        rd = out[f"rd:{asset}"][0]
        conf = out[f"cfg:{asset}"]
        reserves.append(
            ReserveMeta(
                asset=asset,
                symbol=str(out[f"sym:{asset}"][0]),
                decimals=int(out[f"dec:{asset}"][0]),
                a_token=to_checksum_address(rd[8]),
                variable_debt_token=to_checksum_address(rd[10]),
                ltv_bps=int(conf[1]),
                liquidation_threshold_bps=int(conf[2]),
            )
        )
    return MarketLayout(
        chain=cfg.name,
        protocol=cfg.protocol,
        pool=pool,
        oracle=oracle,
        data_provider=dp,
        reserves=tuple(reserves),
        accounts=cfg.accounts,
        feeds=dict(cfg.feeds),
        feed_decimals={name: int(out[f"fdec:{name}"][0]) for name in cfg.feeds},
        perps=dict(cfg.perps),
        multicall3=cfg.multicall3,
    )


def snapshot_calls(layout: MarketLayout) -> list[Call]:
    pool_abi, oracle_abi, erc20 = load_abi("Pool"), load_abi("AaveOracle"), load_abi("ERC20")
    mc, feed_abi, perp_abi = (
        load_abi("Multicall3"),
        load_abi("AggregatorV3"),
        load_abi("PerpMarket"),
    )
    calls = [
        Call("block", layout.multicall3, mc, "getBlockNumber"),
        Call("time", layout.multicall3, mc, "getCurrentBlockTimestamp"),
        # the chain id rides in the batch: no eth_chainId request per tick to check it
        Call("chain_id", layout.multicall3, mc, "getChainId"),
    ]
    for r in layout.reserves:
        calls += [
            Call(f"rd:{r.symbol}", layout.pool, pool_abi, "getReserveData", (r.asset,)),
            Call(f"aSupply:{r.symbol}", r.a_token, erc20, "totalSupply"),
            Call(f"dSupply:{r.symbol}", r.variable_debt_token, erc20, "totalSupply"),
            Call(f"price:{r.symbol}", layout.oracle, oracle_abi, "getAssetPrice", (r.asset,)),
        ]
    for acct in layout.accounts:
        calls.append(Call(f"acct:{acct}", layout.pool, pool_abi, "getUserAccountData", (acct,)))
        for r in layout.reserves:
            calls.append(Call(f"bal:{acct}:{r.symbol}", r.asset, erc20, "balanceOf", (acct,)))
            calls.append(
                Call(f"allow:{acct}:{r.symbol}", r.asset, erc20, "allowance", (acct, layout.pool))
            )
    calls += [
        Call(f"feed:{n}", f.address, feed_abi, "latestRoundData") for n, f in layout.feeds.items()
    ]
    calls += [Call(f"perp:{n}", a, perp_abi, "currentFundingRate") for n, a in layout.perps.items()]
    return calls


async def read_snapshot(
    rpc: RpcClient,
    layout: MarketLayout,
    block: int | str = "latest",
    extra: Sequence[Call] = (),
) -> ChainSnapshot:
    """All of one tick's reads in a single ``eth_call``. ``extra`` calls (e.g. Comet markets)
    ride in the same batch; their decoded outputs come back in ``ChainSnapshot.extra``."""
    out, failures = await multicall(
        rpc, [*snapshot_calls(layout), *extra], block=block, address=layout.multicall3
    )
    failures = list(failures)
    if "block" not in out or "time" not in out:
        raise MalformedResponse(
            rpc.source, f"Multicall3 at {layout.multicall3} did not report block/time"
        )
    reserves: dict[str, ReserveState] = {}
    for r in layout.reserves:
        keys = (f"rd:{r.symbol}", f"aSupply:{r.symbol}", f"dSupply:{r.symbol}", f"price:{r.symbol}")
        if not all(k in out for k in keys):
            continue  # the failure is already listed
        rd = out[keys[0]][0]
        reserves[r.symbol] = ReserveState(
            liquidity_rate_ray=int(rd[2]),
            variable_borrow_rate_ray=int(rd[4]),
            a_token_supply=int(out[keys[1]][0]),
            variable_debt_supply=int(out[keys[2]][0]),
            price_base=int(out[keys[3]][0]),
        )
    accounts: dict[str, AccountState] = {}
    for acct in layout.accounts:
        a = out.get(f"acct:{acct}")
        if a is None:
            continue
        accounts[acct] = AccountState(
            total_collateral_base=int(a[0]),
            total_debt_base=int(a[1]),
            available_borrows_base=int(a[2]),
            liquidation_threshold_bps=int(a[3]),
            ltv_bps=int(a[4]),
            health_factor_wad=int(a[5]),
            wallet_balances={
                r.symbol: int(out[f"bal:{acct}:{r.symbol}"][0])
                for r in layout.reserves
                if f"bal:{acct}:{r.symbol}" in out
            },
            pool_allowances={
                r.symbol: int(out[f"allow:{acct}:{r.symbol}"][0])
                for r in layout.reserves
                if f"allow:{acct}:{r.symbol}" in out
            },
        )
    feeds: dict[str, FeedRound] = {}
    for name in layout.feeds:
        f = out.get(f"feed:{name}")
        if f is not None:
            feeds[name] = FeedRound(int(f[0]), int(f[1]), int(f[3]), layout.feed_decimals[name])
    funding = {n: int(out[f"perp:{n}"][0]) for n in layout.perps if f"perp:{n}" in out}
    return ChainSnapshot(
        chain=layout.chain,
        block_number=int(out["block"][0]),
        timestamp=int(out["time"][0]),
        reserves=reserves,
        accounts=accounts,
        feeds=feeds,
        funding_per_day_wad=funding,
        failures=tuple(failures),
        extra={c.tag: out[c.tag] for c in extra if c.tag in out},
        chain_id=int(out["chain_id"][0]) if "chain_id" in out else None,
    )


def snapshot_observations(
    snap: ChainSnapshot, layout: MarketLayout, *, net_of_debt: bool = False
) -> tuple[list[Observation], list[str]]:
    """Normalise a snapshot into observations. Returns (observations, problems); a stale or
    non-positive oracle answer is a problem, never a price."""
    src = f"onchain:{layout.chain}:block={snap.block_number}"
    ts = snap.timestamp
    obs: list[Observation] = []
    problems = [f.reason for f in snap.failures]
    proto = layout.protocol
    tvl_usd = 0.0
    complete = True
    for r in layout.reserves:
        st = snap.reserves.get(r.symbol)
        if st is None:
            complete = False
            continue
        if st.price_base <= 0:
            problems.append(f"{src}: oracle price for {r.symbol} is {st.price_base} (not positive)")
            complete = False
            continue
        supply = st.supply_usd(r.decimals)
        tvl_usd += supply - (st.debt_usd(r.decimals) if net_of_debt else 0.0)
        prefix = f"rate.{proto}.{layout.chain}.{r.symbol.lower()}"
        util = st.variable_debt_supply / st.a_token_supply if st.a_token_supply else 0.0
        obs += [
            Observation(
                f"{prefix}.supply_apy", ts, ray_apr_to_apy(st.liquidity_rate_ray), "apy", src
            ),
            Observation(
                f"{prefix}.borrow_apy", ts, ray_apr_to_apy(st.variable_borrow_rate_ray), "apy", src
            ),
            Observation(f"{prefix}.utilization", ts, float(util), "ratio", src),
            Observation(
                f"tvl.{proto}.{layout.chain}.{r.symbol.lower()}", ts, float(supply), "usd", src
            ),
        ]
    if complete and layout.reserves:
        # A partial sum would look like an outflow, so TVL is stored only when every reserve read.
        obs.append(Observation(f"tvl.{proto}.{layout.chain}", ts, float(tvl_usd), "usd", src))
    for acct, a in snap.accounts.items():
        if a.health_factor_wad != MAX_UINT256:
            obs.append(
                Observation(
                    f"position.{acct}.health_factor",
                    ts,
                    wad_to_float(a.health_factor_wad),
                    "ratio",
                    src,
                )
            )
        obs.append(
            Observation(
                f"position.{acct}.collateral_usd",
                ts,
                a.total_collateral_base / AAVE_BASE_UNIT_USD,
                "usd",
                src,
            )
        )
        obs.append(
            Observation(
                f"position.{acct}.debt_usd", ts, a.total_debt_base / AAVE_BASE_UNIT_USD, "usd", src
            )
        )
    for name, f in snap.feeds.items():
        cfgf = layout.feeds[name]
        age = ts - f.updated_at
        key = f"price.{(cfgf.asset or name.split('/')[0]).lower()}.usd"
        if f.answer <= 0:
            problems.append(f"chainlink {name} ({cfgf.address}): answer {f.answer} is not positive")
        elif age > cfgf.heartbeat_s:
            problems.append(
                f"chainlink {name} ({cfgf.address}): stale answer, updated {age}s ago > heartbeat {cfgf.heartbeat_s}s"
            )
        else:
            obs.append(
                Observation(
                    key, ts, f.price, "usd", f"chainlink:{layout.chain}:{name}", f.updated_at
                )
            )
    for name, per_day in snap.funding_per_day_wad.items():
        # Per-day fraction (Synthetix PerpsV2 convention) annualised by 365 days.
        apr = per_day * (SECONDS_PER_YEAR // 86_400) / WAD
        obs.append(Observation(f"funding.onchain.{name}", ts, float(apr), "apr", f"{src}:perp:1d"))
    return obs, problems


async def find_block_at(rpc: RpcClient, ts: int, lo: int = 0, hi: int | None = None) -> int:
    """The last block with ``timestamp <= ts`` (binary search over headers)."""
    if hi is None:
        hi = await rpc.block_number()

    async def stamp(n: int) -> int:
        return int((await rpc.get_block(n))["timestamp"], 16)

    if await stamp(lo) > ts:
        return lo
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if await stamp(mid) <= ts:
            lo = mid
        else:
            hi = mid - 1
    return lo


async def backfill_snapshots(
    rpc: RpcClient,
    layout: MarketLayout,
    *,
    since_ts: int,
    until_block: int,
    step_s: int,
    first_block: int = 0,
) -> list[ChainSnapshot]:
    """Read the market at one block per ``step_s`` from ``since_ts`` to ``until_block``
    (needs an archive node, or anvil, which keeps its history)."""
    head = await rpc.get_block(until_block)
    head_ts = int(head["timestamp"], 16)
    blocks: list[int] = []
    t = since_ts
    while t < head_ts:
        b = await find_block_at(rpc, t, lo=first_block, hi=until_block)
        if not blocks or b != blocks[-1]:
            blocks.append(b)
        t += step_s
    # Newest first, stopping at the first block the node cannot serve (a pruned node, or a
    # block before the market or Multicall3 existed): history beyond it is unavailable.
    snaps: list[ChainSnapshot] = []
    for b in reversed([b for b in blocks if b < until_block]):
        try:
            snaps.append(await read_snapshot(rpc, layout, block=b))
        except (MalformedResponse, RpcError):
            break
    return snaps[::-1]
