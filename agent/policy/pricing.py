"""The one Black-Scholes European put (no dividends) that the backtest, the SPX ticket and the
devnet's put pools all price with.

``black_scholes_put(spot, strike, tau_years, vol, rate=0.0) = K e^{-rT} N(-d2) - S N(-d1)``.

Edges (why they are what they are): at or past expiry (``tau_years <= 0``) the put is worth its
intrinsic value ``max(K - S, 0)`` whatever the rate; with zero volatility before expiry the
underlying's path is its forward ``S e^{rT}``, so the value is the discounted intrinsic value of
the forward, ``max(K e^{-rT} - S, 0)``. Of the three pricers this replaced, the SPX one returned
the undiscounted ``max(K - S, 0)`` at zero volatility (too high by ``K (1 - e^{-rT})`` in the
money) and the backtest's discounted with the (negative) time left past expiry; this one is the
limit of the formula on both sides. ``N`` uses ``erfc`` (accurate in the far tail, where
``1 + erf`` loses every digit).
"""

from __future__ import annotations

import math


def normal_cdf(x: float) -> float:
    """Standard normal CDF, ``erfc``-based."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def black_scholes_put(
    spot: float, strike: float, tau_years: float, vol: float, rate: float = 0.0
) -> float:
    """European put price in the units of ``spot`` and ``strike`` (see the module doc)."""
    if spot <= 0 or strike <= 0:
        raise ValueError(f"spot {spot} and strike {strike} must be positive")
    if tau_years <= 0:
        return max(strike - spot, 0.0)
    disc = math.exp(-rate * tau_years)
    if vol <= 0:
        return max(strike * disc - spot, 0.0)
    vs = vol * math.sqrt(tau_years)
    d1 = (math.log(spot / strike) + (rate + vol * vol / 2) * tau_years) / vs
    d2 = d1 - vs
    return strike * disc * normal_cdf(-d2) - spot * normal_cdf(-d1)
