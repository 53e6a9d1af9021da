"""The chain's market as every stage sees it: the layout resolved once at start-up and the
snapshot read each tick. Collectors fill these records, the policy and the planners read them,
so they live in the shared core (a planner never imports a collector module)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.core.address import Address
from agent.core.errors import ConfigError
from agent.core.multicall import MULTICALL3_ADDRESS, CallFailure
from agent.core.units import AAVE_BASE_UNIT_USD, token_to_float

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"


class FeedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    address: Address
    heartbeat_s: int = Field(3600, gt=0)
    asset: str | None = None  # e.g. "ETH": the price series key is price.<asset lower>.usd


@dataclass(frozen=True)
class ReserveMeta:
    asset: str
    symbol: str
    decimals: int
    a_token: str
    variable_debt_token: str
    liquidation_threshold_bps: int
    ltv_bps: int


@dataclass(frozen=True)
class MarketLayout:
    chain: str
    protocol: str
    pool: str
    oracle: str
    data_provider: str
    reserves: tuple[ReserveMeta, ...]
    accounts: tuple[str, ...]
    feeds: dict[str, FeedConfig]
    feed_decimals: dict[str, int]
    perps: dict[str, str]
    multicall3: str = MULTICALL3_ADDRESS

    def reserve(self, symbol_or_asset: str) -> ReserveMeta:
        for r in self.reserves:
            if symbol_or_asset in (r.symbol, r.asset) or symbol_or_asset.lower() == r.asset.lower():
                return r
        raise ConfigError(
            f"reserve {symbol_or_asset!r} is not in the {self.protocol} market on {self.chain}"
        )


@dataclass(frozen=True)
class ReserveState:
    liquidity_rate_ray: int
    variable_borrow_rate_ray: int
    a_token_supply: int
    variable_debt_supply: int
    price_base: int  # oracle base currency, 1e8 = 1 USD

    def supply_usd(self, decimals: int) -> float:
        return token_to_float(self.a_token_supply, decimals) * self.price_base / AAVE_BASE_UNIT_USD

    def debt_usd(self, decimals: int) -> float:
        return (
            token_to_float(self.variable_debt_supply, decimals)
            * self.price_base
            / AAVE_BASE_UNIT_USD
        )


@dataclass(frozen=True)
class AccountState:
    total_collateral_base: int
    total_debt_base: int
    available_borrows_base: int
    liquidation_threshold_bps: int
    ltv_bps: int
    health_factor_wad: int
    wallet_balances: dict[str, int]  # symbol -> raw token units
    pool_allowances: dict[str, int]  # symbol -> allowance granted to the Pool


@dataclass(frozen=True)
class FeedRound:
    round_id: int
    answer: int
    updated_at: int
    decimals: int

    @property
    def price(self) -> float:
        return token_to_float(self.answer, self.decimals)


@dataclass(frozen=True)
class ChainSnapshot:
    chain: str
    block_number: int
    timestamp: int
    reserves: dict[str, ReserveState]
    accounts: dict[str, AccountState]
    feeds: dict[str, FeedRound]
    funding_per_day_wad: dict[str, int]
    failures: tuple[CallFailure, ...] = field(default_factory=tuple)
    extra: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # outputs of extra calls
    chain_id: int | None = None  # block.chainid, read in the same batch (None: not read)
