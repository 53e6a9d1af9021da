"""Uniswap V3 on the devnet, from the official npm artifacts: ``UniswapV3Factory``
(``@uniswap/v3-core`` 1.0.1, whose pool bytecode hashes to the periphery's POOL_INIT_CODE_HASH),
``NonfungiblePositionManager`` and ``QuoterV2`` (``@uniswap/v3-periphery``), ``SwapRouter02``
(``@uniswap/swap-router-contracts``).

WETH/USDC (0.05%) and WBTC/USDC (0.3%) pools are initialised at the oracle price and given a
full-range position plus two concentrated ones, so a swap of a few hundred thousand dollars has
a visible but modest price impact. ``sync_pools`` moves a pool back to the oracle price with a
market maker's swap capped by ``sqrtPriceLimitX96`` (the stress scenario calls it every hour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from web3.contract import Contract

from agent.core.units import MAX_UINT256
from agent.devnet.artifacts import npm_artifact
from agent.devnet.chain import Chain
from agent.planner.uniswap import sqrt_price_x96

ZERO = "0x0000000000000000000000000000000000000000"
TICK_SPACING = {500: 10, 3000: 60, 10000: 200}
MIN_TICK, MAX_TICK = -887272, 887272
POOL_FEES = {"WETH": 500, "WBTC": 3000}  # collateral symbol -> fee tier against USDC
DEADLINE = 2**40


@dataclass(frozen=True)
class LiquiditySpec:
    lower: Decimal | None  # fraction of the oracle price; None = full range
    upper: Decimal | None
    usd_per_side: int


# Depth per pool: a $100k swap moves WETH/USDC by roughly 0.1% and WBTC/USDC by ~0.3%.
LIQUIDITY = {
    "WETH": [
        LiquiditySpec(None, None, 3_000_000),
        LiquiditySpec(Decimal("0.6"), Decimal("1.25"), 10_000_000),
        LiquiditySpec(Decimal("0.95"), Decimal("1.05"), 2_000_000),
    ],
    "WBTC": [
        LiquiditySpec(None, None, 1_000_000),
        LiquiditySpec(Decimal("0.7"), Decimal("1.25"), 3_000_000),
    ],
}
# The market maker's inventory for keeping pools at the oracle price (minted, whole tokens).
MAKER_INVENTORY = {"WETH": 200_000, "WBTC": 5_000, "USDC": 1_000_000_000}


def _tick(raw_price: float, spacing: int, *, up: bool) -> int:
    t = math.log(raw_price) / math.log(1.0001)
    t = math.ceil(t / spacing) if up else math.floor(t / spacing)
    return max(MIN_TICK // spacing + 1, min(MAX_TICK // spacing, t)) * spacing


def _full_range(spacing: int) -> tuple[int, int]:
    return -(MAX_TICK // spacing) * spacing, (MAX_TICK // spacing) * spacing


def target_sqrt_price(
    token0: dict[str, Any], token1: dict[str, Any], prices_base: dict[str, int]
) -> int:
    return sqrt_price_x96(
        prices_base[token0["address"]],
        prices_base[token1["address"]],
        token0["decimals"],
        token1["decimals"],
    )


def deploy_uniswap(
    chain: Chain,
    deployer: str,
    tokens: dict[str, Contract],
    decimals: dict[str, int],
    prices_base: dict[str, int],
) -> dict[str, Any]:
    """Deploy factory, position manager, SwapRouter02 and QuoterV2; create and fund the pools.
    ``prices_base`` maps token address -> oracle price (8 decimals)."""
    weth = tokens["WETH"].address
    factory = chain.deploy(npm_artifact("UniswapV3Factory"), sender=deployer)
    npm = chain.deploy(
        npm_artifact("NonfungiblePositionManager"), factory.address, weth, ZERO, sender=deployer
    )
    router = chain.deploy(
        npm_artifact("SwapRouter02"), ZERO, factory.address, npm.address, weth, sender=deployer
    )
    quoter = chain.deploy(npm_artifact("QuoterV2"), factory.address, weth, sender=deployer)
    for sym, amount in MAKER_INVENTORY.items():
        chain.send(tokens[sym], "mint", deployer, amount * 10 ** decimals[sym], sender=deployer)
        for spender in (npm.address, router.address):
            chain.send(tokens[sym], "approve", spender, MAX_UINT256, sender=deployer)
    usdc = tokens["USDC"]
    pools: dict[str, Any] = {}
    for sym, fee in POOL_FEES.items():
        a, b = tokens[sym], usdc
        t0, t1 = (a, b) if int(a.address, 16) < int(b.address, 16) else (b, a)
        s0 = next(s for s, c in tokens.items() if c is t0)
        s1 = next(s for s, c in tokens.items() if c is t1)
        info0 = {"address": t0.address, "decimals": decimals[s0]}
        info1 = {"address": t1.address, "decimals": decimals[s1]}
        chain.send(factory, "createPool", t0.address, t1.address, fee, sender=deployer)
        pool_addr = chain.call(factory, "getPool", t0.address, t1.address, fee)
        pool = chain.at(pool_addr, npm_artifact("UniswapV3Pool"))
        sqrt_p = target_sqrt_price(info0, info1, prices_base)
        chain.send(pool, "initialize", sqrt_p, sender=deployer)
        raw = (sqrt_p / 2**96) ** 2  # token1 per token0, raw units (ticks only)
        spacing = TICK_SPACING[fee]
        for spec in LIQUIDITY[sym]:
            if spec.lower is None or spec.upper is None:
                lo, hi = _full_range(spacing)
            else:
                lo = _tick(
                    raw * float(spec.lower if t0 is a else 1 / spec.upper), spacing, up=False
                )
                hi = _tick(raw * float(spec.upper if t0 is a else 1 / spec.lower), spacing, up=True)
            # Desired amounts worth usd_per_side each; the manager takes what the range needs.
            amt = {
                s: spec.usd_per_side * 10 ** (8 + decimals[s]) // prices_base[tokens[s].address]
                for s in (s0, s1)
            }
            params = (
                t0.address,
                t1.address,
                fee,
                lo,
                hi,
                amt[s0],
                amt[s1],
                0,
                0,
                deployer,
                DEADLINE,
            )
            chain.send(npm, "mint", params, sender=deployer)
        pools[sym] = {
            "address": pool.address,
            "fee": fee,
            "token0": t0.address,
            "token1": t1.address,
            "tick_spacing": spacing,
        }
    return {
        "factory": factory.address,
        "position_manager": npm.address,
        "swap_router02": router.address,
        "quoter_v2": quoter.address,
        "market_maker": deployer,
        "pools": pools,
    }


def sync_pools(chain: Chain, dep: dict[str, Any], prices_base: dict[str, int]) -> int:
    """Swap each pool back to the oracle price (``sqrtPriceLimitX96`` stops the swap there).
    ``prices_base`` maps token address -> oracle price. Returns the number of swaps sent."""
    uni = dep.get("uniswap")
    if not uni:
        return 0
    by_addr = {t["address"]: t for t in dep["tokens"].values()}
    router = chain.at(uni["swap_router02"], npm_artifact("SwapRouter02"))
    maker = uni["market_maker"]
    sent = 0
    for info in uni["pools"].values():
        t0, t1 = by_addr[info["token0"]], by_addr[info["token1"]]
        pool = chain.at(info["address"], npm_artifact("UniswapV3Pool"))
        current = int(chain.call(pool, "slot0")[0])
        target = target_sqrt_price(t0, t1, prices_base)
        if abs(current - target) * 1_000_000 < target:  # within 1 ppm of the price's root
            continue
        zero_for_one = current > target  # price of token0 must fall: sell token0
        tin, tout = (t0, t1) if zero_for_one else (t1, t0)
        erc20 = chain.at(tin["address"], npm_artifact("MintableERC20"))
        balance = int(chain.call(erc20, "balanceOf", maker))
        params = (tin["address"], tout["address"], info["fee"], maker, balance, 0, target)
        chain.send(router, "exactInputSingle", params, sender=maker)
        sent += 1
    return sent
