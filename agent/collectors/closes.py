"""Daily closes from a Coinbase-Exchange-candles-shaped endpoint.

Request: ``GET {base_url}{path}?granularity=86400&start=<ISO>&end=<ISO>`` with ``{product}`` in the
path. Answer: a bare array of candles ``[time, low, high, open, close, volume]`` (numbers, newest
first, at most 300 per call; ``time`` = bucket start in unix seconds). Column positions are
configurable (``time_index``, ``close_index``) for look-alike sources.

Key from config (``close.btc`` / ``close.eth``), unit "usd", ts = UTC day start (the candle's
``time`` floored to the day), known_at None, source ``closes:<product>``. The current, still
moving day is dropped unless ``drop_incomplete`` is off.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent.collectors import HttpCollector, ParseResult, obs, parse_rows
from agent.collectors.config import ClosesConfig, ClosesProduct
from agent.core.http import HttpClient, expect_list, num, unix_s
from agent.core.models import Observation

SOURCE = "closes"
DAY = 86_400


def parse_candles(
    body: Any,
    product: ClosesProduct,
    *,
    time_index: int = 0,
    close_index: int = 4,
    since: int | None = None,
    complete_before: int | None = None,
) -> ParseResult:
    rows = expect_list(SOURCE, body, f"candles {product.product}")
    source = f"closes:{product.product}"

    def row(c: Any) -> list[Observation]:
        if not isinstance(c, list) or len(c) <= max(time_index, close_index):
            raise ValueError(
                f"candle is not an array of at least {max(time_index, close_index) + 1} items"
            )
        ts = unix_s(c[time_index]) // DAY * DAY
        if since is not None and ts < since:
            return []
        if complete_before is not None and ts + DAY > complete_before:
            return []
        close = num(c[close_index])
        if close <= 0:
            raise ValueError(f"non-positive close {close}")
        # Final only once its day has ended (the in-progress day is dropped above).
        return [obs(product.key, ts, close, product.unit, source, ts + 86_399)]

    return parse_rows(rows, f"candles {product.product}", row)


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ClosesCollector(HttpCollector):
    name = SOURCE

    def __init__(self, config: ClosesConfig, **kw: Any) -> None:
        super().__init__(**kw)
        self.config = config

    async def window(
        self, http: HttpClient, p: ClosesProduct, since: int, start: int, now: int
    ) -> tuple[list[Observation], int | None]:
        """One request of up to ``max_candles_per_request`` candles from ``start``: its
        observations and the next window's start (None once ``now`` is reached)."""
        c = self.config
        url = c.base_url.rstrip("/") + c.path.format(product=p.product)
        window = c.granularity_s * c.max_candles_per_request
        end = min(start + window - c.granularity_s, now)
        body = await http.get_json(
            SOURCE,
            url,
            params={"granularity": str(c.granularity_s), "start": _iso(start), "end": _iso(end)},
            label="candles",
        )
        page = parse_candles(
            body,
            p,
            time_index=c.time_index,
            close_index=c.close_index,
            since=since,
            complete_before=now if c.drop_incomplete else None,
        )
        nxt = end + c.granularity_s
        return self.take(page, p.product), (nxt if nxt < now else None)

    async def product(self, http: HttpClient, p: ClosesProduct, since: int) -> list[Observation]:
        now = self.now()
        start: int | None = since // DAY * DAY
        out: list[Observation] = []
        while start is not None and start < now:
            page, start = await self.window(http, p, since, start, now)
            out += page
        return out

    async def collect(self, http: HttpClient, since: int | None = None) -> list[Observation]:
        self.reset()
        start = self.start(since, self.config.lookback_s)
        out: list[Observation] = []
        for p in self.config.products:
            out += await self.product(http, p, start)
        return sorted(
            {(o.key, o.ts, o.source): o for o in out}.values(), key=lambda o: (o.key, o.ts)
        )
