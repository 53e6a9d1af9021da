"""Append-only proposals journal (JSON lines). One line per proposal; an idempotency key is
never written twice, across restarts too.

Durability:

* Each append is flushed and fsynced. A failed append (disk full, I/O error) is truncated back
  to where it started, so no torn line is left for the next record to be glued onto; a torn
  last line left by a crash is terminated before the next append.
* Reading never writes: ``proposals list`` on a read-only journal works, and a line that is
  not a JSON object is skipped with a warning naming the file and the line number.
* A read-only or missing-directory journal is an error of the append (``StoreError``), not of
  opening it: the daemon keeps the proposal in the store's outbox and retries the line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import structlog

from agent.core.errors import StoreError

log = structlog.get_logger(__name__)


class ProposalJournal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"proposals journal {self.path} is a directory")
        # Read once; this process is the journal's only writer (the daemon holds a lock), so
        # the cache stays current.
        self._records = self.read()
        self._keys = {r["idempotency_key"] for r in self._records if "idempotency_key" in r}

    def read(self) -> list[dict[str, Any]]:
        """Every readable record. Unreadable lines are skipped, each with a warning."""
        try:
            fh = self.path.open(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            raise StoreError(
                f"proposals journal {self.path}: a parent of the path is a file"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot read proposals journal {self.path}: {exc}") from exc
        rows = []
        with fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if not isinstance(row, dict):
                    log.warning(
                        "journal.bad_line",
                        file=str(self.path),
                        line=n,
                        note="skipped (torn by a crash or edited by hand)",
                    )
                    continue
                rows.append(row)
        return rows

    def has(self, key: str) -> bool:
        return key in self._keys

    def append(self, record: dict[str, Any]) -> bool:
        """Write ``record``; False (nothing written) if its idempotency key is already there.
        Raises ``StoreError`` when the line cannot be written durably; the file is then left as
        it was."""
        key = record["idempotency_key"]
        if key in self._keys:
            return False
        line = (json.dumps(record, sort_keys=False, default=str) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot append to proposals journal {self.path}: {exc}") from exc
        try:
            start = os.fstat(fd).st_size
            if start > 0 and os.pread(fd, 1, start - 1) != b"\n":
                line = b"\n" + line  # a torn last line from a crash: start on a fresh line
            try:
                written = 0
                while written < len(line):
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            except OSError as exc:
                # Leave no partial line behind: the next record must not be glued onto it.
                try:
                    os.ftruncate(fd, start)
                    os.fsync(fd)
                except OSError as exc2:
                    log.error("journal.truncate_failed", file=str(self.path), error=str(exc2))
                raise StoreError(f"cannot append to proposals journal {self.path}: {exc}") from exc
        finally:
            os.close(fd)
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
