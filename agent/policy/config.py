"""Policy configuration: DESIGN.md section 2 defaults (the DeFi layer rule, consensus gate, beta
priority, sizing, hysteresis). Money is ``Decimal`` USD (exact; amounts are cut to cents);
fractions are ``Decimal`` too so sizing never goes through float.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.policy.ladder import HorizonConfig, check_ladder
from agent.policy.spx_config import SpxLayerConfig

DEFAULT_HORIZONS: tuple[HorizonConfig, ...] = (
    HorizonConfig(
        name="short", dte_min=0, dte_max=7, weight=Decimal("0.40"), otm_fraction=Decimal("0.10")
    ),
    HorizonConfig(
        name="intermediate",
        dte_min=15,
        dte_max=45,
        weight=Decimal("0.35"),
        otm_fraction=Decimal("0.15"),
    ),
    # "60+ DTE": bounded at 180 so a venue lookup has a finite range; raise it in config if wanted.
    HorizonConfig(
        name="structural",
        dte_min=60,
        dte_max=180,
        weight=Decimal("0.25"),
        otm_fraction=Decimal("0.20"),
    ),
)


class PolicyConfig(BaseModel):
    """Sizing model (per UTC-day session):

    * session cap = ``budget_usd * session_cap_fraction`` (25% of the defined-risk capital B);
    * a layer that acts gets ``min(session remaining, session cap * size_fraction)`` where
      size_fraction is 1 when S8 says "DeFi first" and ``non_defi_first_fraction`` otherwise;
    * the layer is also bounded by the open-layer room: B minus every layer still open (a put's
      premium until its maturity, a top-up/repay/deleverage for ``layer_hold_days`` after it
      was proposed); see :mod:`agent.policy.budget`;
    * ``option_spend_fraction`` of the layer goes to puts (all of it to protection when options
      are disabled) (split by the horizon weights), the rest
      is the collateral top-up's ceiling (the top-up itself is ``D * H* / LT - C``, capped by that
      ceiling). Unused top-up room is not moved to options (a layer never buys more puts because
      the position happened to be healthy). Default 0.4: the top-up, which directly protects the
      position, gets the larger part; the ladder's short rung still gets 16% of the layer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget_usd: Decimal = Field(Decimal("1000000"), gt=0)
    session_cap_fraction: Decimal = Field(Decimal("0.25"), gt=0, le=1)
    horizons: tuple[HorizonConfig, ...] = DEFAULT_HORIZONS
    option_spend_fraction: Decimal = Field(Decimal("0.4"), ge=0, le=1)
    option_underlying: str = "WETH"
    target_health_factor: Decimal = Field(Decimal("1.6"), gt=1)
    non_defi_first_fraction: Decimal = Field(Decimal("0.5"), ge=0, le=1)
    consensus_gate: bool = True
    gate_min_families: int = Field(2, ge=1, le=3)
    # "independent" (default, owner's decision): the gate needs >= gate_min_independent_families
    # families with a firing member *other than* the trigger's own signals (an independent
    # confirmation of the breakdown). "design": >= gate_min_families of the 3 families have a firing
    # member; both trigger paths already span two families (S1 on-chain + S2 macro; S3 market + S4
    # on-chain), so in that mode the gate never blocks a trigger.
    gate_mode: Literal["design", "independent"] = "independent"
    gate_min_independent_families: int = Field(1, ge=1, le=3)
    # Hysteresis: re-propose an action while its trigger persists only when the trigger's severity
    # (distance past threshold, in threshold units: S1 -12% vs -8% = 1.5) rose by this step ...
    hysteresis_step: float = Field(0.25, ge=0)
    # ... or when this long has passed since the last proposal of that action.
    cooldown_hours: float = Field(24.0, ge=0)
    layer_hold_days: int = Field(30, ge=0)  # how long a protection layer counts against B
    min_action_usd: Decimal = Field(Decimal("1.00"), ge=0)  # smaller actions are dropped
    # The S&P 500 side: an advisory put ticket (agent.policy.spx), same session cap.
    spx: SpxLayerConfig = SpxLayerConfig()

    @model_validator(mode="after")
    def _weights(self) -> PolicyConfig:
        check_ladder(self.horizons)
        return self

    @property
    def session_cap_usd(self) -> Decimal:
        return (self.budget_usd * self.session_cap_fraction).quantize(Decimal("0.01"))
