"""Read the off-chain series a devnet scenario carries (``out/devnet/scenario_feed.json``, written
by ``hedge-agent devnet play``): macro prints and daily closes. These are scenario data, not
market data; every observation's source is ``scenario:<name>``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypeGuard

from agent.core.errors import MalformedResponse, SourceError
from agent.core.models import Observation


def load_scenario_feed(path: str | Path) -> list[Observation]:
    p = Path(path)
    where = f"scenario feed {p}"
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise SourceError(
            where, "file not found (run `hedge-agent devnet play SCENARIO`)"
        ) from None
    except OSError as exc:
        raise SourceError(where, f"cannot read: {exc}") from None
    except ValueError as exc:
        raise MalformedResponse(where, f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MalformedResponse(where, "top level is not an object")
    name = raw.get("scenario")
    if not isinstance(name, str) or not name:
        raise MalformedResponse(where, "missing 'scenario' name")
    source = raw.get("source", f"scenario:{name}")
    if not isinstance(source, str) or not source.startswith("scenario:"):
        raise MalformedResponse(where, f"'source' must start with 'scenario:', got {source!r}")
    rows = raw.get("observations")
    if not isinstance(rows, list):
        raise MalformedResponse(where, "'observations' is not a list")
    return [_observation(row, i, source, where) for i, row in enumerate(rows)]


def _observation(row: Any, i: int, source: str, where: str) -> Observation:
    if not isinstance(row, dict):
        raise MalformedResponse(where, f"observation #{i} is not an object")
    key, ts, value, unit = row.get("key"), row.get("ts"), row.get("value"), row.get("unit")
    known_at = row.get("known_at")
    if not isinstance(key, str) or not key:
        raise MalformedResponse(where, f"observation #{i}: 'key' must be a non-empty string")
    if not _is_int(ts):
        raise MalformedResponse(where, f"observation #{i} ({key}): 'ts' must be unix seconds")
    if known_at is not None and not _is_int(known_at):
        raise MalformedResponse(
            where, f"observation #{i} ({key}): 'known_at' must be unix seconds or null"
        )
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedResponse(where, f"observation #{i} ({key}): 'value' must be a finite number")
    if not isinstance(unit, str) or not unit:
        raise MalformedResponse(
            where, f"observation #{i} ({key}): 'unit' must be a non-empty string"
        )
    return Observation(
        key=key,
        ts=ts,
        value=float(value),
        unit=unit,
        source=source,
        known_at=known_at,
    )


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0
