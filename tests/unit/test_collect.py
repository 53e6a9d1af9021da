"""``collect_once`` and ``hedge-agent collect``: every HTTP collector against the local API
server (``market_apis`` in tests/conftest.py), values and units checked against hand-computed
numbers; one source failing never stops the others."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tomllib
from pathlib import Path
from typing import Any

import pytest
from app_collect import collect_via_app

from agent.collectors import build_http_collectors
from agent.commands.collect import register
from agent.config import Settings
from agent.store.sqlite import Store

DAY = 86_400
H = 3_600
ROOT = Path(__file__).resolve().parents[2]


def month_start(y: int, m: int) -> int:
    from datetime import UTC, datetime

    return int(datetime(y, m, 1, tzinfo=UTC).timestamp())


def expected_http(apis: Any) -> dict[str, tuple[int, float, str]]:
    return apis.expected()


def stored_summary(path: Path) -> dict[str, tuple[int, float, str]]:
    with sqlite3.connect(path) as c:
        rows = c.execute(
            "SELECT key, COUNT(*), unit FROM observations GROUP BY key, unit ORDER BY key"
        ).fetchall()
        out = {}
        for key, n, unit in rows:
            last = c.execute(
                "SELECT value FROM observations WHERE key = ? ORDER BY ts DESC, available_at DESC LIMIT 1",
                (key,),
            ).fetchone()[0]
            out[key] = (n, last, unit)
    return out


def check_against(
    expected: dict[str, tuple[int, float, str]], got: dict[str, tuple[int, float, str]]
) -> None:
    for key, (n, value, unit) in expected.items():
        assert key in got, key
        assert got[key][0] == n and got[key][2] == unit, (key, got[key])
        assert got[key][1] == pytest.approx(value, rel=1e-12), (key, got[key])


async def test_collect_once_stores_every_http_series(market_apis: Any, tmp_path: Path) -> None:
    settings = Settings(collectors=market_apis.collectors_config())
    path = tmp_path / "c.sqlite"
    with Store(path) as store:
        report = await collect_via_app(settings, store)
    assert report.ok, report.errors
    assert set(report.sources) == {
        "defillama",
        "hyperliquid",
        "dydx",
        "fred",
        "bls",
        "subgraph",
        "closes",
    }
    assert report.skipped == {
        "onchain": "chain.rpc_url is not set",
        "liquidations": "chain.rpc_url is not set",
    }
    expected = expected_http(market_apis)
    assert set(report.keys) == set(expected)
    summary = stored_summary(path)
    assert set(summary) == set(expected)
    check_against(expected, summary)
    assert report.stored == sum(n for n, _, _ in expected.values())
    assert report.counts["hyperliquid"] == 8 and report.counts["fred"] == 6
    assert any("missing ('.')" in p for p in report.sources["fred"].problems)
    # FRED's vintage: known from its realtime_start (the 12th of the month after)
    cpi = [o for o in report.observations if o.key == "macro.cpi" and o.source == "fred:CPIAUCSL"]
    y, m = market_apis.month(3)
    ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
    assert [(o.ts, o.known_at) for o in cpi] == [
        (month_start(y, m), month_start(ny, nm) + 11 * DAY)
    ]
    # A second run rewrites nothing (identical observations), except the live funding minute.
    with Store(path) as store:
        again = await collect_via_app(settings, store)
    assert again.ok and again.stored <= 2


async def test_one_failing_source_does_not_stop_the_others(
    market_apis: Any, tmp_path: Path
) -> None:
    market_apis.fail = {"/dydx", "/fred"}
    cfg = market_apis.collectors_config()
    settings = Settings(collectors=cfg)
    with Store(tmp_path / "c.sqlite") as store:
        report = await collect_via_app(settings, store)
        keys = set(store.keys())
    assert not report.ok
    assert sorted(e.split(":")[0] for e in report.errors) == ["dydx", "fred"]
    assert all("HTTP 500" in e for e in report.errors)
    assert "fred-test-key" not in " ".join(report.errors)
    assert report.sources["hyperliquid"].ok and report.sources["closes"].ok
    assert "funding.hyperliquid.BTC" in keys and "close.btc" in keys
    assert not any(k.startswith("funding.dydx") for k in keys)


async def test_one_failing_part_keeps_what_the_collector_fetched_for_the_others(
    market_apis: Any, tmp_path: Path
) -> None:
    """One series (FRED), coin (Hyperliquid), market (dYdX) or endpoint (DefiLlama) failing is a
    problem naming it; the same collector's other parts are stored."""
    market_apis.fail = {
        "/fred/series/observations:PPIFIS",
        "/hl/info:ETH",
        "/dydx/historicalFunding/ETH-USD",
        "/llama/v2/historicalChainTvl/Ethereum",
    }
    with Store(tmp_path / "c.sqlite") as store:
        report = await collect_via_app(Settings(collectors=market_apis.collectors_config()), store)
        keys = set(store.keys())
        fred_cpi = store.observations("macro.cpi", source="fred:CPIAUCSL")
    assert report.errors == []
    for src, part in (
        ("fred", "PPIFIS: failed"),
        ("hyperliquid", "fundingHistory ETH: failed"),
        ("dydx", "historicalFunding ETH-USD: failed"),
        ("defillama", "historicalChainTvl Ethereum: failed"),
    ):
        assert any(p.startswith(part) and "HTTP 500" in p for p in report.sources[src].problems)
    assert [o.value for o in fred_cpi] == [310.5]  # CPI kept though PPI failed
    assert not any(o.source.startswith("fred") for o in report.observations if o.key == "macro.ppi")
    assert "funding.dydx.BTC-USD" in keys and "funding.dydx.ETH-USD" not in keys
    hl_eth = [o for o in report.observations if o.key == "funding.hyperliquid.ETH"]
    assert len(hl_eth) == 1  # only the live rate (metaAndAssetCtxs); its history failed
    assert report.counts["hyperliquid"] == 4 + 1
    assert "tvl.chain.Ethereum" not in keys and {"tvl.chain.total", "tvl.aave-v3.total"} <= keys
    # every part of a collector failing fails the collector, with the first error
    market_apis.fail = {"/dydx"}
    with Store(tmp_path / "d.sqlite") as store:
        report = await collect_via_app(Settings(collectors=market_apis.collectors_config()), store)
    assert [e.split(":")[0] for e in report.errors] == ["dydx"]


async def test_bls_revisions_are_known_from_their_fetch(market_apis: Any, tmp_path: Path) -> None:
    """BLS answers revised values without a vintage: they must not be visible at a time before
    they were fetched, while FRED's vintage is (``series --known-by``); a re-fetch of the same
    values adds no row."""
    import time

    path = tmp_path / "c.sqlite"
    settings = Settings(collectors=market_apis.collectors_config())
    t0 = int(time.time())
    with Store(path) as store:
        await collect_via_app(settings, store)
        before = store.series("macro.cpi", known_by=t0 - DAY).tolist()
        bls = store.observations("macro.cpi", source="bls:CUSR0000SA0")
    assert before == [310.5]  # FRED's print only; BLS's 311.0 was fetched just now
    assert len(bls) == 1 and bls[0].known_at is not None and bls[0].known_at >= t0
    with Store(path) as store:
        again = await collect_via_app(settings, store)
        assert len(store.observations("macro.cpi", source="bls:CUSR0000SA0")) == 1
    assert again.ok


async def test_fred_without_key_fails_alone(market_apis: Any, tmp_path: Path) -> None:
    cfg = market_apis.collectors_config()
    cfg["fred"] = {"enabled": True, "base_url": f"{market_apis.base}/fred"}
    with Store(tmp_path / "c.sqlite") as store:
        report = await collect_via_app(Settings(collectors=cfg), store)
    assert report.errors == [
        "fred: fred.api_key is not set (https://fred.stlouisfed.org/docs/api/api_key.html)"
    ]
    assert len(report.sources) == 7 and report.sources["closes"].count == 4


async def test_scenario_feed_is_a_source(tmp_path: Path) -> None:
    feed = tmp_path / "feed.json"
    feed.write_text(
        json.dumps(
            {
                "scenario": "stress",
                "source": "scenario:stress",
                "started_at": 1_700_000_000,
                "observations": [
                    {
                        "key": "macro.cpi",
                        "ts": 1_690_000_000,
                        "value": 300.0,
                        "unit": "index",
                        "known_at": 1_695_000_000,
                    },
                ],
            }
        )
    )
    off = {k: {"enabled": False} for k in ("defillama", "hyperliquid", "dydx", "closes")}
    settings = Settings(collectors=off, scenario={"feed": str(feed)})
    with Store(tmp_path / "c.sqlite") as store:
        report = await collect_via_app(settings, store)
        assert report.ok and report.counts == {"scenario": 1}
        assert store.latest("macro.cpi") is not None
        missing = Settings(collectors=off, scenario={"feed": str(tmp_path / "nope.json")})
        bad = await collect_via_app(missing, store)
    assert len(bad.errors) == 1 and bad.errors[0].startswith("scenario: scenario feed")


def test_devnet_config_enables_no_http_collector() -> None:
    data = tomllib.loads((ROOT / "config" / "devnet.toml").read_text())
    data["chain"].pop("deployment")
    settings = Settings(**data)
    assert build_http_collectors(settings.collectors) == []
    assert not settings.collectors.fred.enabled and settings.collectors.liquidations.enabled
    assert build_http_collectors(Settings().collectors)  # defaults keep the keyless APIs on
    assert not Settings().collectors.fred.enabled


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hedge-agent")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def write_config(tmp_path: Path, collectors: dict[str, Any], store: Path) -> Path:
    lines = [f'[agent]\nstore_path = "{store}"\n']

    def section(prefix: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in scalars.items())
        for k, v in d.items():
            if isinstance(v, dict):
                section(f"{prefix}.{k}", v)

    section("collectors", collectors)
    path = tmp_path / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_cli_collect_once_prints_what_it_stored(
    market_apis: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    db = tmp_path / "cli.sqlite"
    config = write_config(tmp_path, market_apis.collectors_config(), db)
    code = await asyncio.to_thread(run_cli, ["collect", "--config", str(config), "--once"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"into {db}" in out and "skipped: chain.rpc_url is not set" in out
    # FRED's "." (a holiday) is listed as a problem row, but is routine: the exit stays 0
    assert "is missing ('.') (the source has no value that day)" in out
    table = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line[:1].isalpha() and "  " in line
    }
    for key, (n, value, unit) in expected_http(market_apis).items():
        row = table[key]
        assert int(row[1]) == n and row[4] == unit, row
        assert float(row[3]) == pytest.approx(value, rel=1e-9), row
    assert table["close.btc"][5] == "closes:BTC-USD"
    assert table["funding.dydx.BTC-USD"][5] == "dydx:historicalFunding:1h"
    check_against(expected_http(market_apis), stored_summary(db))

    market_apis.fail = {"/llama"}
    code = await asyncio.to_thread(run_cli, ["collect", "--config", str(config), "--once"])
    captured = capsys.readouterr()
    assert code == 1 and "error: defillama: HTTP 500" in captured.err
    assert "defillama                 0       0  FAILED" in captured.out
