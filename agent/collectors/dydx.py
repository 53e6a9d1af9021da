"""dYdX v4 indexer funding: ``GET {base}/historicalFunding/{ticker}``.

Key ``funding.dydx.<TICKER>`` (e.g. ``funding.dydx.BTC-USD``), unit "apr" = 1-hour ``rate`` x 8760,
source ``dydx:historicalFunding:1h``. ts = ``effectiveAt`` (ISO, ms, Z) floored to the second.
Rows come newest first; pages walk backwards with ``effectiveBeforeOrAt`` = oldest row - 1 ms
(the parameter is inclusive) until a short page or a row older than ``since``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote

from agent.collectors import HttpCollector, ParseResult, need, obs, parse_date, parse_rows
from agent.collectors.config import DydxConfig
from agent.core.errors import MalformedResponse
from agent.core.http import HttpClient, expect_dict, expect_list, num, unix_s
from agent.core.models import Observation

SOURCE = "dydx"
HOURS_PER_YEAR = 8760


def parse_historical_funding(
    body: Any, ticker: str, *, since: int | None = None
) -> tuple[ParseResult, float | None]:
    """Returns the observations and the oldest row's ``effectiveAt`` (unix s, float) for paging."""
    d = expect_dict(SOURCE, body, f"historicalFunding/{ticker}")
    rows = expect_list(SOURCE, d.get("historicalFunding"), f"historicalFunding/{ticker}")
    oldest: list[float] = []

    def row(r: Any) -> list[Observation]:
        at = parse_date(need(r, "effectiveAt")).timestamp()
        ts = unix_s(at)
        oldest.append(at)
        if "ticker" in r and r["ticker"] != ticker:
            raise ValueError(f"row for {r['ticker']!r}, asked for {ticker!r}")
        if since is not None and ts < since:
            return []
        rate = num(need(r, "rate"))
        return [
            obs(
                f"funding.dydx.{ticker}",
                ts,
                rate * HOURS_PER_YEAR,
                "apr",
                "dydx:historicalFunding:1h",
            )
        ]

    result = parse_rows(rows, f"historicalFunding/{ticker}", row)
    return result, (min(oldest) if oldest else None)


class DydxCollector(HttpCollector):
    name = SOURCE

    def __init__(self, config: DydxConfig, **kw: Any) -> None:
        super().__init__(**kw)
        self.config = config

    async def history_page(
        self, http: HttpClient, ticker: str, since: int, before: float | None
    ) -> tuple[list[Observation], float | None]:
        """One page, newest first, at or before ``before`` (None = the newest): its observations
        and the next page's ``before`` (None when done). Backfill checkpoints that cursor."""
        c = self.config
        url = f"{c.base_url.rstrip('/')}/historicalFunding/{quote(ticker)}"
        params = {"limit": str(c.page_limit)}
        if before is not None:
            params["effectiveBeforeOrAt"] = _iso_ms(before)
        body = await http.get_json(SOURCE, url, params=params, label="historicalFunding")
        page, oldest = parse_historical_funding(body, ticker, since=since)
        out = self.take(page, f"historicalFunding/{ticker}")
        if page.rows < c.page_limit or oldest is None or oldest < since:
            return out, None
        nxt = oldest - 0.001
        if before is not None and nxt >= before:
            raise MalformedResponse(
                SOURCE, f"historicalFunding/{ticker}: pagination did not move back"
            )
        return out, nxt

    async def history(self, http: HttpClient, ticker: str, since: int) -> list[Observation]:
        before: float | None = None
        out: list[Observation] = []
        for _ in range(self.config.max_pages):
            page, before = await self.history_page(http, ticker, since, before)
            out += page
            if before is None:
                return out
        self.skipped.append(
            f"historicalFunding/{ticker}: stopped after {self.config.max_pages} pages"
        )
        return out

    async def collect(self, http: HttpClient, since: int | None = None) -> list[Observation]:
        self.reset()
        start = self.start(since, self.config.lookback_s)
        out = await self.each_part(
            (f"historicalFunding {t}", partial(self.history, http, t, start))
            for t in self.config.markets
        )
        return sorted(
            {(o.key, o.ts, o.source): o for o in out}.values(), key=lambda o: (o.key, o.ts)
        )


def _iso_ms(ts: float) -> str:
    """The indexer's own format: ``2025-12-08T16:00:00.219Z`` (ms, Z)."""
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=round(ts * 1000))
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
