"""Exclusive advisory locks, so two daemons never share one store or journal.

``flock`` locks belong to the open file description: the kernel drops them when the process
dies, ``kill -9`` included, so a crashed daemon never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from agent.core.errors import AgentError


class AlreadyRunning(AgentError):
    """Another process holds the lock."""


class ExclusiveLock:
    """Held from ``acquire`` until ``release`` (or the process ends)."""

    def __init__(self, path: str | Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def acquire(self, *, create: bool = True, note_pid: bool = True) -> bool:
        """Take the lock; ``AlreadyRunning`` if another process has it. Returns False (no lock)
        only when ``create`` is False and the file does not exist or cannot be opened."""
        flags = os.O_RDWR | os.O_CREAT if create else os.O_RDONLY
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if not create:
                return False
            raise AgentError(f"cannot create lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (pid {int(os.pread(fd, 32, 0).decode().strip())})"
            os.close(fd)
            raise AlreadyRunning(
                f"another hedge-agent{holder} is already running on {self.what} {self.path}; "
                "stop it first (two daemons on one store would propose everything twice)"
            ) from None
        if note_pid:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
