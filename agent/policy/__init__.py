"""Policy: signal results -> decision (layer rule, consensus gate, beta priority, sizing,
hysteresis). Pure; see :mod:`agent.policy.decide` for the rules and units."""

from agent.policy.budget import BudgetState, OpenLayer, budget_state, protection_layer, put_layer
from agent.policy.config import PolicyConfig
from agent.policy.decide import (
    FAMILIES,
    LayerTrigger,
    decide,
    health_factor_wad,
    layer_trigger,
    required_topup_base,
)
from agent.policy.ladder import HorizonConfig
from agent.policy.models import (
    Action,
    Allocation,
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
    "Allocation",
    "BudgetState",
    "Decision",
    "HorizonConfig",
    "LayerTrigger",
    "MemoryEntry",
    "OpenLayer",
    "OptionAction",
    "PolicyConfig",
    "PolicyMemory",
    "PositionSnapshot",
    "SessionState",
    "Suppressed",
    "TopUpAction",
    "budget_state",
    "decide",
    "health_factor_wad",
    "idempotency_key",
    "layer_trigger",
    "protection_layer",
    "put_layer",
    "required_topup_base",
    "session_id_for",
]
