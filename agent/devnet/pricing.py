"""Devnet-only pricing for the Premia-compatible put pools the devnet deploys: the pools'
Black–Scholes premium (the project's one pricer, :mod:`agent.policy.pricing`, at r = 0) and the
pool keys listed up front. The planner never prices a put itself (it asks the venue for a quote),
so these live with the devnet, not the planner."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from agent.core.units import WAD
from agent.planner.options import DAY, MAX_TTM, PremiaV3Venue, premia_maturities, strike_grid
from agent.policy.pricing import black_scholes_put, normal_cdf  # the pools price at r = 0

__all__ = ["black_scholes_put", "devnet_pool_keys", "normal_cdf"]


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
