"""One SQLite file behind one connection: WAL, ``synchronous``, the schema's migrations. The
observation store (``agent.store.sqlite.Store``) and the proposal ledger
(``agent.store.ledger.ProposalLedger``) are two views of one ``Database``: one file holds both
(stores written before the split open as they are), and the ledger commits a proposal and its
spend in one transaction.

Durability choices:

* WAL journal: readers (signals, CLI) never block the writer, and a commit is one append.
* ``synchronous=FULL`` by default: the spend ledger guards the per-session budget cap, so a
  recorded spend must survive a power loss, not only a process crash (NORMAL in WAL mode can lose
  the last commits on OS crash). Writes are a few batched transactions per tick, so the extra
  fsync is cheap. Pass ``synchronous="NORMAL"`` for bulk backfills where that trade-off is fine.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from agent.core.errors import StoreError

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


class _ClosedOnExit:
    """``with x:`` closes ``x`` when the block ends."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Database(_ClosedOnExit):
    """Thread-safe (one connection behind a lock); calls are short, so the async runner may call
    them directly or through ``asyncio.to_thread``."""

    def __init__(self, path: str | Path, *, synchronous: Synchronous = "FULL") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._closed = False
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

    def close(self) -> None:
        """Close the connection (again: nothing; both views may close their database)."""
        with self._lock:
            if not self._closed:
                self._conn.close()
                self._closed = True

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): committed when the block ends, rolled
        back when it raises; SQLite errors become ``StoreError`` naming the file."""
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
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: {e}") from e

    def schema_version(self) -> int:
        with self.read() as c:
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
        with self.read() as c:
            return str(c.execute("PRAGMA integrity_check").fetchone()[0])


class DatabaseView(_ClosedOnExit):
    """A view of one :class:`Database` (the observation store, the proposal ledger):
    ``View(path)`` opens its own database, ``View(db)`` shares one; closing a view closes it."""

    def __init__(self, db: Database | str | Path, *, synchronous: Synchronous = "FULL") -> None:
        self.db = db if isinstance(db, Database) else Database(db, synchronous=synchronous)
        self.path = self.db.path
        self._tx = self.db.tx
        self._read = self.db.read

    def close(self) -> None:
        self.db.close()
