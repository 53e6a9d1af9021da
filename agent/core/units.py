"""Exact on-chain unit conversions. Integers stay integers; floats appear only in the
``*_to_float`` / APY helpers, which are the edge into statistics."""

from __future__ import annotations

from decimal import Decimal, getcontext

RAY = 10**27
WAD = 10**18
BPS = 10_000
SECONDS_PER_YEAR = 31_536_000  # Aave MathUtils: 365 days
AAVE_BASE_UNIT_USD = 10**8  # oracle base currency unit for USD markets
MAX_UINT256 = 2**256 - 1

getcontext().prec = 60


def ray_to_float(x_ray: int) -> float:
    return float(Decimal(x_ray) / Decimal(RAY))


def wad_to_float(x_wad: int) -> float:
    return float(Decimal(x_wad) / Decimal(WAD))


def ray_apr_to_apy(rate_ray: int) -> float:
    """Aave: ``apy = (1 + apr / SECONDS_PER_YEAR) ** SECONDS_PER_YEAR - 1`` with ``apr = rate/1e27``."""
    apr = Decimal(rate_ray) / Decimal(RAY)
    return float((1 + apr / SECONDS_PER_YEAR) ** SECONDS_PER_YEAR - 1)


def per_second_wad_to_apr(rate_per_second_wad: int) -> float:
    """Compound III: ``rate / 1e18 * SECONDS_PER_YEAR``."""
    return float(Decimal(rate_per_second_wad) / Decimal(WAD) * SECONDS_PER_YEAR)


def per_second_wad_to_apy(rate_per_second_wad: int) -> float:
    r = Decimal(rate_per_second_wad) / Decimal(WAD)
    return float((1 + r) ** SECONDS_PER_YEAR - 1)


def token_to_float(amount: int, decimals: int) -> float:
    return float(Decimal(amount) / (Decimal(10) ** decimals))


def base_to_usd(amount_base: int, base_unit: int = AAVE_BASE_UNIT_USD) -> float:
    return float(Decimal(amount_base) / Decimal(base_unit))
