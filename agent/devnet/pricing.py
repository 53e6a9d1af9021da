"""Devnet-only pricing for the Premia-compatible put pools the devnet deploys: the pools'
Black–Scholes premium and the pool keys listed up front. The planner never prices a put itself
(it asks the venue for a quote), so these live with the devnet, not the planner."""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from agent.core.units import WAD
from agent.planner.options import DAY, MAX_TTM, PremiaV3Venue, premia_maturities, strike_grid


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def black_scholes_put(spot: float, strike: float, tau_years: float, vol: float) -> float:
    """European put, zero rates: ``K N(-d2) - S N(-d1)`` (the devnet pool's pricing)."""
    if tau_years <= 0 or vol <= 0:
        return max(strike - spot, 0.0)
    vs = vol * math.sqrt(tau_years)
    d1 = (math.log(spot / strike) + vs * vs / 2) / vs
    d2 = d1 - vs
    return strike * normal_cdf(-d2) - spot * normal_cdf(-d1)


def devnet_pool_keys(
    venue: PremiaV3Venue, now: int, spot: Decimal, low: Decimal, high: Decimal
) -> Sequence[tuple[str, str, str, int, int, bool]]:
    """Pool keys for every valid maturity (0-365 days) x every grid strike in
    ``[spot * low, spot * high]`` (used by the devnet to list pools up front)."""
    lo = int((spot * low * WAD).to_integral_value(rounding=ROUND_CEILING))
    hi = int((spot * high * WAD).to_integral_value(rounding=ROUND_FLOOR))
    return [
        venue.pool_key(k, m)
        for m in premia_maturities(now, 0, MAX_TTM / DAY)
        for k in strike_grid(lo, hi)
    ]
