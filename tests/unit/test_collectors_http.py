"""HTTP collectors against a real local aiohttp server that answers like each real API."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr, ValidationError

from agent.collectors.bls import BlsCollector
from agent.collectors.closes import ClosesCollector
from agent.collectors.config import (
    BlsConfig,
    ClosesConfig,
    CollectorsConfig,
    DefiLlamaConfig,
    DydxConfig,
    FredConfig,
    FredSeriesConfig,
    HyperliquidConfig,
    SubgraphConfig,
)
from agent.collectors.defillama import DefiLlamaCollector
from agent.collectors.dydx import DydxCollector
from agent.collectors.fred import FredCollector
from agent.collectors.hyperliquid import HyperliquidCollector
from agent.collectors.subgraph import SubgraphCollector
from agent.core.errors import ConfigError, MalformedResponse, SourceError
from agent.core.http import HttpClient, RetryPolicy
from agent.core.models import Observation

DAY = 86_400
H = 3600
T0 = 1_700_000_000 // DAY * DAY  # 2023-11-14 00:00 UTC, after Hyperliquid went hourly


def ts(y: int, m: int, d: int, h: int = 0) -> int:
    return int(datetime(y, m, d, h, tzinfo=UTC).timestamp())


class FakeApis:
    """One aiohttp app speaking (a faithful subset of) every upstream API."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, dict[str, str], Any]] = []
        self.hl_rows: list[dict[str, Any]] = []
        self.dydx_rows: list[dict[str, Any]] = []
        self.fred_status = 200
        self.fred_body: Any = None
        self.fred_pages: list[Any] | None = None
        self.bls_body: Any = None
        self.graphql_body: Any = None
        self.candles: list[list[float]] = []
        self.protocol_body: Any = None
        self.chain_body: Any = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.method == "POST" and request.can_read_body else None
        self.log.append((request.method, request.path, dict(request.query), body))
        p = request.path
        if p.startswith("/llama/protocol/"):
            return web.json_response(self.protocol_body)
        if p.startswith("/llama/v2/historicalChainTvl"):
            return web.json_response(self.chain_body)
        if p == "/hl/info":
            if body["type"] == "fundingHistory":
                start = body["startTime"]
                rows = [r for r in self.hl_rows if r["time"] >= start and r["coin"] == body["coin"]]
                return web.json_response(rows[:500])
            if body["type"] == "metaAndAssetCtxs":
                return web.json_response(META_AND_CTXS)
        if p.startswith("/dydx/historicalFunding/"):
            limit = int(request.query.get("limit", "100"))
            before = request.query.get("effectiveBeforeOrAt")
            rows = self.dydx_rows
            if before:
                cut = datetime.fromisoformat(before.replace("Z", "+00:00")).timestamp()
                rows = [
                    r
                    for r in rows
                    if datetime.fromisoformat(r["effectiveAt"].replace("Z", "+00:00")).timestamp()
                    <= cut
                ]
            return web.json_response({"historicalFunding": rows[:limit]})
        if p == "/fred/series/observations":
            if self.fred_pages is not None:
                off = int(request.query.get("offset", "0"))
                return web.json_response(self.fred_pages[0 if off == 0 else 1])
            return web.json_response(self.fred_body, status=self.fred_status)
        if p == "/bls/timeseries/data/":
            return web.json_response(self.bls_body)
        if p == "/graph":
            return web.json_response(self.graphql_body)
        if p.startswith("/cb/products/"):
            start = datetime.fromisoformat(
                request.query["start"].replace("Z", "+00:00")
            ).timestamp()
            end = datetime.fromisoformat(request.query["end"].replace("Z", "+00:00")).timestamp()
            rows = [c for c in self.candles if start <= c[0] <= end]
            return web.json_response(sorted(rows, key=lambda c: -c[0])[:300])
        return web.Response(status=404, text="no route")


META_AND_CTXS = [
    {
        "universe": [
            {"szDecimals": 5, "name": "BTC", "maxLeverage": 40, "marginTableId": 56},
            {
                "szDecimals": 1,
                "name": "MATIC",
                "maxLeverage": 20,
                "marginTableId": 20,
                "isDelisted": True,
            },
            {"szDecimals": 4, "name": "ETH", "maxLeverage": 25, "marginTableId": 55},
        ],
        "marginTables": [
            [56, {"description": "", "marginTiers": [{"lowerBound": "0.0", "maxLeverage": 40}]}]
        ],
    },
    [
        {
            "funding": "0.0000125",
            "openInterest": "1.0",
            "prevDayPx": "1",
            "dayNtlVlm": "1",
            "premium": "0.0",
            "oraclePx": "1",
            "markPx": "1",
            "midPx": "1",
            "impactPxs": ["1", "1"],
            "dayBaseVlm": "1",
        },
        {
            "funding": "0.0",
            "openInterest": "0.0",
            "prevDayPx": "0.3",
            "dayNtlVlm": "0.0",
            "premium": None,
            "oraclePx": "0.3",
            "markPx": "0.3",
            "midPx": None,
            "impactPxs": None,
            "dayBaseVlm": "0.0",
        },
        {
            "funding": "-0.00005",
            "openInterest": "1.0",
            "prevDayPx": "1",
            "dayNtlVlm": "1",
            "premium": None,
            "oraclePx": "1",
            "markPx": "1",
            "midPx": None,
            "impactPxs": None,
            "dayBaseVlm": "1",
        },
    ],
]


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApis, str]]:
    apis = FakeApis()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", apis.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield apis, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    async with HttpClient(retry=RetryPolicy(attempts=2, base_delay_s=0.0)) as c:
        yield c


def by_key(rows: list[Observation]) -> dict[str, list[Observation]]:
    out: dict[str, list[Observation]] = {}
    for o in rows:
        out.setdefault(o.key, []).append(o)
    return out


# -- DefiLlama ----------------------------------------------------------------------------------


async def test_defillama_protocol_and_chain_tvl(
    fake: tuple[FakeApis, str], http: HttpClient
) -> None:
    apis, base = fake
    pts = lambda vals: [{"date": T0 + i * DAY, "totalLiquidityUSD": v} for i, v in enumerate(vals)]  # noqa: E731
    apis.protocol_body = {
        "id": "1599",
        "name": "Aave V3",
        "tvl": [*pts([100.0, 90.0]), {"date": T0 + DAY + 5000, "totalLiquidityUSD": 95.5}],
        "chainTvls": {
            "Ethereum": {"tvl": pts([60.0, 55.0]), "tokensInUsd": [], "tokens": []},
            "Ethereum-borrowed": {"tvl": pts([40.0, 41.0])},
            "borrowed": {"tvl": pts([40.0, 41.0])},
            "Polygon": {"tvl": pts([1.0, 2.0])},
            "Polygon-pool2": {"tvl": pts([1.0, 2.0])},
        },
        "currentChainTvls": {"Ethereum": 55.0, "Ethereum-borrowed": 41.0},
    }
    apis.chain_body = [{"date": T0, "tvl": 0}, {"date": T0 + DAY, "tvl": 41655886906}]
    cfg = DefiLlamaConfig(base_url=f"{base}/llama", protocol_chains=None, chains=["Ethereum"])
    col = DefiLlamaCollector(cfg, clock=lambda: T0 + 2 * DAY)
    got = by_key(await col.collect(http, since=T0))
    assert set(got) == {
        "tvl.aave-v3.total",
        "tvl.aave-v3.Ethereum",
        "tvl.aave-v3.Polygon",
        "tvl.chain.Ethereum",
        "tvl.chain.total",
    }
    assert [o.value for o in got["tvl.aave-v3.total"]] == [100.0, 90.0, 95.5]
    assert got["tvl.aave-v3.total"][-1].ts == T0 + DAY + 5000  # the live point is kept as is
    assert got["tvl.aave-v3.Ethereum"][0].source == "defillama:/protocol/aave-v3"
    assert got["tvl.chain.Ethereum"][1].value == 41655886906.0
    assert all(o.unit == "usd" for rows in got.values() for o in rows)
    # since filters
    col2 = DefiLlamaCollector(cfg.model_copy(update={"protocol_chains": ["Ethereum"]}))
    got2 = by_key(await col2.collect(http, since=T0 + 1))
    assert "tvl.aave-v3.Polygon" not in got2
    assert [o.ts for o in got2["tvl.aave-v3.Ethereum"]] == [T0 + DAY]


async def test_defillama_html_error_page() -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(status=200, text="<html>Cloudflare</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/llama/protocol/aave-v3", html)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with HttpClient() as http:
            col = DefiLlamaCollector(
                DefiLlamaConfig(
                    base_url=str(server.make_url("/llama")), chains=[], all_chains_total=False
                )
            )
            with pytest.raises(
                MalformedResponse,
                match=r"^defillama: .*/llama/protocol/aave-v3 returned an HTML page",
            ):
                await col.collect(http)
    finally:
        await server.close()


async def test_defillama_bad_row_skipped_with_reason(
    fake: tuple[FakeApis, str], http: HttpClient
) -> None:
    apis, base = fake
    apis.chain_body = [
        {"date": T0, "tvl": 5},
        {"date": "yesterday", "tvl": 1},
        {"tvl": 3},
        "junk",
        {"date": T0 + DAY, "tvl": -1},
    ]
    col = DefiLlamaCollector(DefiLlamaConfig(base_url=f"{base}/llama", protocols=[], chains=[]))
    rows = await col.collect(http, since=0)
    assert [(o.key, o.value) for o in rows] == [("tvl.chain.total", 5.0)]
    assert len(col.skipped) == 4 and any("missing field 'date'" in s for s in col.skipped)


# -- Hyperliquid --------------------------------------------------------------------------------


async def test_hyperliquid_paginates_500_row_pages(
    fake: tuple[FakeApis, str], http: HttpClient
) -> None:
    apis, base = fake
    # 1200 hourly settlements with a few ms of jitter, like the real API.
    apis.hl_rows = [
        {
            "coin": "BTC",
            "fundingRate": "0.0000125",
            "premium": "0.0001",
            "time": (T0 + i * H) * 1000 + (i % 7) * 11,
        }
        for i in range(1200)
    ]
    cfg = HyperliquidConfig(base_url=f"{base}/hl", markets=["BTC"], include_current=False)
    rows = await HyperliquidCollector(cfg).collect(http, since=T0)
    calls = [b for (_, p, _, b) in apis.log if p == "/hl/info"]
    assert [len([r for r in apis.hl_rows if r["time"] >= c["startTime"]][:500]) for c in calls] == [
        500,
        500,
        200,
    ]
    assert calls[1]["startTime"] == apis.hl_rows[499]["time"] + 1
    assert len(rows) == 1200 and len({o.ts for o in rows}) == 1200
    o = rows[0]
    assert o.key == "funding.hyperliquid.BTC" and o.unit == "apr" and o.ts == T0
    assert o.value == pytest.approx(0.1095, rel=1e-12)  # 0.0000125/h x 8760
    assert o.source == "hyperliquid:fundingHistory:1h"


async def test_hyperliquid_8h_era_and_current(fake: tuple[FakeApis, str], http: HttpClient) -> None:
    apis, base = fake
    old = ts(2023, 5, 12)
    apis.hl_rows = [
        {"coin": "ETH", "fundingRate": "0.0001", "premium": "0", "time": old * 1000 + 48}
    ]
    cfg = HyperliquidConfig(base_url=f"{base}/hl", markets=["ETH", "MATIC"])
    col = HyperliquidCollector(cfg, clock=lambda: T0 + 1234)
    got = by_key(await col.collect(http, since=old))
    eth = got["funding.hyperliquid.ETH"]
    hist = [o for o in eth if o.source.endswith("fundingHistory:8h")]
    assert hist[0].value == pytest.approx(0.1095)  # 0.01%/8h x 1095
    cur = [o for o in eth if "metaAndAssetCtxs" in o.source]
    assert cur[0].value == pytest.approx(-0.00005 * 8760) and cur[0].ts == (T0 + 1234) // 60 * 60
    assert "funding.hyperliquid.BTC" not in got  # not configured
    assert "funding.hyperliquid.MATIC" not in got and any("delisted" in s for s in col.skipped)


# -- dYdX ----------------------------------------------------------------------------------------


def iso(t: float) -> str:
    return (
        datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{round(t * 1000) % 1000:03d}Z"
    )


async def test_dydx_walks_back_newest_first(fake: tuple[FakeApis, str], http: HttpClient) -> None:
    apis, base = fake
    n = 250
    apis.dydx_rows = [
        {
            "ticker": "BTC-USD",
            "rate": "0.000002375",
            "price": "89993.8",
            "effectiveAtHeight": str(1000 + i),
            "effectiveAt": iso(T0 + i * H + 0.219),
        }
        for i in reversed(range(n))
    ]
    cfg = DydxConfig(base_url=f"{base}/dydx", markets=["BTC-USD"], page_limit=100)
    rows = await DydxCollector(cfg).collect(http, since=T0 + 10 * H)
    assert sorted(o.ts for o in rows) == [T0 + i * H for i in range(10, n)]
    assert rows[0].value == pytest.approx(0.000002375 * 8760)
    assert rows[0].key == "funding.dydx.BTC-USD" and rows[0].source == "dydx:historicalFunding:1h"
    queries = [q for (_, p, q, _) in apis.log if p.startswith("/dydx")]
    assert "effectiveBeforeOrAt" not in queries[0]
    assert queries[1]["effectiveBeforeOrAt"] == iso(T0 + 150 * H + 0.218)
    assert len(queries) == 3


# -- FRED ----------------------------------------------------------------------------------------


def fred_envelope(observations: list[dict[str, str]], **kw: Any) -> dict[str, Any]:
    return {
        "realtime_start": "1776-07-04",
        "realtime_end": "9999-12-31",
        "observation_start": "2024-01-01",
        "observation_end": "9999-12-31",
        "units": "lin",
        "output_type": 1,
        "file_type": "json",
        "order_by": "observation_date",
        "sort_order": "asc",
        "count": len(observations),
        "offset": 0,
        "limit": 100000,
        "observations": observations,
        **kw,
    }


async def test_fred_vintages_missing_dot_and_key_redaction(
    fake: tuple[FakeApis, str], http: HttpClient
) -> None:
    apis, base = fake
    apis.fred_body = fred_envelope(
        [
            {
                "realtime_start": "2024-02-13",
                "realtime_end": "2025-02-11",
                "date": "2024-01-01",
                "value": "308.417",
            },
            {
                "realtime_start": "2025-02-12",
                "realtime_end": "9999-12-31",
                "date": "2024-01-01",
                "value": "309.685",
            },
            {
                "realtime_start": "2024-03-12",
                "realtime_end": "9999-12-31",
                "date": "2024-02-01",
                "value": ".",
            },
            {
                "realtime_start": "1776-07-04",
                "realtime_end": "9999-12-31",
                "date": "2024-03-01",
                "value": "310.0",
            },
        ]
    )
    cfg = FredConfig(
        base_url=f"{base}/fred",
        api_key=SecretStr("abcdef0123456789"),
        series=[FredSeriesConfig(series_id="CPIAUCSL", key="macro.cpi")],
    )
    col = FredCollector(cfg)
    rows = await col.collect(http, since=ts(2024, 1, 1))
    assert [(o.ts, o.value, o.known_at) for o in rows] == [
        (ts(2024, 1, 1), 308.417, ts(2024, 2, 13)),
        (ts(2024, 1, 1), 309.685, ts(2025, 2, 12)),
        (ts(2024, 3, 1), 310.0, ts(2024, 4, 1)),  # never known before its month ended
    ]
    assert all(o.unit == "index" and o.source == "fred:CPIAUCSL" for o in rows)
    assert any("missing ('.')" in s for s in col.skipped)
    q = apis.log[-1][2]
    assert (
        q["realtime_start"] == "1776-07-04"
        and q["series_id"] == "CPIAUCSL"
        and q["observation_start"] == "2024-01-01"
    )


async def test_fred_daily_no_vintages(fake: tuple[FakeApis, str], http: HttpClient) -> None:
    apis, base = fake
    apis.fred_body = fred_envelope(
        [
            {
                "realtime_start": "2025-01-15",
                "realtime_end": "2025-01-15",
                "date": "2025-01-14",
                "value": "5842.91",
            }
        ]
    )
    cfg = FredConfig(
        base_url=f"{base}/fred",
        api_key=SecretStr("k" * 32),
        series=[
            FredSeriesConfig(series_id="SP500", key="close.spx", vintages=False, monthly=False)
        ],
    )
    rows = await FredCollector(cfg).collect(http, since=0)
    day = ts(2025, 1, 14)  # known only once that day has ended
    assert rows == [Observation("close.spx", day, 5842.91, "index", "fred:SP500", day + 86_399)]
    assert "realtime_start" not in apis.log[-1][2]


async def test_fred_vix_closes_are_known_at_the_end_of_their_day(
    fake: tuple[FakeApis, str], http: HttpClient
) -> None:
    apis, base = fake
    apis.fred_body = fred_envelope(
        [
            {
                "realtime_start": "2024-08-06",
                "realtime_end": "2024-08-06",
                "date": "2024-08-05",
                "value": "38.57",
            },
            {
                "realtime_start": "2024-08-06",
                "realtime_end": "2024-08-06",
                "date": "2024-08-06",
                "value": ".",
            },
        ]
    )
    cfg = FredConfig(base_url=f"{base}/fred", api_key=SecretStr("k"))
    vix = next(s for s in cfg.series if s.series_id == "VIXCLS")
    col = FredCollector(cfg.model_copy(update={"series": [vix]}))
    rows = await col.collect(http, since=0)
    day = ts(2024, 8, 5)
    assert rows == [Observation("close.vix", day, 38.57, "index", "fred:VIXCLS", day + 86_399)]
    assert any("missing ('.')" in s for s in col.skipped)
    assert apis.log[-1][2]["series_id"] == "VIXCLS"


async def test_fred_pagination(fake: tuple[FakeApis, str], http: HttpClient) -> None:
    apis, base = fake

    def o(d: str, v: str) -> dict[str, str]:
        return {"realtime_start": "2025-01-15", "realtime_end": "2025-01-15", "date": d, "value": v}

    apis.fred_pages = [
        fred_envelope([o("2024-01-01", "1"), o("2024-01-02", "2")], count=3, limit=2),
        fred_envelope([o("2024-01-03", "3")], count=3, offset=2, limit=2),
    ]
    cfg = FredConfig(
        base_url=f"{base}/fred",
        api_key=SecretStr("k"),
        page_limit=2,
        series=[
            FredSeriesConfig(series_id="SP500", key="close.spx", vintages=False, monthly=False)
        ],
    )
    rows = await FredCollector(cfg).collect(http, since=0)
    assert [r.value for r in rows] == [1.0, 2.0, 3.0]
    assert [q.get("offset") for (_, p, q, _) in apis.log if p.startswith("/fred")] == ["0", "2"]


async def test_fred_error_names_series_and_hides_key(
    fake: tuple[FakeApis, str], http: HttpClient
) -> None:
    apis, base = fake
    apis.fred_status = 400
    apis.fred_body = {
        "error_code": 400,
        "error_message": "Bad Request.  The series does not exist.",
    }
    cfg = FredConfig(
        base_url=f"{base}/fred",
        api_key=SecretStr("SUPERSECRETKEY"),
        series=[FredSeriesConfig(series_id="NOPE", key="macro.x")],
    )
    with pytest.raises(SourceError) as ei:
        await FredCollector(cfg).collect(http)
    assert str(ei.value) == "fred: NOPE: HTTP 400: Bad Request.  The series does not exist."
    assert "SUPERSECRETKEY" not in repr(ei.value.__cause__) + str(ei.value.__cause__)


async def test_fred_without_key_is_config_error(http: HttpClient) -> None:
    with pytest.raises(ConfigError, match=r"fred\.api_key"):
        await FredCollector(FredConfig()).collect(http)


# -- BLS ------------------------------------------------------------------------------------------


async def test_bls_request_not_processed(fake: tuple[FakeApis, str], http: HttpClient) -> None:
    apis, base = fake
    apis.bls_body = {
        "status": "REQUEST_NOT_PROCESSED",
        "responseTime": 0,
        "message": [
            "Request could not be serviced, as the daily threshold for total number of requests "
            "allocated to the user with registration key  has been reached."
        ],
        "Results": {},
    }
    cfg = BlsConfig(enabled=True, base_url=f"{base}/bls", api_key=SecretStr("BLSKEY"))
    with pytest.raises(
        SourceError, match=r"^bls: REQUEST_NOT_PROCESSED: Request could not be serviced"
    ):
        await BlsCollector(cfg, clock=lambda: ts(2025, 6, 1)).collect(http)
    sent = apis.log[-1][3]
    assert (
        sent["registrationkey"] == "BLSKEY"
        and sent["startyear"] == "2023"
        and sent["endyear"] == "2025"
    )


async def test_bls_success_skips_m13_and_sets_known_at(
    fake: tuple[FakeApis, str], http: HttpClient
) -> None:
    apis, base = fake
    apis.bls_body = {
        "status": "REQUEST_SUCCEEDED",
        "responseTime": 50,
        "message": ["No Data Available for Series WPUFD4 Year: 2025"],
        "Results": {
            "series": [
                {
                    "seriesID": "CUSR0000SA0",
                    "data": [
                        {
                            "year": "2024",
                            "period": "M13",
                            "periodName": "Annual",
                            "value": "313.689",
                            "footnotes": [{}],
                        },
                        {
                            "year": "2024",
                            "period": "M12",
                            "periodName": "December",
                            "latest": "true",
                            "value": "317.603",
                            "footnotes": [{}],
                        },
                        {
                            "year": "2024",
                            "period": "M11",
                            "periodName": "November",
                            "value": "-",
                            "footnotes": [{}],
                        },
                    ],
                }
            ]
        },
    }
    col = BlsCollector(
        BlsConfig(enabled=True, base_url=f"{base}/bls"), clock=lambda: ts(2025, 6, 1)
    )
    rows = await col.collect(http)
    # a revised value: known from the fetch (2025-06-01), not from the first release (01-15)
    assert rows == [
        Observation(
            "macro.cpi", ts(2024, 12, 1), 317.603, "index", "bls:CUSR0000SA0", ts(2025, 6, 1)
        )
    ]
    # fetched before the release fallback: known from the fallback (never earlier)
    early = BlsCollector(
        BlsConfig(enabled=True, base_url=f"{base}/bls"), clock=lambda: ts(2025, 1, 10)
    )
    assert [o.known_at for o in await early.collect(http)] == [ts(2025, 1, 15)]
    assert any("No Data Available" in s for s in col.skipped)
    assert any("M11" not in s and "'-'" in s for s in col.skipped)
    assert "registrationkey" not in apis.log[-1][3]


# -- subgraph ------------------------------------------------------------------------------------


async def test_subgraph_reserves(fake: tuple[FakeApis, str], http: HttpClient) -> None:
    apis, base = fake
    ray_5pct = str(5 * 10**25)
    apis.graphql_body = {
        "data": {
            "reserves": [
                {
                    "symbol": "USDC",
                    "name": "USD Coin",
                    "decimals": 6,
                    "underlyingAsset": "0xa0b8",
                    "totalATokenSupply": str(1_000_000 * 10**6),
                    "totalCurrentVariableDebt": str(400_000 * 10**6),
                    "availableLiquidity": str(600_000 * 10**6),
                    "liquidityRate": ray_5pct,
                    "variableBorrowRate": str(8 * 10**25),
                    "utilizationRate": "0.4",
                    "price": {"priceInEth": "100000000"},
                },
                {
                    "symbol": "WETH",
                    "name": "Wrapped Ether",
                    "decimals": 18,
                    "totalATokenSupply": str(10 * 10**18),
                    "totalCurrentVariableDebt": "0",
                    "liquidityRate": "0",
                    "variableBorrowRate": "0",
                    "utilizationRate": "-0.00003772",
                    "price": {"priceInEth": "200000000000"},
                },
                {"symbol": "BAD", "decimals": 6, "totalATokenSupply": "x", "liquidityRate": "1e5"},
            ],
            "_meta": {"block": {"number": 1, "timestamp": T0 + 77}},
        }
    }
    cfg = SubgraphConfig(
        enabled=True, url=f"{base}/graph", api_key=SecretStr("GRAPHKEY"), assets=["USDC"]
    )
    col = SubgraphCollector(cfg)
    got = {o.key: o for o in await col.collect(http)}
    assert got["tvl.aave-v3-subgraph.Ethereum"].value == pytest.approx(600_000 + 20_000)
    sup = got["rate.aave-v3.ethereum.usdc.supply_apy"]
    assert (
        sup.value == pytest.approx(math.exp(0.05) - 1, rel=1e-6)
        and sup.unit == "apy"
        and sup.ts == T0 + 77
    )
    assert got["rate.aave-v3.ethereum.usdc.borrow_apy"].value == pytest.approx(
        math.exp(0.08) - 1, rel=1e-6
    )
    assert got["rate.aave-v3.ethereum.usdc.utilization"].value == 0.4
    assert "rate.aave-v3.ethereum.weth.supply_apy" not in got
    assert any("reserves[2] tvl" in s for s in col.skipped)
    method, _, _, body = apis.log[-1]
    assert (
        method == "POST"
        and "reserves(first: $first)" in body["query"]
        and body["variables"] == {"first": 200}
    )


async def test_subgraph_graphql_error_and_config(
    fake: tuple[FakeApis, str], http: HttpClient
) -> None:
    apis, base = fake
    apis.graphql_body = {"errors": [{"message": "auth error: invalid key GRAPHKEY"}]}
    cfg = SubgraphConfig(enabled=True, url=f"{base}/graph", api_key=SecretStr("GRAPHKEY"))
    with pytest.raises(SourceError, match=r"subgraph: GraphQL error") as ei:
        await SubgraphCollector(cfg).collect(http)
    assert "GRAPHKEY" not in str(ei.value)
    with pytest.raises(ConfigError):
        await SubgraphCollector(SubgraphConfig()).collect(http)


# -- closes ---------------------------------------------------------------------------------------


async def test_closes_candles_paginate_and_drop_today(
    fake: tuple[FakeApis, str], http: HttpClient
) -> None:
    apis, base = fake
    days = 400
    apis.candles = [[T0 + i * DAY, 1.0, 3.0, 2.0, 100.0 + i, 5.0] for i in range(days + 1)]
    now = T0 + days * DAY + 3 * H  # "today" (day 400) is incomplete
    cfg = ClosesConfig(base_url=f"{base}/cb", products=ClosesConfig().products[:1])
    rows = await ClosesCollector(cfg, clock=lambda: now).collect(http, since=T0)
    assert [o.ts for o in rows] == [T0 + i * DAY for i in range(days)]
    # a close is known only when its day ends
    assert rows[5] == Observation(
        "close.btc", T0 + 5 * DAY, 105.0, "usd", "closes:BTC-USD", T0 + 6 * DAY - 1
    )
    reqs = [q for (_, p, q, _) in apis.log if p.startswith("/cb")]
    assert len(reqs) == 2 and reqs[0]["granularity"] == "86400"


# -- config --------------------------------------------------------------------------------------


def test_config_forbids_unknown_keys_and_hides_secrets() -> None:
    with pytest.raises(ValidationError):
        CollectorsConfig.model_validate({"fred": {"apikey": "x"}})
    cfg = CollectorsConfig.model_validate({"fred": {"api_key": "TOPSECRET"}})
    assert "TOPSECRET" not in repr(cfg) and "TOPSECRET" not in json.dumps(
        cfg.model_dump(mode="json")
    )
    assert cfg.fred.api_key is not None and cfg.fred.api_key.get_secret_value() == "TOPSECRET"
    assert [s.key for s in cfg.fred.series] == [
        "macro.cpi",
        "macro.ppi",
        "close.spx",
        "close.vix",
        "close.vix3m",
    ]
    # the daily closes (SP500, VIXCLS, VXVCLS) are current values, known at the end of their day
    assert [(s.series_id, s.vintages, s.monthly) for s in cfg.fred.series[2:]] == [
        ("SP500", False, False),
        ("VIXCLS", False, False),
        ("VXVCLS", False, False),
    ]


def test_build_http_collectors() -> None:
    from agent.collectors import build_http_collectors

    names = [c.name for c in build_http_collectors(CollectorsConfig())]
    # fred needs an API key, bls and subgraph are fallbacks/keyed: off by default
    assert names == ["defillama", "hyperliquid", "dydx", "closes"]
    keyed = CollectorsConfig.model_validate({"fred": {"enabled": True, "api_key": "k"}})
    assert "fred" in [c.name for c in build_http_collectors(keyed)]
