"""The proposal record every sink receives: one typed model, validated before anything is
written, so the journal, the log event and the Safe files all carry the same shape."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Status = Literal["simulated", "simulation_failed", "planned", "planning_failed"]
ActionKind = Literal["collateral_top_up", "repay_debt", "option_put"]


class Proposal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    idempotency_key: str
    created_at: str  # ISO 8601, chain time of the tick
    chain: str
    chain_id: int
    block_number: int
    account: str
    action: ActionKind
    status: Status
    explanation: list[str]  # one line per fact, enough to recompute the decision by hand
    evidence: dict[str, Any]  # trigger paths, gate, priority, every signal with its inputs
    policy: dict[str, Any]  # hysteresis memory entry (action key, severity, session)
    transactions: list[dict[str, Any]]  # to, value, data, decoded call, human line
    sizing: dict[str, Any] | None = None  # spend, session cap and what remains of it
    simulation: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None  # top-up vs repay costs
    option: dict[str, Any] | None = None  # pool, strike, maturity, size, premium and limit
    safe_tx: dict[str, Any] | None = None  # the Safe transaction the owners sign
    safe_tx_builder_file: str | None = None
    safe_service: dict[str, Any] | None = None
    live: list[dict[str, Any]] | None = None
    error: str | None = None
    warnings: list[str] | None = None  # data problems of the tick (a stale oracle feed)

    def record(self) -> dict[str, Any]:
        """The JSON-ready form the journal stores and the log event carries."""
        return self.model_dump(mode="json", exclude_none=True)
