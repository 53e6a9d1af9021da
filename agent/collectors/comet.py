"""Compound III (Comet) base-asset rates as Multicall3 calls that ride in a tick's batch.

Series (unit): ``rate.compound-v3.<chain>.<asset>.supply_apy`` ("apy"), ``.borrow_apy`` ("apy"),
``.utilization`` ("ratio"); ``<asset>`` lower-cased, e.g. ``rate.compound-v3.ethereum.usdc``.

``getSupplyRate(utilization)`` / ``getBorrowRate(utilization)`` take the utilization as an
argument, so they cannot be called in the *same* ``aggregate3`` batch as ``getUtilization()``.
``comet_calls`` therefore reads ``getUtilization()`` together with the eight public rate-model
parameters (``supplyKink``, ``supplyPerSecondInterestRateSlopeLow/High/Base``, and the ``borrow``
ones), and ``comet_rates`` evaluates Comet's own piecewise-linear formula on them with its integer
arithmetic (``mulFactor(n, f) = n * f / 1e18``, truncating), which gives exactly what
``getSupplyRate(getUtilization())`` returns at that block. A caller that prefers asking the
contract can add ``comet_rate_calls(addr, prefix, utilization)`` to a second batch:
``comet_observations`` uses those answers when present.

Units (docs.compound.finance/interest-rates): rates are per second, scaled by 1e18;
APR = rate x 31,536,000 / 1e18, APY = (1 + rate/1e18)^31,536,000 - 1 (``agent.core.units``).
Utilization is 1e18 = 100%.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.core.abi import load_abi
from agent.core.models import Observation
from agent.core.multicall import Call
from agent.core.units import WAD, per_second_wad_to_apr, per_second_wad_to_apy

PARAMS = (
    "supplyKink",
    "supplyPerSecondInterestRateSlopeLow",
    "supplyPerSecondInterestRateSlopeHigh",
    "supplyPerSecondInterestRateBase",
    "borrowKink",
    "borrowPerSecondInterestRateSlopeLow",
    "borrowPerSecondInterestRateSlopeHigh",
    "borrowPerSecondInterestRateBase",
)
FACTOR_SCALE = WAD
MAX_UINT64 = 2**64 - 1


def comet_calls(comet_addr: str, tag_prefix: str) -> list[Call]:
    """One tick's reads for one Comet market (all in the same ``aggregate3`` batch)."""
    abi = load_abi("Comet")
    return [Call(f"{tag_prefix}:getUtilization", comet_addr, abi, "getUtilization")] + [
        Call(f"{tag_prefix}:{p}", comet_addr, abi, p) for p in PARAMS
    ]


def comet_rate_calls(comet_addr: str, tag_prefix: str, utilization: int) -> list[Call]:
    """The contract's own rate functions at ``utilization`` (a second batch, optional)."""
    abi = load_abi("Comet")
    return [
        Call(f"{tag_prefix}:getSupplyRate", comet_addr, abi, "getSupplyRate", (utilization,)),
        Call(f"{tag_prefix}:getBorrowRate", comet_addr, abi, "getBorrowRate", (utilization,)),
    ]


@dataclass(frozen=True)
class RateModel:
    kink: int
    slope_low: int
    slope_high: int
    base: int

    def rate(self, utilization: int) -> int:
        """Comet.getSupplyRate / getBorrowRate: per-second rate, 1e18-scaled."""
        if utilization <= self.kink:
            r = self.base + self.slope_low * utilization // FACTOR_SCALE
        else:
            r = (
                self.base
                + self.slope_low * self.kink // FACTOR_SCALE
                + self.slope_high * (utilization - self.kink) // FACTOR_SCALE
            )
        if r > MAX_UINT64:  # Comet's safe64 reverts here
            raise ValueError(f"rate {r} does not fit uint64")
        return r


@dataclass(frozen=True)
class CometRates:
    utilization: int  # 1e18 = 100%
    supply_rate: int  # per second, 1e18-scaled
    borrow_rate: int

    @property
    def supply_apr(self) -> float:
        return per_second_wad_to_apr(self.supply_rate)

    @property
    def borrow_apr(self) -> float:
        return per_second_wad_to_apr(self.borrow_rate)

    @property
    def supply_apy(self) -> float:
        return per_second_wad_to_apy(self.supply_rate)

    @property
    def borrow_apy(self) -> float:
        return per_second_wad_to_apy(self.borrow_rate)


def comet_rates(outputs: Mapping[str, tuple[Any, ...]], tag_prefix: str) -> CometRates:
    """Rates from the decoded multicall outputs. KeyError if a needed call failed (its
    ``CallFailure`` reason says why)."""
    util = int(outputs[f"{tag_prefix}:getUtilization"][0])
    direct_s = outputs.get(f"{tag_prefix}:getSupplyRate")
    direct_b = outputs.get(f"{tag_prefix}:getBorrowRate")
    if direct_s is not None and direct_b is not None:
        return CometRates(util, int(direct_s[0]), int(direct_b[0]))
    v = {p: int(outputs[f"{tag_prefix}:{p}"][0]) for p in PARAMS}
    supply = RateModel(
        v["supplyKink"],
        v["supplyPerSecondInterestRateSlopeLow"],
        v["supplyPerSecondInterestRateSlopeHigh"],
        v["supplyPerSecondInterestRateBase"],
    )
    borrow = RateModel(
        v["borrowKink"],
        v["borrowPerSecondInterestRateSlopeLow"],
        v["borrowPerSecondInterestRateSlopeHigh"],
        v["borrowPerSecondInterestRateBase"],
    )
    return CometRates(util, supply.rate(util), borrow.rate(util))


def comet_observations(
    outputs: Mapping[str, tuple[Any, ...]],
    tag_prefix: str,
    *,
    chain: str,
    asset: str,
    ts: int,
    source: str,
    protocol: str = "compound-v3",
) -> list[Observation]:
    """The three series for one market. Raises KeyError/ValueError when a read is missing or
    absurd, so the caller reports it as a problem naming the market."""
    r = comet_rates(outputs, tag_prefix)
    prefix = f"rate.{protocol}.{chain}.{asset.lower()}"
    return [
        Observation(f"{prefix}.supply_apy", ts, r.supply_apy, "apy", source),
        Observation(f"{prefix}.borrow_apy", ts, r.borrow_apy, "apy", source),
        Observation(f"{prefix}.utilization", ts, r.utilization / WAD, "ratio", source),
    ]
