"""Append-only proposals journal (JSON lines). One line per proposal; an idempotency key is
never written twice, across restarts too. Each append is flushed and fsynced, so a crash
loses at most the line being written (a torn last line is skipped on read, with a warning)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agent.core.errors import StoreError


class ProposalJournal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._terminate_torn_line()
        # Read once; this process is the journal's only writer, so the cache stays current.
        self._records = self.read()
        self._keys = {r["idempotency_key"] for r in self._records if "idempotency_key" in r}

    def _terminate_torn_line(self) -> None:
        # After a crash mid-write, start the next record on a fresh line so it stays readable.
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open("rb+") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue  # a torn last line after a crash
        return rows

    def has(self, key: str) -> bool:
        return key in self._keys

    def append(self, record: dict[str, Any]) -> bool:
        """Write ``record``; False (nothing written) if its idempotency key is already there."""
        key = record["idempotency_key"]
        if key in self._keys:
            return False
        line = json.dumps(record, sort_keys=False, default=str)
        try:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise StoreError(f"cannot append to proposals journal {self.path}: {exc}") from exc
        self._keys.add(key)
        self._records.append(record)
        return True

    def records(self) -> list[dict[str, Any]]:
        """Every record, from memory (what was on disk at start plus what this process wrote)."""
        return list(self._records)

    def get(self, proposal_id: str) -> dict[str, Any] | None:
        for r in self.read():
            if r.get("id") == proposal_id or str(r.get("id", "")).startswith(proposal_id):
                return r
        return None
