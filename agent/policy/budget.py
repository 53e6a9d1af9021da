"""The open-layer budget: B bounds every open layer together (DESIGN.md section 2, sizing).

An *open layer* is what a past proposal still commits of the defined-risk capital B: a put's
premium until the put's maturity, a top-up, repay or deleverage for ``layer_hold_days`` after it
was proposed. The room for a new layer is ``B - sum(open layers)``. The session cap (25% of B per
UTC day) still applies on top of it.

Pure: the caller (the daemon's evaluation from the journal, the backtest from its own decisions)
builds the :class:`OpenLayer` records; :func:`budget_state` only adds them up at ``at``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

DAY_S = 86_400

LayerKind = Literal["protection", "put"]


@dataclass(frozen=True, slots=True)
class OpenLayer:
    """One past proposal's claim on B: ``spend_usd`` from ``opened_at`` until ``until``
    (exclusive; unix seconds). ``key`` names it for the reader (its idempotency key)."""

    key: str
    kind: LayerKind
    spend_usd: Decimal
    opened_at: int
    until: int

    def open_at(self, at: int) -> bool:
        return self.opened_at <= at < self.until


def protection_layer(key: str, spend_usd: Decimal, proposed_at: int, hold_days: int) -> OpenLayer:
    """A top-up, repay or deleverage: open for ``hold_days`` after it was proposed."""
    return OpenLayer(key, "protection", spend_usd, proposed_at, proposed_at + hold_days * DAY_S)


def put_layer(key: str, premium_usd: Decimal, proposed_at: int, maturity: int) -> OpenLayer:
    """A put: its premium is open until the put's maturity."""
    return OpenLayer(key, "put", premium_usd, proposed_at, maturity)


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class BudgetState:
    """B, what is open at ``at``, the room left, and the next layer to expire (what frees room
    next, and when)."""

    budget_usd: Decimal
    open_usd: Decimal
    open_count: int
    next_release_at: int | None
    next_release_usd: Decimal
    next_release_kind: LayerKind | None

    @property
    def room_usd(self) -> Decimal:
        return max(Decimal(0), self.budget_usd - self.open_usd)

    def frees_next(self) -> str:
        if self.next_release_at is None:
            return "no open layer expires"
        return (
            f"${self.next_release_usd:,} ({self.next_release_kind}) frees on "
            f"{_iso(self.next_release_at)}"
        )

    def describe(self) -> str:
        return (
            f"open-layer budget B ${self.budget_usd:,}: {self.open_count} open layer(s) "
            f"${self.open_usd:,}, room ${self.room_usd:,}"
        )


def budget_state(layers: Iterable[OpenLayer], budget_usd: Decimal, at: int) -> BudgetState:
    """Sum the layers open at ``at``; the next release is the earliest ``until`` among them
    (layers expiring at the same second are released together)."""
    live = [la for la in layers if la.open_at(at)]
    open_usd = sum((la.spend_usd for la in live), Decimal(0))
    nxt = min((la.until for la in live), default=None)
    freed = sum((la.spend_usd for la in live if la.until == nxt), Decimal(0))
    kinds = {la.kind for la in live if la.until == nxt}
    kind: LayerKind | None = None
    if kinds:
        kind = "put" if kinds == {"put"} else "protection"
    return BudgetState(budget_usd, open_usd, len(live), nxt, freed, kind)
