"""Collectors: fetch and normalise into ``Observation`` rows; they never decide.

This module holds the small base shared by the HTTP collectors. Contract of every HTTP collector:

* ``async collect(http, since=None) -> list[Observation]``: ``since`` is unix seconds (inclusive);
  ``None`` means the collector's configured look-back. One shared ``HttpClient`` is passed in.
* Errors are ``SourceError`` subclasses naming the source. A malformed *row* is skipped and its
  reason appended to ``collector.skipped`` (and logged); a malformed *envelope* raises
  ``MalformedResponse``. Nothing else escapes, whatever JSON arrives.
* The parsing is in pure ``parse_*`` functions (``body -> ParseResult``), so contract tests
  and property tests run them without a network.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from agent.core.errors import MalformedResponse, SourceError
from agent.core.http import HttpClient
from agent.core.models import Observation

if TYPE_CHECKING:
    from agent.collectors.config import CollectorsConfig

log = structlog.get_logger(__name__)

MAX_SKIP_REASONS = 50


@dataclass
class ParseResult:
    observations: list[Observation] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rows: int = 0  # rows seen (parsed or skipped): what pagination compares with the page size

    def extend(self, other: ParseResult) -> None:
        self.observations.extend(other.observations)
        self.skipped.extend(other.skipped)
        self.rows += other.rows


def obs(
    key: str, ts: int, value: float, unit: str, source: str, known_at: int | None = None
) -> Observation:
    """Observation, with its ValueError (non-finite value) kept a ValueError for row skipping."""
    return Observation(key=key, ts=ts, value=value, unit=unit, source=source, known_at=known_at)


def need(d: Any, name: str) -> Any:
    """A field of a JSON object row, or ValueError (becomes a skip reason)."""
    if not isinstance(d, dict):
        raise ValueError(f"row is {type(d).__name__}, not an object")
    if name not in d:
        raise ValueError(f"missing field {name!r}")
    return d[name]


NO_VALUE_NOTE = "(the source has no value that day)"


class NoValue(ValueError):
    """A row the source itself marks as empty (FRED's "." on a market holiday): skipped like any
    bad row, but routine, so it does not make a collection "read in part"."""


def is_no_value(problem: str) -> bool:
    return problem.endswith(NO_VALUE_NOTE)


def parse_rows(
    items: Iterable[Any], what: str, fn: Callable[[Any], Iterable[Observation]]
) -> ParseResult:
    """Apply ``fn`` to each row; a row that raises ValueError/TypeError is skipped with a reason."""
    out = ParseResult()
    for i, item in enumerate(items):
        out.rows += 1
        try:
            out.observations.extend(fn(item))
        except NoValue as e:
            out.skipped.append(f"{what}[{i}]: {str(e)[:160]} {NO_VALUE_NOTE}")
        except (ValueError, TypeError, OverflowError) as e:
            out.skipped.append(f"{what}[{i}]: {str(e)[:160]}")
    return out


def month_start(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp())


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def release_fallback(year: int, month: int) -> int:
    """No release calendar known: a monthly print counts from the 15th of the following month,
    00:00 UTC (DESIGN S2). CPI/PPI are usually published 10th-15th, so this rarely looks ahead,
    and when the real release is later the signal is at most a few days early."""
    y, m = next_month(year, month)
    return int(datetime(y, m, 15, tzinfo=UTC).timestamp())


def parse_date(s: Any) -> datetime:
    """``YYYY-MM-DD`` (UTC midnight) or ISO-8601 with ``Z``; ValueError otherwise."""
    if not isinstance(s, str) or len(s) > 40:
        raise ValueError(f"not a date string: {s!r}")
    text = s.strip().replace("Z", "+00:00")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


class HttpCollector:
    """Base of the HTTP collectors: look-back, skip bookkeeping, clock injection."""

    name = "http"

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.skipped: list[str] = []

    def now(self) -> int:
        return int(self.clock())

    @property
    def interval_s(self) -> int:
        """How often the daemon runs this collector (its config section's ``interval_s``)."""
        return int(getattr(getattr(self, "config", None), "interval_s", 3600))

    def start(self, since: int | None, lookback_s: int) -> int:
        return int(since) if since is not None else self.now() - lookback_s

    def take(self, result: ParseResult, context: str) -> list[Observation]:
        if result.skipped:
            log.warning(
                "collector.rows_skipped",
                source=self.name,
                context=context,
                count=len(result.skipped),
                first=result.skipped[:3],
            )
            room = MAX_SKIP_REASONS - len(self.skipped)
            if room > 0:
                self.skipped.extend(result.skipped[:room])
        return result.observations

    def reset(self) -> None:
        self.skipped = []

    async def each_part(
        self, parts: Iterable[tuple[str, Callable[[], Awaitable[list[Observation]]]]]
    ) -> list[Observation]:
        """Fetch each part (a series, market or endpoint) on its own: a part that fails is
        recorded in ``skipped`` (naming it) and the others' observations are kept. Only when
        every part fails does the collector fail, with the first error."""
        out: list[Observation] = []
        errors: list[SourceError] = []
        n = 0
        for name, fetch in parts:
            n += 1
            try:
                out += await fetch()
            except SourceError as exc:
                errors.append(exc)
                self.skipped.append(f"{name}: failed: {exc}")
                log.warning("collector.part_failed", source=self.name, part=name, error=str(exc))
        if errors and len(errors) == n:
            raise errors[0]
        return out

    async def collect(self, http: HttpClient, since: int | None = None) -> list[Observation]:
        raise NotImplementedError


def malformed(source: str, message: str) -> MalformedResponse:
    return MalformedResponse(source, message)


def build_http_collectors(config: CollectorsConfig) -> list[HttpCollector]:
    """Every enabled HTTP collector. Scheduling (each section's ``interval_s``) is the runner's."""
    # Local imports: the collector modules import this package for the base class.
    from agent.collectors.bls import BlsCollector
    from agent.collectors.closes import ClosesCollector
    from agent.collectors.defillama import DefiLlamaCollector
    from agent.collectors.dydx import DydxCollector
    from agent.collectors.fred import FredCollector
    from agent.collectors.hyperliquid import HyperliquidCollector
    from agent.collectors.subgraph import SubgraphCollector

    out: list[HttpCollector] = []
    if config.defillama.enabled:
        out.append(DefiLlamaCollector(config.defillama))
    if config.hyperliquid.enabled:
        out.append(HyperliquidCollector(config.hyperliquid))
    if config.dydx.enabled:
        out.append(DydxCollector(config.dydx))
    if config.fred.enabled:
        out.append(FredCollector(config.fred))
    if config.bls.enabled:
        out.append(BlsCollector(config.bls))
    if config.subgraph.enabled:
        out.append(SubgraphCollector(config.subgraph))
    if config.closes.enabled:
        out.append(ClosesCollector(config.closes))
    return out
