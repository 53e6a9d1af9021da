"""Signal results and the series conventions every signal follows.

Conventions (shared by S1..S8):

* A signal is a **pure** function: ``fn(series..., at, cfg) -> SignalResult | list[SignalResult]``.
  No I/O, no clock, no logging. ``at`` is the evaluation time (a tz-aware UTC ``pd.Timestamp``).
* Series are ``pd.Series`` of floats with a sorted, tz-aware UTC ``DatetimeIndex``. A point stamped
  ``t`` is used only when ``t <= at`` (the function truncates itself, so passing a longer series can
  never look ahead). Series the store returns already respect ``known_at`` (``known_by=at``); macro
  prints, whose release time matters inside the signal, come as :class:`agent.signals.macro` frames.
* ``series.name`` is the observation key and ``series.attrs["source"]`` (optional) its source; both
  go into :class:`InputRef` so every evaluation records what it used (value, source, timestamp).
* Missing or too-short windows give ``status="insufficient_data"`` with a reason in ``detail``;
  a signal is never silently quiet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

Status = Literal["firing", "quiet", "insufficient_data"]
FIRING: Status = "firing"
QUIET: Status = "quiet"
INSUFFICIENT: Status = "insufficient_data"

SIGNAL_IDS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8")


@dataclass(frozen=True, slots=True)
class InputRef:
    """One input value a signal used: series key, source, timestamp (unix s, UTC) and value."""

    key: str
    source: str
    ts: int
    value: float

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "source": self.source, "ts": self.ts, "value": self.value}


@dataclass(frozen=True, slots=True)
class SignalResult:
    """The outcome of one signal for one subject (a protocol, market, reserve or asset).

    ``value`` is the signal's headline number and ``threshold`` what it is compared with (units
    are in ``detail``); ``metrics`` holds secondary numbers (z-scores, the other beta, ...).
    """

    id: str  # "S1".."S8"
    name: str
    subject: str
    status: Status
    value: float | None
    threshold: float | None
    detail: str
    inputs: tuple[InputRef, ...] = ()
    metrics: tuple[tuple[str, float | None], ...] = field(default=())

    @property
    def firing(self) -> bool:
        return self.status == FIRING

    @property
    def insufficient(self) -> bool:
        return self.status == INSUFFICIENT

    def metric(self, name: str) -> float | None:
        for k, v in self.metrics:
            if k == name:
                return v
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "subject": self.subject,
            "status": self.status,
            "firing": self.firing,
            "value": self.value,
            "threshold": self.threshold,
            "detail": self.detail,
            "metrics": dict(self.metrics),
            "inputs": [i.as_dict() for i in self.inputs],
        }


def aggregate_status(results: Iterable[SignalResult]) -> Status:
    """One status for a signal id over its subjects: firing if any subject fires, quiet if none
    fires and at least one was evaluable, insufficient_data if none was (or there are none)."""
    statuses = [r.status for r in results]
    if FIRING in statuses:
        return FIRING
    if QUIET in statuses:
        return QUIET
    return INSUFFICIENT


# -- helpers shared by the signal modules (pure) ---------------------------------------------


def to_utc(at: pd.Timestamp | str | int | float) -> pd.Timestamp:
    """``at`` as a tz-aware UTC Timestamp (ints/floats are unix seconds)."""
    if isinstance(at, int | float) and not isinstance(at, bool):
        return pd.Timestamp(int(at), unit="s", tz="UTC")
    ts = pd.Timestamp(at)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def unix(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000_000)


def series_key(s: pd.Series, default: str) -> str:
    return str(s.name) if s.name is not None else default


def series_source(s: pd.Series) -> str:
    return str(s.attrs.get("source", "unknown"))


def ref(s: pd.Series, pos: int, key: str | None = None) -> InputRef:
    """InputRef for the point at integer position ``pos`` of ``s``."""
    ts = s.index[pos]
    return InputRef(
        key=key or series_key(s, "series"),
        source=series_source(s),
        ts=unix(pd.Timestamp(ts)),
        value=float(s.iloc[pos]),
    )


def upto(s: pd.Series, at: pd.Timestamp, since: pd.Timestamp | None = None) -> pd.Series:
    """Points with ``since <= t <= at`` (``since`` inclusive; None = from the start). NaNs dropped.
    Uses positional slicing on the sorted index (fast enough for day-by-day replays)."""
    idx = s.index
    if not isinstance(idx, pd.DatetimeIndex):
        raise TypeError(f"series {s.name!r} needs a DatetimeIndex, got {type(idx).__name__}")
    if idx.tz is None:
        raise TypeError(f"series {s.name!r} needs a tz-aware (UTC) index")
    hi = int(idx.searchsorted(at, side="right"))
    lo = 0 if since is None else int(idx.searchsorted(since, side="left"))
    out = s.iloc[lo:hi]
    if np.isnan(out.to_numpy(dtype="float64")).any():
        out = out.dropna()
    return out


def result(
    sid: str,
    name: str,
    subject: str,
    status: Status,
    value: float | None,
    threshold: float | None,
    detail: str,
    inputs: Sequence[InputRef] = (),
    metrics: dict[str, float | None] | None = None,
) -> SignalResult:
    return SignalResult(
        id=sid,
        name=name,
        subject=subject,
        status=status,
        value=None if value is None or not np.isfinite(value) else float(value),
        threshold=threshold,
        detail=detail,
        inputs=tuple(inputs),
        metrics=tuple((metrics or {}).items()),
    )


def insufficient(
    sid: str, name: str, subject: str, threshold: float | None, detail: str
) -> SignalResult:
    """The data does not allow a verdict (no value); ``detail`` says what is missing."""
    return result(sid, name, subject, INSUFFICIENT, None, threshold, detail)


def fmt_pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x * 100:.{digits}f}%"
