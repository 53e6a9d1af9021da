"""Policy inputs and outputs: immutable records, exact units.

Units: ``*_base`` = Aave oracle base currency units (``base_unit`` per USD, 1e8 on USD markets),
``*_bps`` = basis points, ``*_wad`` = 1e18 fixed point, ``*_usd`` = ``Decimal`` US dollars cut to
cents. Times are unix seconds (UTC).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

from agent.core.units import AAVE_BASE_UNIT_USD, WAD
from agent.signals.base import SignalResult

Priority = Literal["defi_first", "sp500_first", "none"]


@dataclass(frozen=True, slots=True)
class PositionSnapshot:
    """A position as Aave V3 ``getUserAccountData`` reports it (integers as on chain)."""

    account: str
    collateral_base: int
    debt_base: int
    liquidation_threshold_bps: int
    health_factor_wad: int
    base_unit: int = AAVE_BASE_UNIT_USD
    # With several positions: which one (named in the allocation and the records), the health
    # factor its protection restores (None: the policy's), and ``key_scope``, which keeps the
    # action keys of the same account on two chains apart: the daemon always passes the chain
    # id (``Position.key_scope``, one chain or several; old ``topup:<account>`` journal keys
    # are aliased when the memory is read); "" leaves it out (the backtest, pure-policy tests).
    name: str = ""
    chain: str = ""
    target_health_factor_wad: int | None = None
    key_scope: str = ""

    @property
    def label(self) -> str:
        return self.name or self.account


@dataclass(frozen=True, slots=True)
class SessionState:
    """The current session (a UTC calendar day, id ``YYYY-MM-DD``) and what was already proposed
    in it: ``spent_usd`` from the persistent spend ledger (survives restarts), and the option
    horizons already bought (each horizon at most once per session)."""

    session_id: str
    spent_usd: Decimal
    horizons_bought: frozenset[str] = frozenset()


def session_id_for(at_unix: int) -> str:
    """The session id for a time: its UTC calendar date."""
    return datetime.fromtimestamp(at_unix, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class MemoryEntry:
    """The last proposal of one action key: the trigger severity then, when, in which session."""

    severity: float
    at: int
    session_id: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class PolicyMemory:
    """Hysteresis/cooldown state: last proposal per action key (``topup:<account>``,
    ``option:<underlying>:<horizon>``). Pure data: ``decide`` takes it and returns an updated copy
    in ``Decision.memory``; the caller persists it (e.g. as JSON via ``as_dict``/``from_dict``)."""

    entries: Mapping[str, MemoryEntry] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, action_key: str) -> MemoryEntry | None:
        return self.entries.get(action_key)

    def updated(self, new: Mapping[str, MemoryEntry]) -> PolicyMemory:
        if not new:
            return self
        merged = dict(self.entries)
        merged.update(new)
        return PolicyMemory(MappingProxyType(merged))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {
            k: {
                "severity": e.severity,
                "at": e.at,
                "session_id": e.session_id,
                "idempotency_key": e.idempotency_key,
            }
            for k, e in sorted(self.entries.items())
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Mapping[str, Any]]) -> PolicyMemory:
        return cls(
            MappingProxyType(
                {
                    k: MemoryEntry(
                        float(v["severity"]),
                        int(v["at"]),
                        str(v["session_id"]),
                        str(v["idempotency_key"]),
                    )
                    for k, v in d.items()
                }
            )
        )


def idempotency_key(action: str, target: str, session_id: str, horizon: str | None = None) -> str:
    """Stable key over (action, target, session, horizon): the same proposal in the same session
    always gets the same key, whatever process or restart computes it."""
    material = "|".join((action, target.lower(), session_id, horizon or "-"))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class TopUpAction:
    """Add collateral so the health factor reaches ``target_health_factor_wad``.

    ``required_collateral_base`` = ``D * H* / LT - C`` (rounded up, base units); ``max_spend_usd``
    is what this layer allows for it (``min(required, top-up share of the layer)``); the planner
    further caps by wallet balance."""

    account: str
    target_health_factor_wad: int
    max_spend_usd: Decimal
    required_collateral_base: int
    required_collateral_usd: Decimal
    idempotency_key: str
    action_key: str
    kind: Literal["collateral_top_up"] = "collateral_top_up"
    chain: str = ""  # the position's chain and name (several positions); "" on one chain
    position: str = ""

    @property
    def spend_usd(self) -> Decimal:
        return self.max_spend_usd

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "account": self.account,
            **({"chain": self.chain, "position": self.position} if self.position else {}),
            "target_health_factor_wad": str(self.target_health_factor_wad),
            "target_health_factor": self.target_health_factor_wad / WAD,
            "max_spend_usd": str(self.max_spend_usd),
            "required_collateral_base": str(self.required_collateral_base),
            "required_collateral_usd": str(self.required_collateral_usd),
            "idempotency_key": self.idempotency_key,
        }


@dataclass(frozen=True, slots=True)
class OptionAction:
    """Buy puts on ``underlying``: strike ``otm_fraction`` below spot, expiry within
    ``[dte_min, dte_max]`` days, premium budget ``spend_usd``."""

    horizon: str
    underlying: str
    dte_min: int
    dte_max: int
    otm_fraction: Decimal
    spend_usd: Decimal
    idempotency_key: str
    action_key: str
    kind: Literal["option_put"] = "option_put"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "horizon": self.horizon,
            "underlying": self.underlying,
            "dte_min": self.dte_min,
            "dte_max": self.dte_max,
            "otm_fraction": str(self.otm_fraction),
            "spend_usd": str(self.spend_usd),
            "idempotency_key": self.idempotency_key,
        }


Action = TopUpAction | OptionAction


@dataclass(frozen=True, slots=True)
class Allocation:
    """One position's share of the layer's protection budget. Positions are served by
    severity, the lowest health factor (closest to liquidation) first; each gets what it
    needs to reach its target, as far as the budget left after the ones before it allows."""

    position: str
    chain: str
    account: str
    health_factor_wad: int
    required_usd: Decimal
    allocated_usd: Decimal
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "chain": self.chain,
            "account": self.account,
            "health_factor": self.health_factor_wad / WAD
            if self.health_factor_wad < 2**255
            else None,
            "required_usd": str(self.required_usd),
            "allocated_usd": str(self.allocated_usd),
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Suppressed:
    """An action the rule would have sized but did not propose, and why."""

    action_key: str
    reason: str


@dataclass(frozen=True)
class Decision:
    """Everything one evaluation decided, with the evidence to recompute it by hand."""

    at: int
    session_id: str
    trigger: bool
    trigger_paths: tuple[
        str, ...
    ]  # "S1+S2" (TVL drawdown with macro rising), "S3+S4" (on-chain stress)
    gate_enabled: bool
    gate_passed: bool
    families_firing: tuple[str, ...]  # of "onchain", "market", "macro"
    confirming_signals: tuple[str, ...]  # firing family members that are not the trigger's own
    acted: bool  # trigger and (gate passed or gate disabled)
    priority: Priority
    size_fraction: Decimal
    severity: float | None
    session_cap_usd: Decimal
    session_spent_before_usd: Decimal
    session_spent_after_usd: Decimal
    layer_usd: Decimal
    actions: tuple[Action, ...]
    suppressed: tuple[Suppressed, ...]
    notes: tuple[str, ...]
    signals: tuple[SignalResult, ...]
    signal_status: Mapping[str, str]  # per signal id, aggregated over subjects
    memory: PolicyMemory
    # the open-layer budget at the evaluation (B bounds every open layer together)
    budget_usd: Decimal = Decimal(0)
    open_layers_usd: Decimal = Decimal(0)
    budget_room_usd: Decimal = Decimal(0)  # B - open layers, before this decision
    budget_frees_next: str = ""  # what frees room next, and when
    options_enabled: bool = True
    allocations: tuple[Allocation, ...] = ()  # the protection budget across positions

    @property
    def session_remaining_usd(self) -> Decimal:
        return max(Decimal(0), self.session_cap_usd - self.session_spent_after_usd)

    @property
    def proposed_spend_usd(self) -> Decimal:
        return sum((a.spend_usd for a in self.actions), Decimal(0))

    def topups(self) -> tuple[TopUpAction, ...]:
        return tuple(a for a in self.actions if isinstance(a, TopUpAction))

    def options(self) -> tuple[OptionAction, ...]:
        return tuple(a for a in self.actions if isinstance(a, OptionAction))

    def with_memory(self, memory: PolicyMemory) -> Decision:
        return replace(self, memory=memory)

    def summary(self) -> dict[str, Any]:
        """Flat fields for one structured log event."""
        return {
            "at": self.at,
            "session_id": self.session_id,
            "trigger": self.trigger,
            "trigger_paths": list(self.trigger_paths),
            "gate_enabled": self.gate_enabled,
            "gate_passed": self.gate_passed,
            "families_firing": list(self.families_firing),
            "confirming_signals": list(self.confirming_signals),
            "acted": self.acted,
            "priority": self.priority,
            "size_fraction": str(self.size_fraction),
            "severity": self.severity,
            "session_cap_usd": str(self.session_cap_usd),
            "session_spent_before_usd": str(self.session_spent_before_usd),
            "session_spent_after_usd": str(self.session_spent_after_usd),
            "session_remaining_usd": str(self.session_remaining_usd),
            "layer_usd": str(self.layer_usd),
            "budget_usd": str(self.budget_usd),
            "open_layers_usd": str(self.open_layers_usd),
            "budget_room_usd": str(self.budget_room_usd),
            "budget_frees_next": self.budget_frees_next,
            "options_enabled": self.options_enabled,
            "allocation": [a.as_dict() for a in self.allocations],
            "proposed_spend_usd": str(self.proposed_spend_usd),
            "actions": [a.as_dict() for a in self.actions],
            "suppressed": [
                {"action_key": s.action_key, "reason": s.reason} for s in self.suppressed
            ],
            "notes": list(self.notes),
            "signal_status": dict(self.signal_status),
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary plus every signal result with its inputs."""
        return self.summary() | {"signals": [s.as_dict() for s in self.signals]}
