"""SQLite observation store and session-spend ledger.

Durability choices:

* WAL journal: readers (signals, CLI) never block the writer, and a commit is one append.
* ``synchronous=FULL`` by default: the spend ledger guards the per-session budget cap, so a
  recorded spend must survive a power loss, not only a process crash (NORMAL in WAL mode can lose
  the last commits on OS crash). Writes are a few batched transactions per tick, so the extra
  fsync is cheap. Pass ``synchronous="NORMAL"`` for bulk backfills where that trade-off is fine.

Identity and revisions (no look-ahead):

* An observation's identity is ``(key, ts, source, available_at)`` where
  ``available_at = known_at if known_at is not None else ts``. Upserting the same observation twice
  is one row; the same identity with a different value overwrites the value (a correction of a
  live point, e.g. a re-fetched candle).
* A macro revision (same key/ts/source, later ``known_at``) is a *new row*: every vintage is kept.
* ``series(key, known_by=T)`` returns, per ``ts``, the value from the row with the greatest
  ``available_at <= T`` (the latest vintage known at T; ties → the row ingested last). Without
  ``known_by`` the latest vintage overall is used. So a backtest evaluating at T never sees a print
  or a revision published after T.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pandas as pd

from agent.core.errors import StoreError
from agent.core.models import Observation

# Ordered migrations; index i migrates user_version i -> i+1. Never edit a shipped entry, append.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE observations (
        id           INTEGER PRIMARY KEY,
        key          TEXT    NOT NULL,
        ts           INTEGER NOT NULL,
        source       TEXT    NOT NULL,
        available_at INTEGER NOT NULL,   -- known_at if given, else ts (NULLs can't be unique)
        known_at     INTEGER,            -- as given, to round-trip None
        value        REAL    NOT NULL,
        unit         TEXT    NOT NULL,
        ingested_at  INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX observations_identity ON observations (key, ts, source, available_at);
    CREATE TABLE spends (
        idempotency_key TEXT PRIMARY KEY,
        session_id      TEXT    NOT NULL,
        amount_usd      TEXT    NOT NULL,  -- Decimal as text: exact, no float rounding
        at              INTEGER NOT NULL
    );
    CREATE INDEX spends_session ON spends (session_id);
    """,
    # 1 -> 2: backfill checkpoints, one row per source task (``fred:CPIAUCSL``, ``hyperliquid:ETH``).
    """
    CREATE TABLE checkpoints (
        name       TEXT    PRIMARY KEY,
        since      INTEGER NOT NULL,          -- the backfill's start; another start resets the task
        cursor     TEXT,                      -- JSON: where the next step starts (None = from since)
        done       INTEGER NOT NULL DEFAULT 0,
        steps      INTEGER NOT NULL DEFAULT 0,
        rows       INTEGER NOT NULL DEFAULT 0,  -- observations written by this task so far
        updated_at INTEGER NOT NULL
    );
    """,
    # 2 -> 3: the proposal outbox (a proposal and its spend commit together, before any side
    # effect the journal line depends on) and live sends (the signed transaction is recorded
    # before it is broadcast, its outcome after; see ``agent/sinks/live.py``).
    """
    CREATE TABLE outbox (
        idempotency_key TEXT    PRIMARY KEY,
        record          TEXT    NOT NULL,  -- the proposal record (JSON) awaiting its journal line
        created_at      INTEGER NOT NULL
    );
    CREATE TABLE live_sends (
        tx_hash         TEXT    PRIMARY KEY,
        idempotency_key TEXT    NOT NULL,
        account         TEXT    NOT NULL,
        nonce           INTEGER NOT NULL,
        chain_id        INTEGER NOT NULL,
        raw_tx          TEXT    NOT NULL,
        status          TEXT    NOT NULL,  -- intent, sent, pending, mined, reverted, dropped, ...
        detail          TEXT,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
    );
    CREATE INDEX live_sends_key ON live_sends (idempotency_key);
    """,
    # 3 -> 4: whether a committed proposal went to its outside sinks (the Builder file, the Safe
    # Transaction Service). They run after the commit, so a crash or a failed store write after
    # them never makes the proposal planned again; rows from before were delivered first.
    """
    ALTER TABLE outbox ADD COLUMN delivered INTEGER NOT NULL DEFAULT 1;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

Synchronous = Literal["FULL", "NORMAL"]


@dataclass(frozen=True)
class Checkpoint:
    """Where a backfill task stopped. ``cursor`` is the task's own JSON value (a page offset, a
    timestamp, a block); ``None`` means "start at ``since``"."""

    name: str
    since: int
    cursor: Any
    done: bool
    steps: int
    rows: int
    updated_at: int


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


# Insert or update one observation, unless it is a new vintage that repeats the latest earlier
# vintage of its (key, ts, source): that carries no news (a source without vintages, like BLS,
# re-stamps known_at with every fetch). Rows without a known_at have a single vintage and skip the
# check. One statement, so executemany stays in SQLite.
_UPSERT = """
INSERT INTO observations (key, ts, source, available_at, known_at, value, unit, ingested_at)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
WHERE ?5 IS NULL OR NOT EXISTS (
    SELECT 1 FROM observations AS prev
    WHERE prev.key = ?1 AND prev.ts = ?2 AND prev.source = ?3 AND prev.value = ?6
      AND prev.unit = ?7 AND prev.available_at = (
        SELECT MAX(available_at) FROM observations
        WHERE key = ?1 AND ts = ?2 AND source = ?3 AND available_at < ?4
    )
)
ON CONFLICT (key, ts, source, available_at) DO UPDATE
SET value = excluded.value, unit = excluded.unit, ingested_at = excluded.ingested_at
WHERE value IS NOT excluded.value OR unit IS NOT excluded.unit
"""


class Store:
    """Thread-safe (one connection behind a lock); calls are short, so the async runner may call
    them directly or through ``asyncio.to_thread``."""

    def __init__(self, path: str | Path, *, synchronous: Synchronous = "FULL") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so each batch is one transaction.
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (sqlite3.Error, OSError, StoreError) as e:
            conn = getattr(self, "_conn", None)
            if conn is not None:
                conn.close()
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"{self.path}: cannot open store: {e}") from e

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: {e}") from e

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: {e}") from e

    def schema_version(self) -> int:
        with self._read() as c:
            return int(c.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {current} is newer than this agent ({SCHEMA_VERSION})"
            )
        for version in range(current, SCHEMA_VERSION):
            # executescript commits implicitly, so wrap the DDL and the version bump explicitly.
            self._conn.executescript(
                f"BEGIN IMMEDIATE;\n{MIGRATIONS[version]}\nPRAGMA user_version = {version + 1};\nCOMMIT;"
            )

    def integrity_check(self) -> str:
        with self._read() as c:
            return str(c.execute("PRAGMA integrity_check").fetchone()[0])

    # -- observations ----------------------------------------------------------------------

    def upsert(self, observations: Iterable[Observation]) -> int:
        """Insert observations in one transaction; returns rows inserted or changed. A vintage
        that repeats the latest earlier vintage of its (key, ts, source) is not stored again."""
        rows = [self._row(o) for o in observations]
        if not rows:
            return 0
        with self._tx() as c:
            before = c.total_changes
            c.executemany(_UPSERT, rows)
            return c.total_changes - before

    def _row(self, o: Observation) -> tuple[object, ...]:
        if not isinstance(o, Observation):
            raise StoreError(f"{self.path}: not an Observation: {o!r}")
        now = int(time.time())
        return (o.key, o.ts, o.source, o.available_at, o.known_at, o.value, o.unit, now)

    def _where(
        self,
        key: str,
        since: int | None,
        until: int | None,
        known_by: int | None,
        source: str | None,
    ) -> tuple[str, list[object]]:
        clauses = ["key = ?"]
        args: list[object] = [key]
        if since is not None:
            clauses.append("ts >= ?")
            args.append(int(since))
        if until is not None:
            clauses.append("ts <= ?")
            args.append(int(until))
        if known_by is not None:
            clauses.append("available_at <= ?")
            args.append(int(known_by))
        if source is not None:
            # Prefix match ("csv:" or "hyperliquid:"); substr avoids LIKE wildcard escaping.
            clauses.append("substr(source, 1, ?) = ?")
            args += [len(source), source]
        return " AND ".join(clauses), args

    def series(
        self,
        key: str,
        since: int | None = None,
        until: int | None = None,
        known_by: int | None = None,
        *,
        source: str | None = None,
    ) -> pd.Series:
        """One value per ts (latest vintage with ``available_at <= known_by``), sorted, UTC index."""
        where, args = self._where(key, since, until, known_by, source)
        sql = f"""
            SELECT ts, value FROM (
                SELECT ts, value, ROW_NUMBER() OVER (
                    PARTITION BY ts ORDER BY available_at DESC, ingested_at DESC, id DESC
                ) AS rn
                FROM observations WHERE {where}
            ) WHERE rn = 1 ORDER BY ts
        """
        with self._read() as c:
            rows = c.execute(sql, args).fetchall()
        index = pd.DatetimeIndex(pd.to_datetime([r[0] for r in rows], unit="s", utc=True))
        return pd.Series([float(r[1]) for r in rows], index=index, name=key, dtype="float64")

    def observations(
        self,
        key: str,
        since: int | None = None,
        until: int | None = None,
        known_by: int | None = None,
        *,
        source: str | None = None,
    ) -> list[Observation]:
        """Every stored row (all sources and vintages), ordered by ts then availability."""
        where, args = self._where(key, since, until, known_by, source)
        sql = (
            "SELECT key, ts, value, unit, source, known_at FROM observations "
            f"WHERE {where} ORDER BY ts, available_at, id"
        )
        with self._read() as c:
            rows = c.execute(sql, args).fetchall()
        return [_row_to_obs(r) for r in rows]

    def latest(self, key: str, known_by: int | None = None) -> Observation | None:
        where, args = self._where(key, None, None, known_by, None)
        sql = (
            "SELECT key, ts, value, unit, source, known_at FROM observations "
            f"WHERE {where} ORDER BY ts DESC, available_at DESC, ingested_at DESC, id DESC LIMIT 1"
        )
        with self._read() as c:
            row = c.execute(sql, args).fetchone()
        return None if row is None else _row_to_obs(row)

    def keys(self) -> list[str]:
        with self._read() as c:
            return [r[0] for r in c.execute("SELECT DISTINCT key FROM observations ORDER BY key")]

    def count(self, key: str | None = None) -> int:
        with self._read() as c:
            if key is None:
                return int(c.execute("SELECT COUNT(*) FROM observations").fetchone()[0])
            return int(
                c.execute("SELECT COUNT(*) FROM observations WHERE key = ?", (key,)).fetchone()[0]
            )

    # -- backfill checkpoints -----------------------------------------------------------------

    def checkpoint(self, name: str) -> Checkpoint | None:
        with self._read() as c:
            row = c.execute(
                "SELECT name, since, cursor, done, steps, rows, updated_at FROM checkpoints "
                "WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else _row_to_checkpoint(row)

    def checkpoints(self, prefix: str = "") -> list[Checkpoint]:
        with self._read() as c:
            rows = c.execute(
                "SELECT name, since, cursor, done, steps, rows, updated_at FROM checkpoints "
                "WHERE substr(name, 1, ?) = ? ORDER BY name",
                (len(prefix), prefix),
            ).fetchall()
        return [_row_to_checkpoint(r) for r in rows]

    def advance(
        self,
        name: str,
        *,
        since: int,
        cursor: Any,
        done: bool,
        observations: Iterable[Observation] = (),
    ) -> int:
        """Store one backfill step: its observations *and* the task's new checkpoint in one
        transaction, so an interruption keeps both or neither. Returns rows inserted or
        changed. ``cursor`` must be JSON-serialisable."""
        try:
            cursor_json = json.dumps(cursor, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise StoreError(f"{self.path}: checkpoint {name}: cursor is not JSON: {e}") from e
        rows = [self._row(o) for o in observations]
        now = int(time.time())
        with self._tx() as c:
            before = c.total_changes
            if rows:
                c.executemany(_UPSERT, rows)
            changed = c.total_changes - before
            c.execute(
                """
                INSERT INTO checkpoints (name, since, cursor, done, steps, rows, updated_at)
                VALUES (?, ?, ?, ?, 1, ?, ?)
                ON CONFLICT (name) DO UPDATE SET
                    cursor = excluded.cursor, done = excluded.done, since = excluded.since,
                    steps = checkpoints.steps + 1, rows = checkpoints.rows + excluded.rows,
                    updated_at = excluded.updated_at
                """,
                (name, int(since), cursor_json, int(done), len(rows), now),
            )
            return changed

    def drop_checkpoint(self, name: str) -> bool:
        """Forget one task's checkpoint (its next backfill starts from ``since``)."""
        with self._tx() as c:
            return c.execute("DELETE FROM checkpoints WHERE name = ?", (name,)).rowcount == 1

    def reset_checkpoints(self, prefix: str = "") -> int:
        """Forget checkpoints whose name starts with ``prefix`` (all by default)."""
        with self._tx() as c:
            cur = c.execute(
                "DELETE FROM checkpoints WHERE substr(name, 1, ?) = ?", (len(prefix), prefix)
            )
            return int(cur.rowcount)

    # -- session spend ledger ----------------------------------------------------------------

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


def _row_to_obs(row: tuple[str, int, float, str, str, int | None]) -> Observation:
    key, ts, value, unit, source, known_at = row
    v = float(value)
    if not math.isfinite(v):  # pragma: no cover - upsert only accepts finite Observations
        raise StoreError(f"{key}@{ts}: non-finite value in store")
    return Observation(key=key, ts=int(ts), value=v, unit=unit, source=source, known_at=known_at)


def _row_to_checkpoint(row: tuple[str, int, str | None, int, int, int, int]) -> Checkpoint:
    name, since, cursor, done, steps, rows, updated_at = row
    return Checkpoint(
        name=name,
        since=int(since),
        cursor=None if cursor is None else json.loads(cursor),
        done=bool(done),
        steps=int(steps),
        rows=int(rows),
        updated_at=int(updated_at),
    )
