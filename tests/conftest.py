"""Shared fixtures: ``market_apis``, one local aiohttp server answering like every HTTP API the
collectors read (DefiLlama, Hyperliquid, dYdX, FRED, BLS, a GraphQL subgraph, Coinbase-style
candles), with small data sets whose normalised values are easy to compute by hand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.core.rpc_pool import RpcPool
from agent.core.units import ray_apr_to_apy

DAY = 86_400
H = 3_600


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unused without xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test`'s work units (``-n 2 --dist loadscope``): all e2e modules go to one worker
    (they share the session's stressed devnet, set up once), all integration modules to one
    worker (they share the session's deployed devnets), any other module whole (its
    module-scoped fixtures are built once). Units go out in collection order as workers free up,
    so the two long ones start first. (``--dist loadgroup`` marks cannot do this under pytest 9:
    xdist renames ``item._nodeid``, which pytest 9 no longer reads.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Groups(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return next(
                (g for g in ("tests/e2e/", "tests/integration/") if module.startswith(g)), module
            )

    config.option.loadscopereorder = False  # collection order, not "most tests first"
    return Groups(config, log)


@dataclass
class MarketApis:
    """Data anchored to "today" so every collector's default look-back covers it."""

    today: int = field(default_factory=lambda: int(time.time()) // DAY * DAY)
    base: str = ""
    fail: set[str] = field(default_factory=set)  # path (or path:part) prefixes -> HTTP 500
    requests: list[str] = field(default_factory=list)

    # -- data ---------------------------------------------------------------------------------
    @property
    def d1(self) -> int:
        return self.today - 2 * DAY

    @property
    def d2(self) -> int:
        return self.today - DAY

    def llama_protocol(self) -> dict[str, Any]:
        tvl = [
            {"date": self.d1, "totalLiquidityUSD": 1.5e9},
            {"date": self.d2, "totalLiquidityUSD": 1.2e9},
        ]
        eth = [
            {"date": self.d1, "totalLiquidityUSD": 1.0e9},
            {"date": self.d2, "totalLiquidityUSD": 0.8e9},
        ]
        return {
            "name": "Aave V3",
            "tvl": tvl,
            "chainTvls": {
                "Ethereum": {"tvl": eth},
                "Ethereum-borrowed": {"tvl": [{"date": self.d1, "totalLiquidityUSD": 4e8}]},
                "borrowed": {"tvl": [{"date": self.d1, "totalLiquidityUSD": 5e8}]},
            },
        }

    def llama_chain(self, chain: str | None) -> list[dict[str, Any]]:
        scale = 1.0 if chain else 2.0
        return [{"date": self.d1, "tvl": 5.0e10 * scale}, {"date": self.d2, "tvl": 4.5e10 * scale}]

    def hl_history(self, coin: str) -> list[dict[str, Any]]:
        rate = {"BTC": "0.0000125", "ETH": "-0.00005"}[coin]
        return [
            {
                "coin": coin,
                "fundingRate": rate,
                "premium": "0.0",
                "time": (self.d2 + i * H) * 1000 + 12,
            }
            for i in range(3)
        ]

    def hl_meta(self) -> list[Any]:
        ctx = {
            "openInterest": "1",
            "prevDayPx": "1",
            "dayNtlVlm": "1",
            "premium": "0",
            "oraclePx": "1",
            "markPx": "1",
            "midPx": "1",
            "impactPxs": ["1", "1"],
            "dayBaseVlm": "1",
        }
        return [
            {
                "universe": [
                    {"name": "BTC", "szDecimals": 5, "maxLeverage": 40},
                    {"name": "ETH", "szDecimals": 4, "maxLeverage": 25},
                ]
            },
            [{**ctx, "funding": "0.00002"}, {**ctx, "funding": "0.00001"}],
        ]

    def dydx(self, ticker: str) -> dict[str, Any]:
        rows = [
            {
                "ticker": ticker,
                "rate": "0.00001",
                "price": "1",
                "effectiveAtHeight": "2",
                "effectiveAt": datetime.fromtimestamp(self.d2 + H, UTC).strftime(
                    "%Y-%m-%dT%H:%M:%S.000Z"
                ),
            },
            {
                "ticker": ticker,
                "rate": "-0.000002",
                "price": "1",
                "effectiveAtHeight": "1",
                "effectiveAt": datetime.fromtimestamp(self.d2, UTC).strftime(
                    "%Y-%m-%dT%H:%M:%S.000Z"
                ),
            },
        ]
        return {"historicalFunding": rows}

    def month(self, back: int) -> tuple[int, int]:
        d = datetime.fromtimestamp(self.today, UTC)
        m = d.year * 12 + d.month - 1 - back
        return m // 12, m % 12 + 1

    def fred(self, series: str) -> dict[str, Any]:
        if series == "SP500":
            rows = [
                {
                    "realtime_start": "2020-01-01",
                    "realtime_end": "9999-12-31",
                    "date": datetime.fromtimestamp(self.d1, UTC).strftime("%Y-%m-%d"),
                    "value": "5000.25",
                },
                {
                    "realtime_start": "2020-01-01",
                    "realtime_end": "9999-12-31",
                    "date": datetime.fromtimestamp(self.d2, UTC).strftime("%Y-%m-%d"),
                    "value": ".",
                },
            ]
        elif series in ("VIXCLS", "VXVCLS"):
            # VIXCLS has a print on d2 that VXVCLS lacks (as on some market holidays).
            days = {
                "VIXCLS": [(self.d1, "16.50"), (self.d2, "18.00")],
                "VXVCLS": [(self.d1, "17.75")],
            }
            rows = [
                {
                    "realtime_start": "2020-01-01",
                    "realtime_end": "9999-12-31",
                    "date": datetime.fromtimestamp(d, UTC).strftime("%Y-%m-%d"),
                    "value": v,
                }
                for d, v in days[series]
            ]
        else:
            y, m = self.month(3)
            value = {"CPIAUCSL": "310.5", "PPIFIS": "150.25"}[series]
            rows = [
                {
                    "realtime_start": f"{y + (m == 12)}-{m % 12 + 1:02d}-12",
                    "realtime_end": "9999-12-31",
                    "date": f"{y}-{m:02d}-01",
                    "value": value,
                }
            ]
        return {"count": len(rows), "offset": 0, "limit": 100000, "observations": rows}

    def bls(self) -> dict[str, Any]:
        y, m = self.month(2)
        return {
            "status": "REQUEST_SUCCEEDED",
            "responseTime": 10,
            "message": [],
            "Results": {
                "series": [
                    {
                        "seriesID": "CUSR0000SA0",
                        "data": [
                            {
                                "year": str(y),
                                "period": f"M{m:02d}",
                                "value": "311.0",
                                "footnotes": [{}],
                            }
                        ],
                    },
                    {
                        "seriesID": "WPUFD4",
                        "data": [
                            {
                                "year": str(y),
                                "period": f"M{m:02d}",
                                "value": "149.5",
                                "footnotes": [{}],
                            }
                        ],
                    },
                ]
            },
        }

    def graph(self) -> dict[str, Any]:
        ray = 10**27
        return {
            "data": {
                "reserves": [
                    {
                        "symbol": "USDC",
                        "name": "USD Coin",
                        "decimals": 6,
                        "underlyingAsset": "0xa0b8",
                        "totalATokenSupply": str(2_000_000 * 10**6),
                        "totalCurrentVariableDebt": str(1_500_000 * 10**6),
                        "availableLiquidity": str(500_000 * 10**6),
                        "liquidityRate": str(3 * ray // 100),
                        "variableBorrowRate": str(5 * ray // 100),
                        "utilizationRate": "0.75",
                        "price": {"priceInEth": "100000000"},
                    }
                ],
                "_meta": {"block": {"number": 100, "timestamp": self.d2 + 7 * H}},
            }
        }

    def candles(self, product: str) -> list[list[float]]:
        close = {"BTC-USD": 60000.5, "ETH-USD": 3000.25}[product]
        return [[self.d2, 1, 2, 1, close + 1, 10], [self.d1, 1, 2, 1, close, 10]]

    def expected(self) -> dict[str, tuple[int, float, str]]:
        """key -> (rows, value of the latest row, unit), computed by hand from the data above."""
        return {
            "tvl.aave-v3.total": (2, 1.2e9, "usd"),
            "tvl.aave-v3.Ethereum": (2, 0.8e9, "usd"),  # "-borrowed"/"borrowed" keys excluded
            "tvl.chain.Ethereum": (2, 4.5e10, "usd"),
            "tvl.chain.total": (2, 9.0e10, "usd"),
            # 3 settled hours + the live rate; hourly rate x 8760; latest = live metaAndAssetCtxs
            "funding.hyperliquid.BTC": (4, 0.00002 * 8760, "apr"),
            "funding.hyperliquid.ETH": (4, 0.00001 * 8760, "apr"),
            "funding.dydx.BTC-USD": (2, 0.00001 * 8760, "apr"),
            "funding.dydx.ETH-USD": (2, 0.00001 * 8760, "apr"),
            # FRED (3 months back) and BLS (2 months back) prints of the same series
            "macro.cpi": (2, 311.0, "index"),
            "macro.ppi": (2, 149.5, "index"),
            "close.spx": (1, 5000.25, "index"),  # the "." row is skipped
            "close.vix": (2, 18.0, "index"),  # a print VXVCLS lacks is still stored
            "close.vix3m": (1, 17.75, "index"),
            # subgraph: net TVL = (2.0M - 1.5M USDC) x $1.00 (price 1e8)
            "tvl.aave-v3-subgraph.Ethereum": (1, 500_000.0, "usd"),
            "rate.aave-v3.ethereum.usdc.supply_apy": (1, ray_apr_to_apy(3 * 10**25), "apy"),
            "rate.aave-v3.ethereum.usdc.borrow_apy": (1, ray_apr_to_apy(5 * 10**25), "apy"),
            "rate.aave-v3.ethereum.usdc.utilization": (1, 0.75, "ratio"),
            "close.btc": (2, 60001.5, "usd"),
            "close.eth": (2, 3001.25, "usd"),
        }

    # -- routes -------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        p = request.path
        self.requests.append(p)
        body = await request.json() if request.method == "POST" and request.can_read_body else None
        # a part: the path plus the series or coin it asks for ("/fred/series/observations:PPIFIS")
        part = f"{p}:{request.query.get('series_id') or (body or {}).get('coin') or ''}"
        if any(p.startswith(f) or part.startswith(f) for f in self.fail):
            return web.Response(status=500, text="upstream down")
        if p == "/llama/protocol/aave-v3":
            return web.json_response(self.llama_protocol())
        if p.startswith("/llama/v2/historicalChainTvl"):
            rest = p.removeprefix("/llama/v2/historicalChainTvl").strip("/")
            return web.json_response(self.llama_chain(rest or None))
        if p == "/hl/info":
            if body["type"] == "fundingHistory":
                rows = [r for r in self.hl_history(body["coin"]) if r["time"] >= body["startTime"]]
                return web.json_response(rows)
            return web.json_response(self.hl_meta())
        if p.startswith("/dydx/historicalFunding/"):
            if "effectiveBeforeOrAt" in request.query:
                return web.json_response({"historicalFunding": []})
            return web.json_response(self.dydx(p.rsplit("/", 1)[1]))
        if p == "/fred/series/observations":
            return web.json_response(self.fred(request.query["series_id"]))
        if p == "/bls/timeseries/data/":
            return web.json_response(self.bls())
        if p == "/graph":
            return web.json_response(self.graph())
        if p.startswith("/cb/products/"):
            return web.json_response(self.candles(p.split("/")[3]))
        return web.Response(status=404, text="no route")

    def collectors_config(self) -> dict[str, Any]:
        """A ``[collectors]`` section pointing every HTTP collector at this server."""
        b = self.base
        return {
            "http": {"retry": {"attempts": 1}},
            "defillama": {"base_url": f"{b}/llama"},
            "hyperliquid": {"base_url": f"{b}/hl"},
            "dydx": {"base_url": f"{b}/dydx"},
            "fred": {"enabled": True, "base_url": f"{b}/fred", "api_key": "fred-test-key"},
            "bls": {"enabled": True, "base_url": f"{b}/bls"},
            "subgraph": {"enabled": True, "url": f"{b}/graph", "assets": ["USDC"]},
            "closes": {"base_url": f"{b}/cb"},
        }


@pytest.fixture
async def market_apis() -> AsyncIterator[MarketApis]:
    apis = MarketApis()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", apis.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    apis.base = str(server.make_url("")).rstrip("/")
    yield apis
    await server.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """CLI handlers configure structlog to print to the *current* ``sys.stderr`` (pytest's
    capture file, closed after the test): put the previous configuration back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


UpstreamFor = Callable[..., RpcPool]


@pytest.fixture
async def fork_upstream() -> AsyncIterator[UpstreamFor]:
    """``fork_upstream(url)``: a fork simulator's upstream on ``url``, a one-URL pool as App's
    chain pool (the simulator takes its owner's client and never closes it); every pool made
    is closed after the test."""
    made: list[RpcPool] = []

    def make(url: str, *, timeout_s: float = 20.0) -> RpcPool:
        made.append(RpcPool([url], source="fork:upstream", timeout_s=timeout_s))
        return made[-1]

    yield make
    for pool in made:
        await pool.close()


@pytest.fixture
async def refusing_and_silent_rpc() -> AsyncIterator[tuple[str, str, list[str]]]:
    """Two JSON-RPC servers on loopback: the first refuses every method (once the second has
    been asked), the second never answers. Yields their URLs and who was asked, in order."""
    asked: list[str] = []
    slow_asked = asyncio.Event()

    async def refuse(request: web.Request) -> web.Response:
        body = await request.json()
        asked.append("bad")
        await slow_asked.wait()  # fails while the other chain's read is in flight
        error = {"code": -32601, "message": f"{body['method']} is not available"}
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "error": error})

    async def hang(request: web.Request) -> web.Response:
        asked.append("slow")
        slow_asked.set()
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    started = []
    for handler in (refuse, hang):
        app = web.Application()
        app.router.add_post("/", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        started.append(server)
    try:
        bad, slow = (str(s.make_url("/")) for s in started)
        yield bad, slow, asked
    finally:
        for server in started:
            await server.close()
