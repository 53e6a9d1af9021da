"""The proposal record every sink receives: one typed model, validated before anything is
written, so the journal, the log event and the Safe files all carry the same shape."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

# "advisory": a ticket a person places with their broker (the S&P 500 side); nothing to sign.
Status = Literal["simulated", "simulation_failed", "planned", "planning_failed", "advisory"]
ActionKind = Literal[
    "collateral_top_up", "repay_debt", "deleverage", "option_put", "spx_put_ticket"
]


class Proposal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    idempotency_key: str
    created_at: str  # ISO 8601, chain time of the tick
    chain: str
    chain_id: int
    block_number: int
    account: str
    position: str | None = None  # the configured position's name (several positions)
    action: ActionKind
    status: Status
    explanation: list[str]  # one line per fact, enough to recompute the decision by hand
    evidence: dict[str, Any]  # trigger paths, gate, priority, every signal with its inputs
    policy: dict[str, Any]  # hysteresis memory entry (action key, severity, session)
    transactions: list[dict[str, Any]]  # to, value, data, decoded call, human line
    sizing: dict[str, Any] | None = None  # spend, session cap and what remains of it
    simulation: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None  # every protection alternative, cost, why it lost
    deleverage: dict[str, Any] | None = None  # the swap: quote, minimum out, price, impact
    option: dict[str, Any] | None = None  # pool, strike, maturity, size, premium and limit
    safe_tx: dict[str, Any] | None = None  # the Safe transaction the owners sign
    safe_tx_builder_file: str | None = None
    safe_service: dict[str, Any] | None = None
    live: list[dict[str, Any]] | None = None
    # sent at once by the guardian or the Roles member (sinks/autonomous.py): how, why, the
    # transactions, HF before -> after; or why it stayed a proposal
    autonomous: dict[str, Any] | None = None
    error: str | None = None
    warnings: list[str] | None = None  # data problems of the tick (a stale oracle feed)
    ticket: dict[str, Any] | None = None  # advisory S&P 500 put ticket: legs, estimate, limit

    def record(self) -> dict[str, Any]:
        """The JSON-ready form the journal stores and the log event carries."""
        return self.model_dump(mode="json", exclude_none=True)
