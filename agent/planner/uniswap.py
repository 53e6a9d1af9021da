"""Uniswap V3 for deleverage swaps: the venue's addresses, QuoterV2 quotes, and the price math
between oracle prices and a pool's ``sqrtPriceX96``.

A pool prices ``token1`` in ``token0`` raw units: ``price = (sqrtPriceX96 / 2**96) ** 2``
(raw token1 per raw token0). ``token0`` is the lower address. Integer math throughout; floats
appear only where a human reads a ratio (impact in bps as a float).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from math import isqrt

from pydantic import BaseModel, ConfigDict, Field

from agent.core.abi import load_abi
from agent.core.address import Address
from agent.core.errors import PlanningError, RpcError
from agent.core.rpc import RpcClient

Q96 = 2**96
Q192 = 2**192
FEE_UNITS = 1_000_000  # Uniswap fees are in hundredths of a bip (500 = 0.05%)


class UniswapConfig(BaseModel):
    """The Uniswap V3 deployment the deleverage planner swaps through. ``fees`` gives the pool's
    fee tier per collateral symbol (against the debt asset), e.g. ``{WETH = 500}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    factory: Address | None = None
    swap_router02: Address | None = None
    quoter_v2: Address | None = None
    fees: dict[str, int] = Field(default_factory=lambda: {"WETH": 500, "WBTC": 3000})
    # amountOutMinimum = quote x (1 - bps/1e4): a batch that waits hours for its signers needs
    # room for the pool to move; one executed at once (autonomous) only for its block.
    slippage_bps: int = Field(50, ge=0, le=2_000)
    immediate_slippage_bps: int = Field(3, ge=0, le=2_000)
    # No step of a deleverage may take HF below this between its withdrawal and its repay.
    hf_floor: Decimal = Field(Decimal("1.05"), gt=1)

    @property
    def configured(self) -> bool:
        return None not in (self.factory, self.swap_router02, self.quoter_v2)

    def venue(self) -> UniswapVenue | None:
        if not (self.enabled and self.factory and self.swap_router02 and self.quoter_v2):
            return None
        return UniswapVenue(self.factory, self.swap_router02, self.quoter_v2, dict(self.fees))


@dataclass(frozen=True)
class UniswapVenue:
    factory: str
    swap_router02: str
    quoter_v2: str
    fees: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Quote:
    amount_in: int
    amount_out: int
    sqrt_price_after_x96: int
    ticks_crossed: int
    gas_estimate: int


def sqrt_price_x96(token0_price_base: int, token1_price_base: int, dec0: int, dec1: int) -> int:
    """``sqrtPriceX96`` at which the pool's raw price (token1 per token0) equals the ratio of
    two oracle prices (same base currency)."""
    num = token0_price_base * 10**dec1
    den = token1_price_base * 10**dec0
    if num <= 0 or den <= 0:
        raise PlanningError("oracle prices must be positive to price a pool")
    return isqrt(num * Q192 // den)


def price_in_out_wad(sqrt_p_x96: int, token_in_is_0: bool, dec_in: int, dec_out: int) -> int:
    """The pool's marginal price of one whole ``token_in`` in whole ``token_out``, as a wad."""
    wad = 10**18
    if token_in_is_0:  # token1 per token0
        return int(sqrt_p_x96 * sqrt_p_x96 * 10**dec_in * wad // (Q192 * 10**dec_out))
    return int(Q192 * 10**dec_in * wad // (sqrt_p_x96 * sqrt_p_x96 * 10**dec_out))


async def quote_exact_input_single(
    rpc: RpcClient, quoter: str, token_in: str, token_out: str, fee: int, amount_in: int
) -> Quote:
    """QuoterV2 ``quoteExactInputSingle`` through ``eth_call`` (it simulates the swap and
    reverts internally, so it is never sent as a transaction)."""
    abi = load_abi("QuoterV2")
    data = abi.encode_hex("quoteExactInputSingle", (token_in, token_out, amount_in, fee, 0))
    try:
        raw = await rpc.eth_call(quoter, data)
    except RpcError as exc:
        raise PlanningError(
            f"QuoterV2 {quoter}: no quote for {amount_in} of {token_in} (fee {fee}): {exc}"
        ) from None
    out, sqrt_after, ticks, gas = abi.decode_output("quoteExactInputSingle", raw)
    return Quote(amount_in, int(out), int(sqrt_after), int(ticks), int(gas))


async def read_sqrt_price(rpc: RpcClient, pool: str) -> int:
    abi = load_abi("UniswapV3Pool")
    return int(abi.decode_output("slot0", await rpc.eth_call(pool, abi.encode_hex("slot0")))[0])


async def get_pool(rpc: RpcClient, factory: str, a: str, b: str, fee: int) -> str:
    abi = load_abi("UniswapV3Factory")
    (pool,) = abi.decode_output(
        "getPool", await rpc.eth_call(factory, abi.encode_hex("getPool", a, b, fee))
    )
    if int(pool, 16) == 0:
        raise PlanningError(f"no Uniswap V3 pool for {a}/{b} at fee {fee}")
    return str(pool)
