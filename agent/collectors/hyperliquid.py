"""Hyperliquid funding: info API ``fundingHistory`` (settled) and ``metaAndAssetCtxs`` (live).

Key ``funding.hyperliquid.<COIN>``, unit "apr" (annualised, signed; positive = longs pay).

* Funding is hourly since 2023-06-08 01:00 UTC (the rate is 1/8 of the 8h formula): APR = rate x 8760,
  source ``hyperliquid:fundingHistory:1h``. Earlier settlements were 8-hourly: APR = rate x 1095,
  source ``hyperliquid:fundingHistory:8h``. (Seen in the recorded history: 8h gaps up to
  2023-06-08 00:00, then hourly.)
* ``time`` is ms with a few ms of jitter; ts = floor(time / 1000).
* At most 500 rows per call: page forward from the last row's time + 1 ms until a short page.
* ``metaAndAssetCtxs``: ``[{universe:[...]}, [ctx, ...]]`` index-aligned; ``ctx.funding`` is the
  current hourly rate, stored at ts = collection time (floored to the minute) with source
  ``hyperliquid:metaAndAssetCtxs:1h``. Delisted assets and null funding are skipped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from agent.collectors import HttpCollector, ParseResult, need, obs, parse_rows
from agent.collectors.config import HyperliquidConfig
from agent.core.errors import MalformedResponse
from agent.core.http import HttpClient, expect_dict, expect_list, num, unix_s
from agent.core.models import Observation

SOURCE = "hyperliquid"
HOURS_PER_YEAR = 8760
EIGHT_HOURS_PER_YEAR = 1095
HOURLY_FROM = 1686186000  # 2023-06-08 01:00 UTC, first hourly settlement


def annualise(rate: float, ts: int) -> tuple[float, str]:
    if ts >= HOURLY_FROM:
        return rate * HOURS_PER_YEAR, "1h"
    return rate * EIGHT_HOURS_PER_YEAR, "8h"


def parse_funding_history(
    body: Any, coin: str, *, since: int | None = None
) -> tuple[ParseResult, int | None]:
    """Returns the observations and the last row's raw ``time`` in ms (for paging), if any."""
    rows = expect_list(SOURCE, body, f"fundingHistory {coin}")
    last_ms: list[int] = []

    def row(r: Any) -> list[Observation]:
        t_ms = need(r, "time")
        ts = unix_s(t_ms, ms=True)
        last_ms.append(int(num(t_ms)))
        if "coin" in r and r["coin"] != coin:
            raise ValueError(f"row for coin {r['coin']!r}, asked for {coin!r}")
        if since is not None and ts < since:
            return []
        apr, interval = annualise(num(need(r, "fundingRate")), ts)
        return [
            obs(
                f"funding.hyperliquid.{coin}",
                ts,
                apr,
                "apr",
                f"hyperliquid:fundingHistory:{interval}",
            )
        ]

    result = parse_rows(rows, f"fundingHistory {coin}", row)
    return result, (max(last_ms) if last_ms else None)


def parse_meta_and_asset_ctxs(body: Any, ts: int, markets: list[str] | None = None) -> ParseResult:
    pair = expect_list(SOURCE, body, "metaAndAssetCtxs")
    if len(pair) != 2:
        raise MalformedResponse(
            SOURCE, f"metaAndAssetCtxs: expected [meta, ctxs], got {len(pair)} items"
        )
    meta = expect_dict(SOURCE, pair[0], "metaAndAssetCtxs meta")
    universe = expect_list(SOURCE, meta.get("universe"), "metaAndAssetCtxs universe")
    ctxs = expect_list(SOURCE, pair[1], "metaAndAssetCtxs ctxs")
    if len(universe) != len(ctxs):
        # Index alignment is the only link between an asset and its context: refuse to guess.
        raise MalformedResponse(
            SOURCE, f"metaAndAssetCtxs: {len(universe)} assets but {len(ctxs)} contexts"
        )
    wanted = None if markets is None else set(markets)

    def row(pair_: tuple[Any, Any]) -> list[Observation]:
        asset, ctx = pair_
        name = need(asset, "name")
        if not isinstance(name, str):
            raise ValueError(f"asset name is {type(name).__name__}")
        if wanted is not None and name not in wanted:
            return []
        if asset.get("isDelisted") is True:
            raise ValueError(f"{name} is delisted")
        funding = need(ctx, "funding")
        if funding is None:
            raise ValueError(f"{name}: funding is null")
        return [
            obs(
                f"funding.hyperliquid.{name}",
                ts,
                num(funding) * HOURS_PER_YEAR,
                "apr",
                "hyperliquid:metaAndAssetCtxs:1h",
            )
        ]

    return parse_rows(list(zip(universe, ctxs, strict=True)), "metaAndAssetCtxs", row)


class HyperliquidCollector(HttpCollector):
    name = SOURCE

    def __init__(self, config: HyperliquidConfig, **kw: Any) -> None:
        super().__init__(**kw)
        self.config = config

    @property
    def url(self) -> str:
        return self.config.base_url.rstrip("/") + "/info"

    async def history_page(
        self, http: HttpClient, coin: str, since: int, start_ms: int
    ) -> tuple[list[Observation], int | None]:
        """One ``fundingHistory`` page from ``start_ms``: its observations and the next page's
        ``startTime`` (None after a short page). Backfill checkpoints that cursor."""
        body = await http.post_json(
            SOURCE,
            self.url,
            {"type": "fundingHistory", "coin": coin, "startTime": start_ms},
            label="fundingHistory",
        )
        page, last_ms = parse_funding_history(body, coin, since=since)
        out = self.take(page, f"fundingHistory {coin}")
        if page.rows < self.config.page_limit or last_ms is None:
            return out, None
        if last_ms < start_ms:
            raise MalformedResponse(
                SOURCE,
                f"fundingHistory {coin}: page ends at {last_ms} before startTime {start_ms}",
            )
        return out, last_ms + 1

    async def history(self, http: HttpClient, coin: str, since: int) -> list[Observation]:
        c = self.config
        start_ms: int | None = since * 1000
        out: list[Observation] = []
        for _ in range(c.max_pages):
            assert start_ms is not None
            page, start_ms = await self.history_page(http, coin, since, start_ms)
            out += page
            if start_ms is None:
                return out
        self.skipped.append(f"fundingHistory {coin}: stopped after {c.max_pages} pages")
        return out

    async def current(self, http: HttpClient) -> list[Observation]:
        body = await http.post_json(
            SOURCE, self.url, {"type": "metaAndAssetCtxs"}, label="metaAndAssetCtxs"
        )
        ts = self.now() // 60 * 60
        return self.take(
            parse_meta_and_asset_ctxs(body, ts, self.config.markets or None), "metaAndAssetCtxs"
        )

    async def collect(self, http: HttpClient, since: int | None = None) -> list[Observation]:
        self.reset()
        start = self.start(since, self.config.lookback_s)
        parts: list[tuple[str, Callable[[], Awaitable[list[Observation]]]]] = [
            (f"fundingHistory {coin}", partial(self.history, http, coin, start))
            for coin in self.config.markets
        ]
        if self.config.include_current:
            parts.append(("metaAndAssetCtxs", partial(self.current, http)))
        out = await self.each_part(parts)
        # Pages overlap by at most a row; keep one per (key, ts, source).
        return sorted(
            {(o.key, o.ts, o.source): o for o in out}.values(), key=lambda o: (o.key, o.ts)
        )
