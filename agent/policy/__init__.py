"""Policy: signal results -> decision (layer rule, consensus gate, beta priority, sizing,
hysteresis). Pure; see :mod:`agent.policy.decide` for the rules and units."""

from agent.policy.config import HorizonConfig, PolicyConfig
from agent.policy.decide import FAMILIES, decide, health_factor_wad, required_topup_base
from agent.policy.models import (
    Action,
    Decision,
    MemoryEntry,
    OptionAction,
    PolicyMemory,
    PositionSnapshot,
    SessionState,
    Suppressed,
    TopUpAction,
    idempotency_key,
    session_id_for,
)

__all__ = [
    "FAMILIES",
    "Action",
    "Decision",
    "HorizonConfig",
    "MemoryEntry",
    "OptionAction",
    "PolicyConfig",
    "PolicyMemory",
    "PositionSnapshot",
    "SessionState",
    "Suppressed",
    "TopUpAction",
    "decide",
    "health_factor_wad",
    "idempotency_key",
    "required_topup_base",
    "session_id_for",
]
