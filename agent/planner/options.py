"""Buying protective puts through an options venue (reference venue: Premia v3 pools).

Venue rules implemented here, as Premia v3's contracts enforce them (``PoolFactory`` and
``OptionMath`` in Premian-Labs/v3-contracts):

* **Maturity** (``_revertIfOptionMaturityInvalid``): at 08:00 UTC and in the future; with
  ``ttm = maturity - now``, a maturity with ``3 days <= ttm <= 30 days`` must be a Friday, one with
  ``ttm > 30 days`` the last Friday of its month, and ``ttm <= 365 days``. (Under three days any
  08:00 UTC day is valid, so the 0-7 DTE horizon sees dailies and then the weekly Friday.)
* **Strike grid** (``calculateStrikeInterval`` on the 18-decimal strike):
  ``interval = 10^(floor(log10 K) - 1)``, times 5 when ``K >= 5 * 10^floor(log10 K)``; a strike is
  valid when it is a multiple of its own interval. E.g. 2,700 -> 100, 7,500 -> 500, 62,000 -> 5,000,
  0.45 -> 0.01. Flooring a price to its interval always lands on a valid strike.
* **Trading**: ``IPoolFactory.getPoolAddress(PoolKey)`` resolves the pool, ``IPool.getQuoteAMM(taker,
  size, true)`` quotes ``premiumNet`` (premium + taker fee, pool-token decimals), and
  ``IPool.trade(size, true, premiumLimit, referrer)`` buys, reverting with
  ``Pool__AboveMaxSlippage(value, 0, premiumLimit)`` when the total premium exceeds the limit.
  A put pool is collateralised in the quote token, so the premium is paid in it (USDC).
* **Approvals**: Premia pools pull tokens through the ``ERC20Router`` (``PoolStorage`` calls
  ``IERC20Router.safeTransferFrom(token, from, to, amount)``, which only pools may call), so the
  taker approves the **router**, not the pool. The devnet mirrors this.

The planner is pure except through the ``RpcClient`` reads the venue adapter makes (pool address,
quote, allowance, wallet balance, spot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Protocol

from eth_utils.address import to_checksum_address

from agent.core.abi import load_abi
from agent.core.errors import PlanningError
from agent.core.rpc import RpcClient
from agent.core.units import WAD
from agent.planner.tx import PlannedTx, approve_if_short, call_tx

DAY = 86_400
EIGHT_HOURS = 8 * 3_600
MAX_TTM = 365 * DAY
FRIDAY_FROM = 3 * DAY  # Premia: Friday required for 3 days <= ttm <= 30 days
LAST_FRIDAY_FROM = 30 * DAY  # Premia: last Friday of the month for ttm > 30 days
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
DEFAULT_LOT = 10**16  # 0.01 contract
DEFAULT_SLIPPAGE_BPS = 100


# -- maturities ------------------------------------------------------------------------------


def _is_friday(ts: int) -> bool:
    return (ts // DAY) % 7 == 1  # 1970-01-01 was a Thursday


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _civil(ts: int) -> tuple[int, int, int]:
    """(year, month, day) of a UTC timestamp (Howard Hinnant's days-from-civil inverse)."""
    z = ts // DAY + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year, month, day


def is_last_friday(ts: int) -> bool:
    year, month, day = _civil(ts)
    return _days_in_month(year, month) - day < 7 and _is_friday(ts)


def maturity_error(maturity: int, now: int) -> str | None:
    """Why Premia's factory would reject ``maturity`` at time ``now`` (its error name), or None."""
    if maturity <= now:
        return "PoolFactory__OptionExpired"
    if maturity % DAY != EIGHT_HOURS:
        return "PoolFactory__OptionMaturityNot8UTC"
    ttm = maturity - now
    if FRIDAY_FROM <= ttm <= LAST_FRIDAY_FROM and not _is_friday(maturity):
        return "PoolFactory__OptionMaturityNotFriday"
    if ttm > LAST_FRIDAY_FROM and not is_last_friday(maturity):
        return "PoolFactory__OptionMaturityNotLastFriday"
    if ttm > MAX_TTM:
        return "PoolFactory__OptionMaturityExceedsMax"
    return None


def premia_maturities(now: int, dte_min: float, dte_max: float) -> list[int]:
    """Every maturity Premia accepts at ``now`` whose time to maturity is within
    ``[dte_min, dte_max]`` days, ascending (e.g. 0-7, 15-45, 60-180 for the three horizons)."""
    if dte_max < dte_min:
        raise PlanningError(f"dte_max {dte_max} < dte_min {dte_min}")
    lo, hi = dte_min * DAY, min(dte_max * DAY, MAX_TTM)
    out = []
    first = (now // DAY) * DAY + EIGHT_HOURS
    for m in range(first, now + MAX_TTM + DAY, DAY):
        ttm = m - now
        if ttm > hi:
            break
        if ttm >= lo and maturity_error(m, now) is None:
            out.append(m)
    return out


def preferred_maturities(now: int, dte_min: float, dte_max: float) -> list[int]:
    """Valid maturities ordered by preference: closest to the horizon's middle first (ties go
    to the later one), so a 0-7 DTE put is not a 2-hour option and a 60-180 DTE one ~120 days."""
    mid = now + (dte_min + min(dte_max, MAX_TTM / DAY)) / 2 * DAY
    return sorted(premia_maturities(now, dte_min, dte_max), key=lambda m: (abs(m - mid), -m))


# -- strikes ---------------------------------------------------------------------------------


def strike_interval(strike_wad: int) -> int:
    """Premia's ``OptionMath.calculateStrikeInterval`` (18 decimals in, 18 decimals out)."""
    if strike_wad < 10:
        raise PlanningError(f"strike {strike_wad} (wad) is below Premia's minimum")
    exponent = len(str(strike_wad)) - 1
    multiplier = 5 if strike_wad >= 5 * 10**exponent else 1
    return int(multiplier * 10 ** (exponent - 1))


def is_valid_strike(strike_wad: int) -> bool:
    return strike_wad >= 10 and strike_wad % strike_interval(strike_wad) == 0


def round_strike_down(price_wad: int) -> int:
    """Largest valid strike <= ``price_wad``."""
    interval = strike_interval(price_wad)
    return price_wad // interval * interval


def put_strike(spot: Decimal, otm_fraction: Decimal) -> int:
    """Strike (wad) ``spot * (1 - otm_fraction)`` rounded down to the venue grid."""
    if spot <= 0:
        raise PlanningError(f"spot {spot} is not positive")
    target = (spot * (1 - otm_fraction) * WAD).to_integral_value(rounding=ROUND_FLOOR)
    return round_strike_down(int(target))


def strike_grid(low_wad: int, high_wad: int) -> list[int]:
    """Every valid strike in ``[low, high]`` ascending (the interval changes at 1, 5 x 10^n)."""
    out: list[int] = []
    k = round_strike_down(high_wad)
    while k >= low_wad and k >= 10:
        out.append(k)
        k = round_strike_down(k - 1)
    return out[::-1]


# -- venue -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolRef:
    address: str
    deployed: bool
    strike_wad: int
    maturity: int


@dataclass(frozen=True)
class VenueQuote:
    premium_net: int  # quote-token units, fee included: what ``trade`` charges
    taker_fee: int


class OptionsVenue(Protocol):
    """What the put planner needs from a venue. Reads go through the ``RpcClient`` given."""

    @property
    def name(self) -> str: ...
    @property
    def quote_token(self) -> str: ...
    @property
    def quote_decimals(self) -> int: ...
    @property
    def spender(self) -> str: ...  # the address the taker approves

    def maturities(self, now: int, dte_min: float, dte_max: float) -> list[int]: ...

    def round_strike(self, spot: Decimal, otm_fraction: Decimal) -> int: ...

    async def spot(self, rpc: RpcClient) -> Decimal: ...

    async def find_pool(self, rpc: RpcClient, strike_wad: int, maturity: int) -> PoolRef: ...

    async def quote_buy(
        self, rpc: RpcClient, pool: PoolRef, taker: str, size: int
    ) -> VenueQuote: ...

    async def allowance(self, rpc: RpcClient, owner: str) -> int: ...

    async def balance(self, rpc: RpcClient, owner: str) -> int: ...

    def build_buy(
        self, pool: PoolRef, size: int, premium_limit: int, allowance: int, human: str
    ) -> tuple[PlannedTx, ...]: ...


@dataclass(frozen=True)
class PremiaV3Venue:
    """Premia v3 put pools: ``base``/``quote`` tokens (e.g. WETH/USDC), its oracle adapter (part
    of every ``PoolKey``), the pool factory, and the ERC20Router takers approve."""

    pool_factory: str
    oracle_adapter: str
    base: str
    quote: str
    erc20_router: str
    quote_decimals: int = 6
    name: str = "premia-v3"

    @property
    def quote_token(self) -> str:
        return self.quote

    @property
    def spender(self) -> str:
        return self.erc20_router

    def pool_key(self, strike_wad: int, maturity: int) -> tuple[str, str, str, int, int, bool]:
        return (self.base, self.quote, self.oracle_adapter, strike_wad, maturity, False)

    def maturities(self, now: int, dte_min: float, dte_max: float) -> list[int]:
        return preferred_maturities(now, dte_min, dte_max)

    def round_strike(self, spot: Decimal, otm_fraction: Decimal) -> int:
        return put_strike(spot, otm_fraction)

    async def _call(self, rpc: RpcClient, abi_name: str, to: str, fn: str, *args: Any) -> Any:
        abi = load_abi(abi_name)
        return abi.decode_output(fn, await rpc.eth_call(to, abi.encode_hex(fn, *args)))

    async def spot(self, rpc: RpcClient) -> Decimal:
        """Base priced in quote (IOracleAdapter.getPrice, 18 decimals)."""
        (price,) = await self._call(
            rpc, "PremiaOracleAdapter", self.oracle_adapter, "getPrice", self.base, self.quote
        )
        return Decimal(int(price)) / WAD

    async def find_pool(self, rpc: RpcClient, strike_wad: int, maturity: int) -> PoolRef:
        pool, deployed = await self._call(
            rpc,
            "PremiaPoolFactory",
            self.pool_factory,
            "getPoolAddress",
            self.pool_key(strike_wad, maturity),
        )
        return PoolRef(to_checksum_address(pool), bool(deployed), strike_wad, maturity)

    async def quote_buy(self, rpc: RpcClient, pool: PoolRef, taker: str, size: int) -> VenueQuote:
        premium_net, fee = await self._call(
            rpc, "PremiaPool", pool.address, "getQuoteAMM", taker, size, True
        )
        return VenueQuote(int(premium_net), int(fee))

    async def allowance(self, rpc: RpcClient, owner: str) -> int:
        (value,) = await self._call(rpc, "ERC20", self.quote, "allowance", owner, self.spender)
        return int(value)

    async def balance(self, rpc: RpcClient, owner: str) -> int:
        (value,) = await self._call(rpc, "ERC20", self.quote, "balanceOf", owner)
        return int(value)

    def build_buy(
        self, pool: PoolRef, size: int, premium_limit: int, allowance: int, human: str
    ) -> tuple[PlannedTx, ...]:
        limit_h = _fmt_units(premium_limit, self.quote_decimals)
        txs = approve_if_short(
            self.quote, self.spender, premium_limit, allowance,
            human=f"approve Premia ERC20Router to pull up to {limit_h} USDC of premium",
        )  # fmt: skip
        txs.append(
            call_tx("PremiaPool", pool.address, "trade", size, True, premium_limit, ZERO_ADDRESS,
                    human=human)
        )  # fmt: skip
        return tuple(txs)


def premia_venue_from_deployment(deployment: dict[str, Any]) -> PremiaV3Venue:
    """The venue as the devnet deployment file (``"premia"`` section) describes it."""
    p = deployment["premia"]
    decimals = int(deployment.get("tokens", {}).get("USDC", {}).get("decimals", 6))
    return PremiaV3Venue(
        pool_factory=p["pool_factory"],
        oracle_adapter=p["oracle_adapter"],
        base=p["base"],
        quote=p["quote"],
        erc20_router=p["erc20_router"],
        quote_decimals=decimals,
    )


# -- planning --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionsPlannerConfig:
    slippage_bps: int = DEFAULT_SLIPPAGE_BPS  # premiumLimit = quote * (1 + bps / 1e4), rounded up
    lot: int = DEFAULT_LOT  # contracts (18 decimals) are rounded down to a multiple of this
    requote_rounds: int = 3  # shrink-and-requote rounds when a venue has price impact


@dataclass(frozen=True)
class PutPlan:
    account: str
    venue: str
    horizon: str
    pool: PoolRef
    spot: Decimal
    size: int  # contracts, 18 decimals
    premium_quote: int  # getQuoteAMM premiumNet (fee included), quote-token units
    taker_fee: int
    premium_limit: int  # quote-token units
    spend_usd: Decimal
    capped_by: str | None  # "wallet" | None
    transactions: tuple[PlannedTx, ...]
    quote_decimals: int = 6
    skipped: tuple[str, ...] = field(default_factory=tuple)  # candidate pools passed over, why

    @property
    def strike(self) -> Decimal:
        return Decimal(self.pool.strike_wad) / WAD

    @property
    def premium_usd(self) -> Decimal:
        return Decimal(self.premium_quote) / Decimal(10**self.quote_decimals)

    @property
    def contracts(self) -> Decimal:
        return Decimal(self.size) / WAD

    def as_dict(self) -> dict[str, Any]:
        return {
            "venue": self.venue,
            "horizon": self.horizon,
            "pool": self.pool.address,
            "strike": str(self.strike),
            "maturity": self.pool.maturity,
            "spot": str(self.spot),
            "size": str(self.size),
            "premium_quote": str(self.premium_quote),
            "taker_fee": str(self.taker_fee),
            "premium_limit": str(self.premium_limit),
            "spend_usd": str(self.spend_usd),
            "capped_by": self.capped_by,
            "skipped": list(self.skipped),
            "transactions": [t.as_dict() for t in self.transactions],
        }


def _fmt_units(amount: int, decimals: int) -> str:
    return f"{Decimal(amount) / 10**decimals:,.{decimals}f}"


def premium_limit_for(quote: int, slippage_bps: int) -> int:
    return -(-quote * (10_000 + slippage_bps) // 10_000)


async def plan_put(
    rpc: RpcClient,
    venue: OptionsVenue,
    *,
    account: str,
    horizon: str,
    dte_min: float,
    dte_max: float,
    otm_fraction: Decimal,
    spend_usd: Decimal,
    now: int,
    spot: Decimal | None = None,
    config: OptionsPlannerConfig | None = None,
    max_size: int | None = None,
) -> PutPlan:
    """``max_size`` (contracts, 18 decimals) caps the hedge at the exposure it protects, so a
    cheap near-expiry put never turns into a position larger than the collateral.

    Plan ``approve`` (when short) + ``trade`` buying puts for ``account`` worth about
    ``spend_usd`` of premium (fee included, never above it), at the strike ``spot * (1 -
    otm_fraction)`` floored to the grid and the preferred valid maturity in ``[dte_min,
    dte_max]`` days whose pool is deployed. ``now`` is the chain time the trade is planned for;
    ``spot`` defaults to the venue oracle's price. The quote token is treated as USD (USDC)."""
    cfg = config or OptionsPlannerConfig()
    if spend_usd <= 0:
        raise PlanningError(f"{horizon}: option spend {spend_usd} is not positive")
    if cfg.lot <= 0 or cfg.slippage_bps < 0:
        raise PlanningError(f"bad options planner config {cfg}")
    spot = await venue.spot(rpc) if spot is None else spot
    strike = venue.round_strike(spot, otm_fraction)
    maturities = venue.maturities(now, dte_min, dte_max)
    if not maturities:
        raise PlanningError(f"{horizon}: no valid {venue.name} maturity in {dte_min}-{dte_max} DTE")
    skipped: list[str] = []
    pool: PoolRef | None = None
    for m in maturities:
        ref = await venue.find_pool(rpc, strike, m)
        if ref.deployed:
            pool = ref
            break
        skipped.append(
            f"strike {Decimal(strike) / WAD} maturity {m}: pool {ref.address} not deployed"
        )
    if pool is None:
        raise PlanningError(
            f"{horizon}: no deployed {venue.name} put pool at strike {Decimal(strike) / WAD} "
            f"for any of {len(maturities)} valid maturities in {dte_min}-{dte_max} DTE"
        )

    scale = 10**venue.quote_decimals
    # The premium *limit* (quote + slippage) is what the spend may reach, so it stays in budget.
    budget = int((spend_usd * scale).to_integral_value(rounding=ROUND_FLOOR))
    budget = budget * 10_000 // (10_000 + cfg.slippage_bps)
    wallet = await venue.balance(rpc, account)
    capped_by = None
    wallet_budget = wallet * 10_000 // (10_000 + cfg.slippage_bps)  # the limit must be payable
    if wallet_budget < budget:
        budget, capped_by = wallet_budget, "wallet"

    unit = await venue.quote_buy(rpc, pool, account, WAD)
    if unit.premium_net <= 0:
        raise PlanningError(f"{horizon}: {venue.name} quotes no premium for pool {pool.address}")
    size = budget * WAD // unit.premium_net // cfg.lot * cfg.lot
    if max_size is not None and size > max_size // cfg.lot * cfg.lot:
        size, capped_by = max_size // cfg.lot * cfg.lot, "exposure"
    quote = unit
    for _ in range(cfg.requote_rounds):
        if size <= 0:
            break
        quote = await venue.quote_buy(rpc, pool, account, size)
        if quote.premium_net <= budget:
            break
        # Price impact: shrink proportionally (and by one lot) and ask again.
        size = (size * budget // quote.premium_net) // cfg.lot * cfg.lot - cfg.lot
    else:
        raise PlanningError(
            f"{horizon}: quote still above budget after {cfg.requote_rounds} rounds"
        )
    if size <= 0:
        one = Decimal(unit.premium_net * cfg.lot) / WAD / scale
        raise PlanningError(
            f"{horizon}: ${Decimal(budget) / scale} does not buy one lot "
            f"({Decimal(cfg.lot) / WAD} contracts cost ~${one:.2f})"
            + (" (capped by wallet)" if capped_by else "")
        )
    limit = premium_limit_for(quote.premium_net, cfg.slippage_bps)
    allowance = await venue.allowance(rpc, account)
    k = Decimal(pool.strike_wad) / WAD
    human = (
        f"buy {Decimal(size) / WAD} {venue.name} puts strike {k} maturity {pool.maturity} "
        f"for ~{_fmt_units(quote.premium_net, venue.quote_decimals)} USDC "
        f"(limit {_fmt_units(limit, venue.quote_decimals)}; {horizon} horizon, spot {spot:.2f})"
    )
    txs = venue.build_buy(pool, size, limit, allowance, human)
    return PutPlan(
        account=account,
        venue=venue.name,
        horizon=horizon,
        pool=pool,
        spot=spot,
        size=size,
        premium_quote=quote.premium_net,
        taker_fee=quote.taker_fee,
        premium_limit=limit,
        spend_usd=spend_usd,
        capped_by=capped_by,
        transactions=txs,
        quote_decimals=venue.quote_decimals,
        skipped=tuple(skipped),
    )


class OptionActionLike(Protocol):
    """The fields of ``agent.policy.models.OptionAction`` the planner reads."""

    @property
    def horizon(self) -> str: ...
    @property
    def dte_min(self) -> int: ...
    @property
    def dte_max(self) -> int: ...
    @property
    def otm_fraction(self) -> Decimal: ...
    @property
    def spend_usd(self) -> Decimal: ...


async def plan_option_action(
    rpc: RpcClient,
    venue: OptionsVenue,
    action: OptionActionLike,
    *,
    account: str,
    now: int,
    spot: Decimal | None = None,
    config: OptionsPlannerConfig | None = None,
    max_size: int | None = None,
) -> PutPlan:
    """``plan_put`` for one policy ``OptionAction``."""
    return await plan_put(
        rpc,
        venue,
        account=account,
        horizon=action.horizon,
        dte_min=action.dte_min,
        dte_max=action.dte_max,
        otm_fraction=action.otm_fraction,
        spend_usd=action.spend_usd,
        now=now,
        spot=spot,
        config=config,
        max_size=max_size,
    )
