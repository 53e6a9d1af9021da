"""From the store's outbox to the journal: the proposal's durable step is one SQLite
transaction (its record and its spend, ``Store.commit_proposal``); the journal line is written
from it, and re-written at start-up or on the next tick when that failed (a read-only or full
journal). So a proposal is never lost, never journaled twice, and never out of the cap."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import structlog

from agent.core.errors import StoreError
from agent.sinks.journal import ProposalJournal
from agent.store.ledger import ProposalLedger

log = structlog.get_logger(__name__)

# The statuses whose spend the ledger counts: what could be executed (``Outcome.spends``) and
# the S&P 500 advisory ticket (its cost if every leg fills at its limit).
SPENDING = ("simulated", "planned", "advisory")
NOT_SENT = {"status": "not_sent", "detail": "interrupted before signing; not retried"}


def publish(ledger: ProposalLedger, journal: ProposalJournal, record: dict[str, Any]) -> bool:
    """Write the committed ``record``'s journal line and drop it from the outbox. A journal
    that cannot be written is logged, not raised: the record stays in the outbox (and in
    ``pending_records``) and is retried by ``flush_outbox``."""
    key = str(record["idempotency_key"])
    try:
        journal.append(record)
    except StoreError as exc:
        log.error(
            "journal.append_failed",
            idempotency_key=key,
            error=str(exc),
            note="proposal kept in the store's outbox; the line is retried every tick",
        )
        return False
    ledger.clear_outbox(key)
    return True


def with_live_outcome(ledger: ProposalLedger, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its live sends as the store knows them now (after reconciliation)."""
    if "live" not in record:
        return record
    sends = ledger.live_sends(str(record["idempotency_key"]))
    return record | {"live": [s.as_dict() for s in sends] or [NOT_SENT]}


def awaiting_live(ledger: ProposalLedger, record: dict[str, Any]) -> bool:
    """Whether ``record`` has a live send without an outcome yet: its journal line waits for
    what reconciliation decides (mined, reverted, replaced, dropped), so the journal never
    keeps an ``intent`` or ``sent`` that the store later settled."""
    return "live" in record and bool(
        ledger.live_sends(str(record["idempotency_key"]), open_only=True)
    )


def flush_outbox(ledger: ProposalLedger, journal: ProposalJournal) -> int:
    """Journal every committed proposal whose line is missing and ready (its outside sinks
    done, its live sends settled); returns lines written."""
    written = 0
    for record in ledger.outbox(delivered=True):
        key = str(record["idempotency_key"])
        if journal.has(key):
            ledger.clear_outbox(key)
            continue
        if awaiting_live(ledger, record):
            continue
        if not publish(ledger, journal, with_live_outcome(ledger, record)):
            break  # the journal is still unwritable; keep the order, retry next time
        written += 1
        log.warning("journal.recovered", idempotency_key=key, id=record.get("id"))
    return written


def reconcile_spends(ledger: ProposalLedger, records: list[dict[str, Any]]) -> int:
    """A journaled proposal that could be executed, or an advisory ticket, must be in the
    spend ledger (a store rebuilt from the journal, or journals written before the outbox
    existed). Returns rows added."""
    have = ledger.spend_keys()
    added = 0
    for r in records:
        sizing = r.get("sizing") or {}
        key = r.get("idempotency_key")
        if r.get("status") not in SPENDING or key in have:
            continue
        try:
            amount = Decimal(str(sizing["spend_usd"]))
            session = str(sizing["session_id"])
        except (KeyError, InvalidOperation):
            continue
        at = int(str((r.get("policy") or {}).get("at", 0)) or 0)
        if ledger.record_spend(session, str(key), amount, at):
            added += 1
            log.warning("spend.recovered", idempotency_key=key, amount_usd=str(amount))
    return added


def pending_records(ledger: ProposalLedger) -> list[dict[str, Any]]:
    """Committed proposals not yet journaled: part of the policy's memory like journaled ones."""
    return ledger.outbox()
