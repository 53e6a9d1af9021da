"""Backfill is resumable: an interrupted-and-restarted run ends with exactly the rows of an
uninterrupted one. Against a real local aiohttp server that pages Hyperliquid ``fundingHistory``
(500 rows a call, ``startTime`` cursor) and FRED ``series/observations`` (``limit``/``offset``)."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from app_collect import backfill_via_app

from agent.app import App
from agent.collectors.config import CollectorsConfig
from agent.config import Settings
from agent.core.http import HttpClient, RetryPolicy
from agent.pipeline.backfill import Progress, backfill_chains
from agent.store.sqlite import Store

H = 3600
T0 = 1_700_000_000 // H * H  # 2023-11-14 22:00 UTC: Hyperliquid is hourly
SINCE = T0 - 10 * 86_400
FRED_LIMIT = 40
DAILY_BASE = {"SP500": 2000, "VIXCLS": 12, "VXVCLS": 14}  # daily closes (value = base + i + 0.5)


def fred_rows(series: str, n: int) -> list[dict[str, str]]:
    start = datetime(2015, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        if series in DAILY_BASE:
            d = (start + timedelta(days=i)).strftime("%Y-%m-%d")
            rows.append(
                {
                    "realtime_start": "2025-01-02",
                    "realtime_end": "2025-01-02",
                    "date": d,
                    "value": f"{DAILY_BASE[series] + i}.5",
                }
            )
        else:
            y, m = 2015 + i // 12, i % 12 + 1
            d = f"{y}-{m:02d}-01"
            # first print, then a revision a month later: two vintages per month
            rel = f"{y + (m == 12)}-{m % 12 + 1:02d}-13"
            value = f"{230 + i * 0.25:.3f}" if i % 17 else "."  # some missing values
            rows.append({"realtime_start": rel, "realtime_end": rel, "date": d, "value": value})
    return rows


class Apis:
    def __init__(self) -> None:
        self.hl = {
            "BTC": [
                {
                    "coin": "BTC",
                    "fundingRate": f"{(i % 13 - 6) * 1e-6:.7f}",
                    "premium": "0",
                    "time": (T0 + i * H) * 1000 + 37,
                }
                for i in range(1234)
            ],
            "ETH": [
                {
                    "coin": "ETH",
                    "fundingRate": f"{(i % 7) * 2e-6:.7f}",
                    "premium": "0",
                    "time": (T0 + i * H) * 1000 + 5,
                }
                for i in range(777)
            ],
        }
        self.fred = {
            "CPIAUCSL": fred_rows("CPIAUCSL", 100),
            "PPIFIS": fred_rows("PPIFIS", 55),
            "SP500": fred_rows("SP500", 90),
            "VIXCLS": fred_rows("VIXCLS", 50),
            "VXVCLS": fred_rows("VXVCLS", 41),
        }
        self.requests = 0
        self.reached = asyncio.Event()
        self.stop_after: int | None = None

    def count(self) -> None:
        self.requests += 1
        if self.stop_after is not None and self.requests >= self.stop_after:
            self.reached.set()

    async def hl_info(self, request: web.Request) -> web.Response:
        self.count()
        body = await request.json()
        assert body["type"] == "fundingHistory"
        rows = [r for r in self.hl[body["coin"]] if r["time"] >= body["startTime"]]
        return web.json_response(rows[:500])

    async def fred_obs(self, request: web.Request) -> web.Response:
        self.count()
        q = request.query
        assert q["api_key"] == "test-key" and q["file_type"] == "json"
        rows = self.fred[q["series_id"]]
        off, limit = int(q["offset"]), int(q["limit"])
        return web.json_response(
            {
                "count": len(rows),
                "offset": off,
                "limit": limit,
                "observations": rows[off : off + limit],
            }
        )


@pytest.fixture
async def apis() -> AsyncIterator[tuple[Apis, str]]:
    a = Apis()
    app = web.Application()
    app.router.add_post("/hl/info", a.hl_info)
    app.router.add_get("/fred/series/observations", a.fred_obs)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield a, str(server.make_url("")).rstrip("/")
    await server.close()


def settings_for(base: str) -> Settings:
    collectors = CollectorsConfig.model_validate(
        {
            "defillama": {"enabled": False},
            "dydx": {"enabled": False},
            "closes": {"enabled": False},
            "hyperliquid": {
                "base_url": f"{base}/hl",
                "markets": ["BTC", "ETH"],
                "include_current": False,
            },
            "fred": {
                "enabled": True,
                "base_url": f"{base}/fred",
                "api_key": "test-key",
                "page_limit": FRED_LIMIT,
            },
        }
    )
    return Settings(collectors=collectors)


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    async with HttpClient(retry=RetryPolicy(attempts=1)) as c:
        yield c


def rows(path: Path) -> list[tuple[Any, ...]]:
    """Every stored row, identity and value (not ``ingested_at``/``id``)."""
    with sqlite3.connect(path) as c:
        return c.execute(
            "SELECT key, ts, source, available_at, known_at, value, unit FROM observations "
            "ORDER BY key, ts, source, available_at"
        ).fetchall()


TASKS = {
    "hyperliquid:BTC",
    "hyperliquid:ETH",
    "fred:CPIAUCSL",
    "fred:PPIFIS",
    "fred:SP500",
    "fred:VIXCLS",
    "fred:VXVCLS",
}


async def full_run(settings: Settings, http: HttpClient, path: Path) -> list[tuple[Any, ...]]:
    with Store(path) as store:
        report = await backfill_via_app(settings, store, since=SINCE, http=http)
    assert report.errors == [] and {n for n, t in report.tasks.items() if t.done} == TASKS
    return rows(path)


async def test_uninterrupted_backfill_loads_every_page(
    apis: tuple[Apis, str], http: HttpClient, tmp_path: Path
) -> None:
    a, base = apis
    settings = settings_for(base)
    out = io.StringIO()
    with Store(tmp_path / "a.sqlite") as store:
        report = await backfill_via_app(
            settings, store, since=SINCE, http=http, progress=Progress(out, min_interval_s=0)
        )
        cps = {c.name: c for c in store.checkpoints()}
    # pages: BTC 1234 rows -> 3 calls, ETH 777 -> 2, FRED 100/55/90/50/41 rows at 40 a page
    # -> 3+2+3+2+2
    assert a.requests == 3 + 2 + 3 + 2 + 3 + 2 + 2
    assert {n: t.steps for n, t in report.tasks.items() if n in TASKS} == {
        "hyperliquid:BTC": 3,
        "hyperliquid:ETH": 2,
        "fred:CPIAUCSL": 3,
        "fred:PPIFIS": 2,
        "fred:SP500": 3,
        "fred:VIXCLS": 2,
        "fred:VXVCLS": 2,
    }
    assert set(cps) == TASKS and all(c.done and c.since == SINCE for c in cps.values())
    assert cps["hyperliquid:BTC"].rows == 1234 and cps["hyperliquid:BTC"].steps == 3
    stored = rows(tmp_path / "a.sqlite")
    by_key: dict[str, int] = {}
    for r in stored:
        by_key[r[0]] = by_key.get(r[0], 0) + 1
    missing_cpi = sum(1 for i in range(100) if i % 17 == 0)
    assert by_key == {
        "funding.hyperliquid.BTC": 1234,
        "funding.hyperliquid.ETH": 777,
        "macro.cpi": 100 - missing_cpi,
        "macro.ppi": 55 - sum(1 for i in range(55) if i % 17 == 0),
        "close.spx": 90,
        "close.vix": 50,
        "close.vix3m": 41,
    }
    # hand-checked rows: hourly funding x 8760 (APR), ts floored from ms; CPI known_at = release
    btc1 = next(r for r in stored if r[0] == "funding.hyperliquid.BTC" and r[1] == T0 + H)
    assert btc1[2:] == ("hyperliquid:fundingHistory:1h", T0 + H, None, -5e-6 * 8760, "apr")
    cpi = next(
        r
        for r in stored
        if r[0] == "macro.cpi" and r[1] == int(datetime(2015, 2, 1, tzinfo=UTC).timestamp())
    )
    assert cpi[2:] == (
        "fred:CPIAUCSL",
        int(datetime(2015, 3, 13, tzinfo=UTC).timestamp()),
        int(datetime(2015, 3, 13, tzinfo=UTC).timestamp()),
        230.25,
        "index",
    )
    # VIX closes: daily, known once their day has ended (like SP500)
    vix = next(
        r
        for r in stored
        if r[0] == "close.vix3m" and r[1] == int(datetime(2015, 1, 3, tzinfo=UTC).timestamp())
    )
    assert vix[2:] == ("fred:VXVCLS", vix[1] + 86_399, vix[1] + 86_399, 16.5, "index")
    text = out.getvalue()
    assert "hyperliquid:BTC: step 3" in text and "[8/8 tasks" in text.splitlines()[-1]
    assert (
        report.tasks["onchain:devnet"].skipped == "chain.rpc_url / pool_addresses_provider not set"
    )

    # A finished backfill is not fetched again; --restart does.
    before = a.requests
    with Store(tmp_path / "a.sqlite") as store:
        again = await backfill_via_app(settings, store, since=SINCE, http=http)
        assert a.requests == before and all(t.skipped for t in again.tasks.values())
        redo = await backfill_via_app(settings, store, since=SINCE, http=http, restart=True)
        assert a.requests == 2 * before and redo.rows == report.rows
    assert rows(tmp_path / "a.sqlite") == stored


class Killed(Exception):
    """Stands in for the process dying between two steps."""


@pytest.mark.parametrize("kill_after", [1, 4, 9])
async def test_interrupted_backfill_resumes_to_identical_rows(
    apis: tuple[Apis, str], http: HttpClient, tmp_path: Path, kill_after: int
) -> None:
    a, base = apis
    settings = settings_for(base)
    reference = await full_run(settings, http, tmp_path / "ref.sqlite")
    full_requests = a.requests

    steps = 0

    def hook(task: str, step: int) -> None:
        nonlocal steps
        steps += 1
        if steps == kill_after:
            raise Killed(f"killed after {task} step {step}")

    path = tmp_path / "resumed.sqlite"
    a.requests = 0
    with Store(path) as store, pytest.raises(Killed):
        await backfill_via_app(settings, store, since=SINCE, http=http, on_step=hook)
    partial = rows(path)
    assert 0 < len(partial) < len(reference)
    with Store(path) as store:
        cps = store.checkpoints()
        # the killed step was stored with its checkpoint (concurrent tasks may have stored more)
        assert sum(c.steps for c in cps) >= kill_after
        report = await backfill_via_app(settings, store, since=SINCE, http=http)
    assert report.errors == []
    assert any(t.resumed_from is not None or t.skipped for t in report.tasks.values())
    assert rows(path) == reference
    # the restart fetched only what was missing (pages in flight when killed are fetched again)
    assert a.requests < full_requests + 4


async def test_cancelled_backfill_resumes_to_identical_rows(
    apis: tuple[Apis, str], http: HttpClient, tmp_path: Path
) -> None:
    a, base = apis
    settings = settings_for(base)
    reference = await full_run(settings, http, tmp_path / "ref.sqlite")

    path = tmp_path / "cancelled.sqlite"
    a.requests, a.stop_after = 0, 6
    with Store(path) as store:
        task = asyncio.create_task(backfill_via_app(settings, store, since=SINCE, http=http))
        await a.reached.wait()
        task.cancel()  # like Ctrl-C: mid-request, mid-page
        with pytest.raises(asyncio.CancelledError):
            await task
        done_steps = sum(c.steps for c in store.checkpoints())
        assert 0 < done_steps < 17
        assert rows(path) != reference
        a.stop_after = None
        report = await backfill_via_app(settings, store, since=SINCE, http=http)
    assert report.errors == []
    assert rows(path) == reference


async def test_a_failing_source_keeps_its_checkpoint_and_others_finish(
    apis: tuple[Apis, str], http: HttpClient, tmp_path: Path
) -> None:
    a, base = apis
    settings = settings_for(base)
    good = a.fred["PPIFIS"]
    del a.fred["PPIFIS"]  # the server now fails PPIFIS (KeyError -> HTTP 500)
    path = tmp_path / "f.sqlite"
    with Store(path) as store:
        report = await backfill_via_app(settings, store, since=SINCE, http=http)
        assert [e.split(":")[0:2] for e in report.errors] == [["fred", "PPIFIS"]]
        assert "HTTP 500" in report.errors[0]
        assert {n for n, t in report.tasks.items() if t.done} == TASKS - {"fred:PPIFIS"}
        a.fred["PPIFIS"] = good
        again = await backfill_via_app(settings, store, since=SINCE, http=http)
        assert again.errors == [] and again.tasks["fred:PPIFIS"].done
        assert {n for n, t in again.tasks.items() if t.skipped} == TASKS - {"fred:PPIFIS"} | {
            "onchain:devnet"
        }
    assert rows(path) == await full_run(settings, http, tmp_path / "ref.sqlite")


async def test_another_since_restarts_the_task(
    apis: tuple[Apis, str], http: HttpClient, tmp_path: Path
) -> None:
    a, base = apis
    settings = settings_for(base)
    with Store(tmp_path / "s.sqlite") as store:
        await backfill_via_app(settings, store, since=SINCE, http=http)
        first = a.requests
        later = await backfill_via_app(settings, store, since=SINCE + 86_400, http=http)
        assert a.requests == 2 * first and not any(later.tasks[n].skipped for n in TASKS)
        assert {c.since for c in store.checkpoints()} == {SINCE + 86_400}


SAFE = "0x" + "5a" * 20


async def test_every_chain_is_backfilled_and_the_http_history_once(
    apis: tuple[Apis, str], http: HttpClient, tmp_path: Path
) -> None:
    """``hedge-agent backfill`` with two chains (``backfill_chains``): the HTTP history is
    loaded once, with the first chain (each page asked for once), and each chain has its own
    on-chain task (skipped here: neither chain has an RPC URL), the second one's named apart."""
    a, base = apis
    reference = await full_run(settings_for(base), http, tmp_path / "single.sqlite")
    once = a.requests
    two = Settings(
        collectors=settings_for(base).collectors,
        chains=[{"name": "one", "chain_id": 1}, {"name": "two", "chain_id": 10}],
        positions=[{"chain": "one", "account": SAFE}, {"chain": "two", "account": SAFE}],
    )
    path = tmp_path / "two.sqlite"
    async with App(two) as app:
        chains = app.parts.chains
        with Store(path) as store:
            report = await backfill_chains(
                two, store, chains, since=SINCE, rpcs={c.name: None for c in chains}, http=http
            )
    assert report.errors == [] and a.requests == 2 * once  # the HTTP history once
    assert {n for n, t in report.tasks.items() if t.done} == TASKS
    onchain = {n: t.skipped is not None for n, t in report.tasks.items() if "onchain" in n}
    assert onchain == {"onchain:one": True, "onchain:two:two": True}
    assert rows(path) == reference


async def test_a_chain_failing_the_start_up_backfill_leaves_no_other_chain_running(
    tmp_path: Path, refusing_and_silent_rpc: tuple[str, str, list[str]]
) -> None:
    """The daemon's start-up backfill reads every chain at once; when one chain fails it, the
    others are cancelled and awaited before the error is raised (never left running against the
    store and the clients the daemon is about to close). Real JSON-RPC servers on loopback: one
    refuses ``eth_blockNumber``, the other never answers."""
    from agent.core.errors import RpcError
    from agent.core.market import MarketLayout
    from agent.pipeline.backfill import startup_backfill

    bad, slow, asked = refusing_and_silent_rpc
    settings = Settings(
        agent={"store_path": str(tmp_path / "a.sqlite"), "journal_path": str(tmp_path / "j.jsonl")},
        chains=[
            {"name": "bad", "chain_id": 1, "rpc_url": bad},
            {"name": "slow", "chain_id": 10, "rpc_url": slow},
        ],
        positions=[{"chain": "bad", "account": SAFE}, {"chain": "slow", "account": SAFE}],
    )
    pool = "0x" + "11" * 20

    def running() -> list[asyncio.Task[Any]]:
        return [
            t
            for t in asyncio.all_tasks()
            if not t.done() and "startup_backfill" in t.get_coro().__qualname__  # type: ignore[union-attr]
        ]

    async with App(settings) as app:
        chains = app.parts.chains
        layouts = {
            c.name: MarketLayout(c.name, "aave-v3", pool, pool, pool, (), (), {}, {}, {})
            for c in chains
        }
        with pytest.raises(RpcError, match="eth_blockNumber is not available"):
            await startup_backfill(
                settings,
                app.store,
                chains,
                rpcs={c.name: app.rpc(c) for c in chains},
                layouts=layouts,
            )
        assert sorted(asked) == ["bad", "slow"]  # both chains were being read
        assert running() == []  # the slow chain's read was cancelled, not left behind
