"""The pause switch: a small state file next to the store (``agent.sqlite`` ->
``agent.pause.json``). ``hedge-agent pause`` writes it, ``resume`` removes the pause; the running
daemon reads it every tick, so it survives restarts and needs no signal or socket."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from agent.core.errors import AgentError


@dataclass(frozen=True)
class PauseState:
    paused: bool
    reason: str | None = None
    since: int | None = None  # unix seconds


def pause_path(store_path: str | Path) -> Path:
    p = Path(store_path)
    return p.with_name(f"{p.stem}.pause.json")


class PauseSwitch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> PauseState:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return PauseState(False)
        except (OSError, ValueError) as exc:
            # An unreadable switch fails safe: paused, with the reason saying why.
            return PauseState(True, f"pause file {self.path} unreadable: {exc}")
        if not isinstance(raw, dict):
            return PauseState(True, f"pause file {self.path} is not a JSON object")
        since = raw.get("since")
        return PauseState(
            bool(raw.get("paused")),
            str(raw["reason"]) if raw.get("reason") is not None else None,
            int(since) if isinstance(since, int) else None,
        )

    def _write(self, state: PauseState) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(
                json.dumps({"paused": state.paused, "reason": state.reason, "since": state.since}),
                encoding="utf-8",
            )
            os.replace(tmp, self.path)  # atomic: the daemon never reads half a file
        except OSError as exc:
            raise AgentError(f"cannot write the pause file {self.path}: {exc.strerror}") from None

    def pause(self, reason: str | None) -> PauseState:
        state = PauseState(True, reason, int(time.time()))
        self._write(state)
        return state

    def resume(self) -> PauseState:
        state = PauseState(False, None, int(time.time()))
        self._write(state)
        return state
