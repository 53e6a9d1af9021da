"""Resident memory of a process, from ``/proc`` (Linux); None where it cannot be read."""

from __future__ import annotations

from pathlib import Path


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None
