"""The proposal ledger: what the daemon owes the outside world, apart from the observations.

* ``outbox``: a committed proposal awaiting its outside sinks (``delivered``) and its journal
  line; ``commit_proposal`` writes it and its spend in ONE transaction.
* ``spends``: the session spend ledger the budget cap reads (Decimal as text, exact).
* ``live_sends``: each signed transaction, recorded as an intent before it is broadcast and its
  outcome after (``agent/sinks/live.py``).

It lives in the same SQLite file as the observations (``agent.store.db.Database``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from agent.core.errors import StoreError
from agent.store.db import DatabaseView

# Live-send states that still need an answer from the chain.
OPEN_LIVE_STATUSES = ("intent", "sent", "pending")


@dataclass(frozen=True)
class LiveSend:
    """One signed transaction of a proposal: recorded as ``intent`` before it is broadcast."""

    tx_hash: str
    idempotency_key: str
    account: str
    nonce: int
    chain_id: int
    raw_tx: str
    status: str
    detail: str | None
    created_at: int
    updated_at: int

    @property
    def open(self) -> bool:
        return self.status in OPEN_LIVE_STATUSES

    def as_dict(self) -> dict[str, Any]:
        """The journal's view (the raw transaction stays in the store)."""
        out: dict[str, Any] = {
            "tx_hash": self.tx_hash,
            "from": self.account,
            "nonce": self.nonce,
            "chain_id": self.chain_id,
            "status": self.status,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


class ProposalLedger(DatabaseView):
    """The outbox, the spends and the live sends of one database (see the module doc)."""

    def record_spend(
        self, session_id: str, idempotency_key: str, amount_usd: Decimal, at: int
    ) -> bool:
        """Record a proposed spend once. Returns False if ``idempotency_key`` was already recorded
        (the first amount stands), so replaying a proposal after a restart never double-counts."""
        amount = self._amount(amount_usd)
        with self._tx() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO spends (idempotency_key, session_id, amount_usd, at) "
                "VALUES (?, ?, ?, ?)",
                (idempotency_key, session_id, str(amount), int(at)),
            )
            return cur.rowcount == 1

    def commit_proposal(
        self,
        record: dict[str, Any],
        spend: tuple[str, Decimal, int] | None,
        *,
        delivered: bool = True,
    ) -> bool:
        """The proposal's durable step: its record into the outbox and its spend
        ``(session_id, amount_usd, at)`` into the ledger, in ONE transaction, so a store error
        can never leave a journaled proposal out of the session cap. ``delivered=False``: the
        outside sinks (Builder file, Safe Transaction Service) are still to run, after this
        commit. The journal line is written from the outbox afterwards (and again at start-up
        if that failed). Returns False if the key is already in the outbox (nothing written)."""
        key = str(record["idempotency_key"])
        amount = None if spend is None else self._amount(spend[1])
        with self._tx() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO outbox (idempotency_key, record, created_at, delivered) "
                "VALUES (?, ?, ?, ?)",
                (key, json.dumps(record, default=str), int(time.time()), int(delivered)),
            )
            if cur.rowcount != 1:
                return False
            if spend is not None:
                c.execute(
                    "INSERT OR IGNORE INTO spends (idempotency_key, session_id, amount_usd, at) "
                    "VALUES (?, ?, ?, ?)",
                    (key, spend[0], str(amount), int(spend[2])),
                )
            return True

    def update_outbox(self, record: dict[str, Any], *, delivered: bool | None = None) -> None:
        """Replace a committed proposal's record (what a sink answered); ``delivered``: set
        whether its outside sinks are done, in the same write."""
        with self._tx() as c:
            c.execute(
                "UPDATE outbox SET record = ?, delivered = COALESCE(?, delivered) "
                "WHERE idempotency_key = ?",
                (
                    json.dumps(record, default=str),
                    None if delivered is None else int(delivered),
                    str(record["idempotency_key"]),
                ),
            )

    def outbox(self, *, delivered: bool | None = None) -> list[dict[str, Any]]:
        """Proposals committed but not yet in the journal, oldest first; ``delivered``: only
        those whose outside sinks are done (True) or still to run (False)."""
        sql = "SELECT record FROM outbox"
        args: tuple[int, ...] = ()
        if delivered is not None:
            sql, args = sql + " WHERE delivered = ?", (int(delivered),)
        with self._read() as c:
            rows = c.execute(sql + " ORDER BY created_at, rowid", args).fetchall()
        return [json.loads(r[0]) for r in rows]

    def in_outbox(self, idempotency_key: str) -> bool:
        with self._read() as c:
            return (
                c.execute(
                    "SELECT 1 FROM outbox WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                is not None
            )

    def clear_outbox(self, idempotency_key: str) -> None:
        """The proposal's journal line is written: drop it from the outbox."""
        with self._tx() as c:
            c.execute("DELETE FROM outbox WHERE idempotency_key = ?", (idempotency_key,))

    def retract_proposal(self, idempotency_key: str) -> None:
        """Undo ``commit_proposal`` (outbox row and spend) for a proposal nothing was sent for."""
        with self._tx() as c:
            c.execute("DELETE FROM outbox WHERE idempotency_key = ?", (idempotency_key,))
            c.execute("DELETE FROM spends WHERE idempotency_key = ?", (idempotency_key,))

    def spend_keys(self) -> set[str]:
        with self._read() as c:
            return {r[0] for r in c.execute("SELECT idempotency_key FROM spends")}

    def spend_count(self) -> int:
        with self._read() as c:
            return int(c.execute("SELECT COUNT(*) FROM spends").fetchone()[0])

    # -- live sends ----------------------------------------------------------------------------

    def record_live_intent(
        self,
        *,
        tx_hash: str,
        idempotency_key: str,
        account: str,
        nonce: int,
        chain_id: int,
        raw_tx: str,
    ) -> None:
        """Durably note a signed transaction BEFORE it is broadcast: after a crash, start-up
        finds it by hash and nonce instead of signing a second one."""
        now = int(time.time())
        with self._tx() as c:
            c.execute(
                "INSERT INTO live_sends (tx_hash, idempotency_key, account, nonce, chain_id, "
                "raw_tx, status, detail, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, 'intent', NULL, ?, ?)",
                (tx_hash, idempotency_key, account, int(nonce), int(chain_id), raw_tx, now, now),
            )

    def set_live_status(self, tx_hash: str, status: str, detail: str | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE live_sends SET status = ?, detail = ?, updated_at = ? WHERE tx_hash = ?",
                (status, detail, int(time.time()), tx_hash),
            )

    def live_sends(
        self, idempotency_key: str | None = None, *, open_only: bool = False
    ) -> list[LiveSend]:
        sql = (
            "SELECT tx_hash, idempotency_key, account, nonce, chain_id, raw_tx, status, detail, "
            "created_at, updated_at FROM live_sends"
        )
        clauses: list[str] = []
        args: list[object] = []
        if idempotency_key is not None:
            clauses.append("idempotency_key = ?")
            args.append(idempotency_key)
        if open_only:
            clauses.append(f"status IN ({','.join('?' * len(OPEN_LIVE_STATUSES))})")
            args += OPEN_LIVE_STATUSES
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        with self._read() as c:
            rows = c.execute(sql + " ORDER BY created_at, nonce", args).fetchall()
        return [LiveSend(*r) for r in rows]

    def _amount(self, amount_usd: Decimal) -> Decimal:
        try:
            amount = Decimal(amount_usd)
        except (InvalidOperation, TypeError, ValueError) as e:
            raise StoreError(f"{self.path}: bad spend amount {amount_usd!r}") from e
        if not amount.is_finite() or amount < 0:
            raise StoreError(f"{self.path}: spend amount must be finite and >= 0, got {amount}")
        return amount

    def session_spent_usd(self, session_id: str) -> Decimal:
        with self._read() as c:
            rows = c.execute(
                "SELECT amount_usd FROM spends WHERE session_id = ?", (session_id,)
            ).fetchall()
        # Summed in Python as Decimal: SQLite's SUM would go through float.
        return sum((Decimal(r[0]) for r in rows), Decimal(0))
