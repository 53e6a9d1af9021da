"""SQLite observation store: observations and backfill checkpoints. The proposal ledger (outbox,
spends, live sends) is ``agent.store.ledger.ProposalLedger``, in the same file
(``agent.store.db.Database``, where the durability choices are described).

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
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from agent.core.errors import StoreError
from agent.core.models import Observation
from agent.store.db import SCHEMA_VERSION, DatabaseView, Synchronous

__all__ = ["SCHEMA_VERSION", "Checkpoint", "Store", "Synchronous"]


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


class Store(DatabaseView):
    """The observation store of one database (see the module doc); ``Store(path)`` opens its
    own, ``Store(db)`` shares one with the proposal ledger."""

    def schema_version(self) -> int:
        return self.db.schema_version()

    def integrity_check(self) -> str:
        return self.db.integrity_check()

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
