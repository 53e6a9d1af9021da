"""Configuration of the SPX layer rule (:mod:`agent.policy.spx`): ``[policy.spx]``.

Defaults: puts 5%, 6% and 7% out of the money across the three horizons of the DeFi ladder
(0-7, 15-45, 60+ DTE, weights 40/35/25), at most half of the session cap, 100 contracts'
multiplier, a limit 10% above the Black-Scholes estimate.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.policy.ladder import HorizonConfig, check_ladder

# SPXW: PM-settled weeklies/dailies (every weekday; "Friday" = the Friday weeklies);
# SPX: the AM-settled standard monthlies (third Friday of the month).
SpxProduct = Literal["SPXW daily", "SPXW Friday", "SPX monthly"]


class SpxHorizonConfig(HorizonConfig):
    """A rung of the SPX ladder: the DeFi ladder's rung plus the listed product it is bought
    in and whether it is an outer wing."""

    product: SpxProduct
    # An outer wing: bought only when S10/S11 confirm S9 (``wing_min_consensus`` of them).
    outer_wing: bool = False


DEFAULT_SPX_HORIZONS: tuple[SpxHorizonConfig, ...] = (
    SpxHorizonConfig(
        name="short",
        dte_min=0,
        dte_max=7,
        weight=Decimal("0.40"),
        otm_fraction=Decimal("0.05"),
        product="SPXW daily",
    ),
    SpxHorizonConfig(
        name="intermediate",
        dte_min=15,
        dte_max=45,
        weight=Decimal("0.35"),
        otm_fraction=Decimal("0.06"),
        product="SPXW Friday",
        outer_wing=True,
    ),
    SpxHorizonConfig(
        name="structural",
        dte_min=60,
        dte_max=180,
        weight=Decimal("0.25"),
        otm_fraction=Decimal("0.07"),
        product="SPX monthly",
        outer_wing=True,
    ),
)


class SpxLayerConfig(BaseModel):
    """The SPX layer: an advisory ticket (the agent never trades equity options itself).

    * budget = ``min(session cap - session spent, session cap x size_fraction)`` (and the open
      layer budget's remainder, when the caller knows it), cut to cents;
    * per horizon ``budget x weight``; contracts = ``floor(leg budget / (limit x multiplier))``,
      so even filled at the limit the ticket stays inside the budget, and at most
      ``floor(collateral x max_notional_fraction / (strike x multiplier))`` (the notional cap);
    * estimated premium: Black-Scholes with the VIX close / 100 as volatility (an estimate: VIX is
      30-day at-the-money implied volatility; out-of-the-money puts usually trade richer, skew);
    * limit = estimate x (1 + ``limit_markup_fraction``), rounded up to the tick (0.05 below 3.00,
      0.10 from 3.00, CBOE's SPX/SPXW ticks).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    size_fraction: Decimal = Field(Decimal("0.5"), ge=0, le=1)
    horizons: tuple[SpxHorizonConfig, ...] = DEFAULT_SPX_HORIZONS
    wing_min_consensus: int = Field(1, ge=0, le=2)
    multiplier: int = Field(100, gt=0)
    strike_step: int = Field(5, gt=0)
    risk_free_rate: float = Field(0.0, ge=-0.05, le=0.5)
    limit_markup_fraction: Decimal = Field(Decimal("0.10"), ge=0, le=1)
    # Each leg's notional (strike x multiplier x contracts) stays within this fraction of the
    # protected position's collateral value: puts beyond it would be speculation, not protection.
    max_notional_fraction: Decimal = Field(Decimal("1.0"), gt=0)

    @model_validator(mode="after")
    def _weights(self) -> SpxLayerConfig:
        check_ladder(self.horizons, "spx horizon")
        return self
