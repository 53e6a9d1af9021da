"""Premia v3 venue rules (maturities, strike grid), Black-Scholes and put sizing, without a chain."""

from __future__ import annotations

import calendar
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pytest

from agent.core.abi import function_abi_to_4byte_selector, load_abi
from agent.core.errors import PlanningError
from agent.core.rpc import RpcClient
from agent.core.units import WAD
from agent.devnet.artifacts import forge_out
from agent.devnet.pricing import black_scholes_put
from agent.planner.options import (
    OptionsPlannerConfig,
    PoolRef,
    PremiaV3Venue,
    VenueQuote,
    is_last_friday,
    is_valid_strike,
    maturity_error,
    plan_put,
    preferred_maturities,
    premia_maturities,
    put_strike,
    round_strike_down,
    strike_grid,
    strike_interval,
)


def ts(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())  # type: ignore[misc]


def dates(maturities: list[int]) -> list[str]:
    return [datetime.fromtimestamp(m, UTC).strftime("%Y-%m-%d %H:%M") for m in maturities]


# -- maturities ------------------------------------------------------------------------------


def test_short_horizon_dailies_then_friday() -> None:
    now = ts(2024, 2, 20, 12)  # Tuesday
    assert dates(premia_maturities(now, 0, 7)) == [
        "2024-02-21 08:00",
        "2024-02-22 08:00",
        "2024-02-23 08:00",  # Friday; Sat-Tue are >= 3 days out and not Fridays
    ]


def test_intermediate_horizon_fridays_then_last_friday() -> None:
    now = ts(2024, 2, 20, 12)
    # Mar 22 is a Friday 30.8 days out: past 30 days only the last Friday (Mar 29) is valid.
    assert dates(premia_maturities(now, 15, 45)) == [
        "2024-03-08 08:00",
        "2024-03-15 08:00",
        "2024-03-29 08:00",
    ]


def test_structural_horizon_last_fridays_up_to_365_days() -> None:
    now = ts(2024, 2, 20, 12)
    got = dates(premia_maturities(now, 60, 400))
    assert got == [
        "2024-04-26 08:00",
        "2024-05-31 08:00",
        "2024-06-28 08:00",
        "2024-07-26 08:00",
        "2024-08-30 08:00",
        "2024-09-27 08:00",
        "2024-10-25 08:00",
        "2024-11-29 08:00",
        "2024-12-27 08:00",
        "2025-01-31 08:00",  # 2025-02-28 is 373 days out: beyond Premia's 365-day maximum
    ]


def test_across_year_end() -> None:
    now = ts(2024, 12, 20, 9)  # Friday after 08:00
    assert dates(premia_maturities(now, 0, 7)) == [
        "2024-12-21 08:00",
        "2024-12-22 08:00",
        "2024-12-23 08:00",
        "2024-12-27 08:00",
    ]
    assert dates(premia_maturities(now, 15, 45)) == [
        "2025-01-10 08:00",
        "2025-01-17 08:00",
        "2025-01-31 08:00",
    ]


def test_last_friday_leap_and_month_ends() -> None:
    assert is_last_friday(ts(2024, 2, 23, 8))  # leap February: 29 - 23 = 6
    assert not is_last_friday(ts(2024, 2, 16, 8))
    assert is_last_friday(ts(2026, 2, 27, 8))
    assert is_last_friday(ts(2024, 5, 31, 8))  # the last day itself
    assert not is_last_friday(ts(2024, 5, 24, 8))  # 31 - 24 = 7: not the last
    assert not is_last_friday(ts(2024, 5, 30, 8))  # a Thursday


def test_maturity_errors_name_premias_errors() -> None:
    now = ts(2024, 2, 20, 12)
    assert maturity_error(ts(2024, 2, 20, 8), now) == "PoolFactory__OptionExpired"
    assert maturity_error(ts(2024, 2, 21, 9), now) == "PoolFactory__OptionMaturityNot8UTC"
    assert maturity_error(ts(2024, 2, 27, 8), now) == "PoolFactory__OptionMaturityNotFriday"
    assert maturity_error(ts(2024, 3, 22, 8), now) == "PoolFactory__OptionMaturityNotLastFriday"
    assert maturity_error(ts(2025, 2, 28, 8), now) == "PoolFactory__OptionMaturityExceedsMax"
    assert maturity_error(ts(2024, 2, 22, 8), now) is None  # Thursday, < 3 days
    assert maturity_error(ts(2024, 3, 29, 8), now) is None


def _reference_valid(m: datetime, now: datetime) -> bool:
    """Premia's rule written with the standard library, independently of the module."""
    if m <= now or (m.hour, m.minute, m.second) != (8, 0, 0):
        return False
    ttm = m - now
    friday = m.weekday() == calendar.FRIDAY
    last = friday and m.day + 7 > calendar.monthrange(m.year, m.month)[1]
    if timedelta(days=3) <= ttm <= timedelta(days=30) and not friday:
        return False
    if ttm > timedelta(days=30) and not last:
        return False
    return ttm <= timedelta(days=365)


@pytest.mark.parametrize(
    "now", [ts(2023, 12, 29, 7, 59), ts(2024, 2, 28, 8), ts(2024, 12, 31, 23), ts(2027, 6, 4, 8, 1)]
)
def test_maturities_match_a_reference_over_a_year(now: int) -> None:
    now_dt = datetime.fromtimestamp(now, UTC)
    start = now_dt.replace(hour=8, minute=0, second=0, microsecond=0)
    expected = [
        int((start + timedelta(days=d)).timestamp())
        for d in range(0, 368)
        if _reference_valid(start + timedelta(days=d), now_dt)
    ]
    assert premia_maturities(now, 0, 365) == expected
    assert all(m % 86_400 == 8 * 3600 for m in expected)


def test_preferred_maturity_is_nearest_the_middle() -> None:
    now = ts(2024, 2, 20, 12)
    assert dates(preferred_maturities(now, 60, 180)[:1]) == ["2024-06-28 08:00"]  # ~129 d vs 120
    assert dates(preferred_maturities(now, 0, 7)[:1]) == ["2024-02-23 08:00"]
    with pytest.raises(PlanningError):
        premia_maturities(now, 10, 5)


# -- strikes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strike", "interval"),
    [
        (Decimal(3000), Decimal(100)),
        (Decimal(4999), Decimal(100)),
        (Decimal(5000), Decimal(500)),
        (Decimal(7500), Decimal(500)),
        (Decimal(62000), Decimal(5000)),
        (Decimal(100), Decimal(10)),
        (Decimal(1), Decimal("0.1")),
        (Decimal("0.45"), Decimal("0.01")),
        (Decimal("0.5"), Decimal("0.05")),
    ],
)
def test_strike_interval(strike: Decimal, interval: Decimal) -> None:
    assert strike_interval(int(strike * WAD)) == int(interval * WAD)


def test_strike_rounding_and_validity() -> None:
    assert round_strike_down(2550 * WAD) == 2500 * WAD
    assert round_strike_down(2699 * WAD) == 2600 * WAD
    assert round_strike_down(5499 * WAD) == 5000 * WAD
    assert put_strike(Decimal(3000), Decimal("0.10")) == 2700 * WAD
    assert put_strike(Decimal(3000), Decimal("0.15")) == 2500 * WAD  # 2550 is off the grid
    assert put_strike(Decimal(3000), Decimal("0.20")) == 2400 * WAD
    assert put_strike(Decimal(62000), Decimal("0.20")) == 49000 * WAD  # 49,600 -> interval 1,000
    assert put_strike(Decimal("2251.37"), Decimal("0.1")) == 2000 * WAD
    assert is_valid_strike(7500 * WAD) and not is_valid_strike(7600 * WAD)
    assert not is_valid_strike(2750 * WAD)
    grid = strike_grid(1500 * WAD, 3000 * WAD)
    assert grid == [k * WAD for k in range(1500, 3001, 100)]
    assert strike_grid(4000 * WAD, 6000 * WAD) == [
        k * WAD
        for k in (4000, 4100, 4200, 4300, 4400, 4500, 4600, 4700, 4800, 4900, 5000, 5500, 6000)
    ]
    for k in strike_grid(WAD // 2, 100_000 * WAD):
        assert is_valid_strike(k)
    with pytest.raises(PlanningError):
        put_strike(Decimal(0), Decimal("0.1"))


# -- Black-Scholes ---------------------------------------------------------------------------


def _put_by_integration(s: float, k: float, tau: float, vol: float) -> float:
    """E[(K - S_T)+] under a zero-drift lognormal, Simpson's rule over the standard normal."""
    vs = vol * math.sqrt(tau)
    z_star = (math.log(k / s) + vs * vs / 2) / vs  # payoff is zero above this
    lo, n = -12.0, 20_000
    h = (z_star - lo) / n

    def f(z: float) -> float:
        return (
            (k - s * math.exp(vs * z - vs * vs / 2)) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
        )

    total = f(lo) + f(z_star) + sum((4 if i % 2 else 2) * f(lo + i * h) for i in range(1, n))
    return total * h / 3


@pytest.mark.parametrize(
    ("s", "k", "tau", "vol"),
    [
        (3000, 2700, 4 / 365, 0.8),
        (3000, 2500, 30 / 365, 0.8),
        (3000, 2400, 120 / 365, 0.8),
        (3000, 3000, 1.0, 0.5),
        (2000, 2500, 60 / 365, 0.9),
        (62000, 49000, 90 / 365, 0.6),
    ],
)
def test_black_scholes_put_matches_independent_integration(
    s: float, k: float, tau: float, vol: float
) -> None:
    assert black_scholes_put(s, k, tau, vol) == pytest.approx(
        _put_by_integration(s, k, tau, vol), rel=1e-8, abs=1e-9
    )


def test_black_scholes_edges_and_parity() -> None:
    assert black_scholes_put(3000, 2700, 0, 0.8) == 0
    assert black_scholes_put(2000, 2700, 0, 0.8) == 700
    # put-call parity at r = 0: C - P = S - K, with C from math.erf directly
    s, k, tau, vol = 3000.0, 2800.0, 0.25, 0.7
    vs = vol * math.sqrt(tau)
    d1 = (math.log(s / k) + vs * vs / 2) / vs
    call = s * 0.5 * (1 + math.erf(d1 / math.sqrt(2))) - k * 0.5 * (
        1 + math.erf((d1 - vs) / math.sqrt(2))
    )
    assert call - black_scholes_put(s, k, tau, vol) == pytest.approx(s - k, abs=1e-9)


# -- planning against a fake venue -------------------------------------------------------------


@dataclass
class FakeVenue:
    """Premium per contract with optional price impact (per contract bought)."""

    unit_premium: int = 10_000_000  # 10 USDC per contract
    impact_per_contract: float = 0.0
    wallet: int = 10**12
    allowance_now: int = 0
    deployed_from: int = 0  # maturities before this are not deployed
    name: str = "fake"
    quote_token: str = "0x" + "11" * 20
    quote_decimals: int = 6
    spender: str = "0x" + "22" * 20
    calls: list[str] = field(default_factory=list)
    _real: PremiaV3Venue = field(
        default_factory=lambda: PremiaV3Venue(
            "0x" + "33" * 20, "0x" + "44" * 20, "0x" + "55" * 20, "0x" + "11" * 20, "0x" + "22" * 20
        )
    )

    def maturities(self, now: int, dte_min: float, dte_max: float) -> list[int]:
        return preferred_maturities(now, dte_min, dte_max)

    def round_strike(self, spot: Decimal, otm_fraction: Decimal) -> int:
        return put_strike(spot, otm_fraction)

    async def spot(self, rpc: RpcClient) -> Decimal:
        return Decimal(3000)

    async def find_pool(self, rpc: RpcClient, strike_wad: int, maturity: int) -> PoolRef:
        self.calls.append("find_pool")
        return PoolRef("0x" + "66" * 20, maturity >= self.deployed_from, strike_wad, maturity)

    async def quote_buy(self, rpc: RpcClient, pool: PoolRef, taker: str, size: int) -> VenueQuote:
        contracts = size / WAD
        per = self.unit_premium * (1 + self.impact_per_contract * contracts)
        return VenueQuote(int(per * contracts), 0)

    async def allowance(self, rpc: RpcClient, owner: str) -> int:
        return self.allowance_now

    async def balance(self, rpc: RpcClient, owner: str) -> int:
        return self.wallet

    def build_buy(
        self, pool: PoolRef, size: int, premium_limit: int, allowance: int, human: str
    ) -> Any:
        return PremiaV3Venue.build_buy(
            cast(Any, self._real), pool, size, premium_limit, allowance, human
        )


async def _plan(venue: FakeVenue, spend: str = "1000", **kw: Any) -> Any:
    return await plan_put(
        cast(RpcClient, None),
        venue,
        account="0x" + "77" * 20,
        horizon="short",
        dte_min=0,
        dte_max=7,
        otm_fraction=Decimal("0.1"),
        spend_usd=Decimal(spend),
        now=ts(2024, 2, 20, 12),
        **kw,
    )


async def test_plan_sizes_to_the_spend_in_lots() -> None:
    # The premium *limit* (quote + 1% slippage) must fit the spend: 1010.005 buys 100 contracts.
    plan = await _plan(FakeVenue(), "1010.005")
    assert plan.size == 100 * WAD  # 1000 USDC / 10 USDC per contract
    assert plan.premium_limit <= 1_010_005_000
    assert plan.premium_quote == 1_000_000_000 and plan.premium_limit == 1_010_000_000
    approve, trade = plan.transactions
    assert approve.decoded.method == "approve" and approve.to == "0x" + "11" * 20
    assert list(approve.decoded.args.values()) == ["0x" + "22" * 20, 1_010_000_000]
    assert trade.decoded.method == "trade" and trade.decoded.args["premiumLimit"] == 1_010_000_000
    assert plan.strike == 2700


async def test_plan_requotes_under_price_impact_and_skips_approve() -> None:
    venue = FakeVenue(impact_per_contract=0.001, allowance_now=10**12)
    plan = await _plan(venue, "1000")
    assert plan.premium_quote <= 1_000_000_000
    assert plan.size % 10**16 == 0
    assert [t.decoded.method for t in plan.transactions] == ["trade"]


async def test_plan_caps_by_wallet_and_skips_undeployed_pools() -> None:
    now = ts(2024, 2, 20, 12)
    venue = FakeVenue(wallet=505_000_000, deployed_from=ts(2024, 2, 22, 8))
    plan = await _plan(venue, "1000", config=OptionsPlannerConfig(slippage_bps=100, lot=WAD))
    assert plan.capped_by == "wallet"
    assert plan.size == 50 * WAD and plan.premium_limit <= 505_000_000
    assert plan.pool.maturity >= ts(2024, 2, 22, 8) > now
    with pytest.raises(PlanningError, match="does not buy one lot"):
        await _plan(FakeVenue(), "5", config=OptionsPlannerConfig(lot=WAD))
    with pytest.raises(PlanningError, match="no deployed"):
        await _plan(FakeVenue(deployed_from=2**62))


# -- the devnet contracts speak Premia's ABI ---------------------------------------------------


def _items(abi: list[dict[str, Any]], kind: str) -> dict[str, bytes]:
    out = {}
    for it in abi:
        if it.get("type") == kind:
            if kind == "event":
                from agent.core.abi import event_abi_to_log_topic

                out[it["name"]] = event_abi_to_log_topic(it)
            else:
                out[it["name"]] = function_abi_to_4byte_selector(it)
    return out


@pytest.mark.parametrize(
    ("ours", "theirs", "required"),
    [
        (
            "PremiaLikePutPool.sol/PremiaLikePutPool.json",
            "PremiaPool",
            {
                "getQuoteAMM",
                "trade",
                "balanceOf",
                "getPoolSettings",
                "Trade",
                "Pool__AboveMaxSlippage",
            },
        ),
        (
            "PremiaLikePoolFactory.sol/PremiaLikePoolFactory.json",
            "PremiaPoolFactory",
            {
                "getPoolAddress",
                "deployPool",
                "PoolDeployed",
                "PoolFactory__OptionMaturityNotFriday",
            },
        ),
        (
            "PremiaLikePoolFactory.sol/PremiaLikeOracleAdapter.json",
            "PremiaOracleAdapter",
            {"getPrice"},
        ),
    ],
)
def test_devnet_contracts_use_premia_selectors(ours: str, theirs: str, required: set[str]) -> None:
    path = forge_out() / ours
    if not path.is_file():
        pytest.skip(f"{path} not built (make build)")
    our_abi = json.loads(path.read_text())["abi"]
    ref = load_abi(theirs).abi
    shared = 0
    for kind in ("function", "error", "event"):
        mine, real = _items(our_abi, kind), _items(ref, kind)
        for name in mine.keys() & real.keys():
            assert mine[name] == real[name], f"{kind} {name} differs from Premia's"
            shared += 1
        assert not (required & real.keys()) - mine.keys(), f"missing {kind}s"
    assert shared >= len(required)


def test_premium_limit_rounds_up() -> None:
    from agent.planner.options import premium_limit_for

    # 1_000_001 * 1.01 = 1_010_001.01 quote units: the limit is rounded UP so a fill at the
    # quote plus slippage never reverts for a unit; and exact products stay exact.
    assert premium_limit_for(1_000_001, 100) == 1_010_002
    assert premium_limit_for(1_000_000, 100) == 1_010_000
    assert premium_limit_for(1_000_001, 0) == 1_000_001


async def test_plan_is_capped_at_the_exposure_size() -> None:
    # 1010.005 buys 100 contracts (test above); the exposure caps it at 50: half the premium.
    plan = await _plan(FakeVenue(), "1010.005", max_size=50 * WAD)
    assert plan.size == 50 * WAD and plan.capped_by == "exposure"
    assert plan.premium_quote == 500_000_000 and plan.premium_limit == 505_000_000
    assert (await _plan(FakeVenue(), "1010.005", max_size=100 * WAD)).capped_by is None


async def test_wallet_cap_leaves_room_for_the_slippage_limit() -> None:
    # 505 USDC in the wallet: the premium LIMIT (quote + 1%) must be payable, so the quote is
    # at most 505 / 1.01 = 500 USDC: 50 contracts, limit exactly 505 USDC.
    plan = await _plan(FakeVenue(wallet=505_000_000), "1010.005")
    assert plan.capped_by == "wallet" and plan.size == 50 * WAD
    assert plan.premium_quote == 500_000_000 and plan.premium_limit == 505_000_000
