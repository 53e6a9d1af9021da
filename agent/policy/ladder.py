"""A put ladder's rungs, shared by the DeFi layer (``[policy] horizons``) and the SPX layer
(``[policy.spx] horizons``): each rung's expiry window and weight, and the checks every ladder
must pass (unique names, weights summing to at most 1)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class HorizonConfig(BaseModel):
    """One rung of the option ladder. ``weight`` is its share of the option spend;
    ``otm_fraction`` how far out of the money the put strike is (0.10 = strike 10% below spot)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    dte_min: int = Field(ge=0)
    dte_max: int = Field(ge=0)
    weight: Decimal = Field(ge=0, le=1)
    otm_fraction: Decimal = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _range(self) -> HorizonConfig:
        if self.dte_max < self.dte_min:
            raise ValueError(
                f"horizon {self.name}: dte_max {self.dte_max} < dte_min {self.dte_min}"
            )
        return self


def check_ladder(horizons: Sequence[HorizonConfig], what: str = "horizon") -> None:
    """Raise ``ValueError`` (pydantic reports it on the field) unless the names are unique and
    the weights sum to at most 1."""
    names = [h.name for h in horizons]
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names must be unique, got {names}")
    total = sum((h.weight for h in horizons), Decimal(0))
    if total > 1:
        raise ValueError(f"{what} weights sum to {total}, must be <= 1")
