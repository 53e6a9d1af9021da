"""FRED ``series/observations``: CPIAUCSL -> ``macro.cpi``, PPIFIS -> ``macro.ppi`` (unit "index"),
SP500 -> ``close.spx`` (unit "index"), mapping configurable.

* ts = the observation ``date`` (first day of the period) 00:00 UTC. ``"."`` (missing) rows are
  skipped with a reason, never a crash.
* Monthly macro series are fetched with every vintage (``realtime_start=1776-07-04``, ALFRED style),
  and known_at = the row's ``realtime_start`` 00:00 UTC: the day that value (first print or
  revision) became known. Each vintage is a separate stored row, so backtests see what was known
  then. A value can't be known before its month ended, so known_at is at least the 1st of the
  following month.
* Daily series (``vintages=False``): current values, known_at None.
* Paging: ``limit``/``offset`` until ``offset + len >= count``.
* Error bodies ``{"error_code":400,"error_message":"Bad Request.  ..."}`` -> SourceError naming the
  series (the API key is redacted from every message).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from typing import Any

from agent.collectors import (
    HttpCollector,
    NoValue,
    ParseResult,
    month_start,
    need,
    next_month,
    obs,
    parse_date,
    parse_rows,
)
from agent.collectors.config import FredConfig, FredSeriesConfig
from agent.core.errors import ConfigError, MalformedResponse, SourceError
from agent.core.http import HttpClient, HttpStatusError, expect_dict, expect_list, num
from agent.core.models import Observation

SOURCE = "fred"
EARLIEST_REALTIME = "1776-07-04"
MISSING = "."


def fred_error(body: Any) -> str | None:
    if isinstance(body, dict) and "error_message" in body:
        return str(body.get("error_message"))[:300]
    return None


def parse_observations(body: Any, series: FredSeriesConfig) -> tuple[ParseResult, int | None]:
    """Returns the observations and FRED's ``count`` (total rows, for paging) if present."""
    sid = series.series_id
    d = expect_dict(SOURCE, body, f"series/observations {sid}")
    err = fred_error(d)
    if err is not None:
        raise SourceError(SOURCE, f"{sid}: {err}")
    rows = expect_list(SOURCE, d.get("observations"), f"series/observations {sid}")
    count = d.get("count")
    source = f"fred:{sid}"

    def row(r: Any) -> list[Observation]:
        date = parse_date(need(r, "date"))
        value = need(r, "value")
        if value == MISSING:
            raise NoValue(f"{date.date()} is missing ('.')")
        v = num(value)
        ts = int(date.timestamp())
        known_at: int | None = None
        if series.vintages:
            known_at = int(parse_date(need(r, "realtime_start")).timestamp())
            if series.monthly:
                known_at = max(known_at, month_start(*next_month(date.year, date.month)))
        elif series.key.startswith("close."):
            known_at = ts + 86_399  # a daily close is final only when its day has ended
        return [obs(series.key, ts, v, series.unit, source, known_at)]

    result = parse_rows(rows, f"{sid} observations", row)
    return result, (count if isinstance(count, int) and not isinstance(count, bool) else None)


class FredCollector(HttpCollector):
    name = SOURCE

    def __init__(self, config: FredConfig, **kw: Any) -> None:
        super().__init__(**kw)
        self.config = config

    async def series_page(
        self, http: HttpClient, s: FredSeriesConfig, since: int, offset: int
    ) -> tuple[list[Observation], int | None]:
        """One page of ``series/observations`` at ``offset``: its observations and the next
        offset (None when the series is complete). Backfill checkpoints that cursor."""
        c = self.config
        if c.api_key is None or not c.api_key.get_secret_value():
            raise ConfigError(
                "fred.api_key is not set (https://fred.stlouisfed.org/docs/api/api_key.html)"
            )
        key = c.api_key.get_secret_value()
        params = {
            "series_id": s.series_id,
            "api_key": key,
            "file_type": "json",
            "observation_start": datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d"),
            "limit": str(c.page_limit),
        }
        if s.vintages:
            params |= {"realtime_start": EARLIEST_REALTIME, "realtime_end": "9999-12-31"}
        url = f"{c.base_url.rstrip('/')}/series/observations"
        try:
            body = await http.get_json(
                SOURCE,
                url,
                params={**params, "offset": str(offset)},
                label=f"series/observations:{s.series_id}",
                secrets=(key,),
            )
        except HttpStatusError as e:
            raise SourceError(SOURCE, f"{s.series_id}: {_error_text(e)}") from e
        except MalformedResponse as e:
            raise MalformedResponse(SOURCE, f"{s.series_id}: {e.message}") from e
        page, count = parse_observations(body, s)
        out = self.take(page, s.series_id)
        offset += page.rows
        if count is None or page.rows == 0 or offset >= count:
            return out, None
        return out, offset

    async def series(self, http: HttpClient, s: FredSeriesConfig, since: int) -> list[Observation]:
        out: list[Observation] = []
        offset: int | None = 0
        for _ in range(self.config.max_pages):
            assert offset is not None
            page, offset = await self.series_page(http, s, since, offset)
            out += page
            if offset is None:
                return out
        self.skipped.append(f"{s.series_id}: stopped after {self.config.max_pages} pages")
        return out

    async def collect(self, http: HttpClient, since: int | None = None) -> list[Observation]:
        self.reset()
        start = self.start(since, self.config.lookback_s)
        return await self.each_part(
            (s.series_id, partial(self.series, http, s, start)) for s in self.config.series
        )


def _error_text(e: HttpStatusError) -> str:
    try:
        msg = fred_error(json.loads(e.body))
    except ValueError:
        msg = None
    return f"HTTP {e.status}: {msg}" if msg else e.message
