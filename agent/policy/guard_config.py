"""``[guard]`` and the per-position overrides (``[positions.guard]`` / ``[position.guard]``).

Health factors are ``Decimal`` in the file and wad ints in :class:`agent.policy.guard.GuardConfig`;
a bad combination (trigger above target, ...) is refused at load time, naming the section.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.core.units import WAD
from agent.policy.guard import STRESS_SIGNALS, GuardConfig


def _wad(x: Decimal) -> int:
    return int(x * WAD)


class GuardOverrides(BaseModel):
    """What one position sets differently from ``[guard]`` (unset: the section's value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool | None = None
    trigger_hf: Decimal | None = Field(None, gt=1)
    target_hf: Decimal | None = Field(None, gt=1)
    critical_hf: Decimal | None = Field(None, gt=1)
    stress_trigger_hf: Decimal | None = Field(None, gt=1)
    budget_usd: Decimal | None = Field(None, ge=0)


class GuardSection(BaseModel):
    """The liquidation guard of every position (see :mod:`agent.policy.guard`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    trigger_hf: Decimal = Field(Decimal("1.30"), gt=1)
    target_hf: Decimal = Field(Decimal("1.60"), gt=1)
    critical_hf: Decimal = Field(Decimal("1.10"), gt=1)
    # the guard's own money per session (UTC day) for top-ups and repays; a deleverage sells
    # the position's collateral and spends none of it
    budget_usd: Decimal = Field(Decimal(100_000), ge=0)
    step_hf: Decimal = Field(Decimal("0.05"), gt=0)  # while pending: again only this far lower
    rearm_margin_hf: Decimal = Field(Decimal("0.05"), ge=0)  # re-armed above trigger + this
    repropose_after_hours: Decimal | None = Field(Decimal(24), gt=0)  # a pending one lapses
    # the trigger while the market-stress signals fire; "none" or unset in env: never raised
    stress_trigger_hf: Decimal | None = Field(Decimal("1.45"), gt=1)
    stress_signals: tuple[str, ...] = STRESS_SIGNALS
    stress_min_firing: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _coherent(self) -> GuardSection:
        self.record()  # raises ValueError naming what is wrong
        return self

    def record(self, o: GuardOverrides | None = None) -> GuardConfig:
        """The pure guard's configuration, with one position's overrides applied."""
        o = o or GuardOverrides()

        def pick(name: str) -> Decimal:
            v = getattr(o, name)
            return Decimal(getattr(self, name) if v is None else v)

        st = self.stress_trigger_hf if o.stress_trigger_hf is None else o.stress_trigger_hf
        trigger = pick("trigger_hf")
        if st is not None and st < trigger:
            # a position whose own trigger is above the section's stressed one: stress does
            # not lower it
            st = trigger
        hours = self.repropose_after_hours
        return GuardConfig(
            trigger_hf_wad=_wad(trigger),
            target_hf_wad=_wad(pick("target_hf")),
            critical_hf_wad=_wad(pick("critical_hf")),
            budget_usd=pick("budget_usd"),
            step_wad=_wad(self.step_hf),
            rearm_margin_wad=_wad(self.rearm_margin_hf),
            repropose_after_s=None if hours is None else int(hours * 3600),
            stress_trigger_hf_wad=None if st is None else _wad(st),
            stress_signals=self.stress_signals,
            stress_min_firing=self.stress_min_firing,
            enabled=self.enabled if o.enabled is None else o.enabled,
        )
