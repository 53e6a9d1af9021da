"""Contract test: every real response body in ../shared/samples that a collector of ours reads is
parsed by the matching parser. Skips cleanly when the folder is absent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.collectors.bls import parse_timeseries
from agent.collectors.config import FredSeriesConfig
from agent.collectors.defillama import is_plain_chain, parse_chain_tvl, parse_protocol
from agent.collectors.dydx import parse_historical_funding
from agent.collectors.fred import parse_observations
from agent.collectors.hyperliquid import (
    HOURLY_FROM,
    parse_funding_history,
    parse_meta_and_asset_ctxs,
)
from agent.collectors.subgraph import parse_reserves
from agent.core.errors import MalformedResponse, SourceError

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"
pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"samples folder absent: {SAMPLES}")


def load(name: str) -> Any:
    text = (SAMPLES / name).read_text(encoding="utf-8")
    if name.endswith(".jsonc"):  # drop the // comment lines (the only non-JSON content)
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    return json.loads(text)


def test_defillama_protocol_saved_response() -> None:
    res = parse_protocol(
        load("defillama_protocol_abc-pool_saved_response.json"), "abc-pool", chains=None
    )
    keys = {o.key for o in res.observations}
    assert keys == {"tvl.abc-pool.total", "tvl.abc-pool.Conflux"}
    total = [o for o in res.observations if o.key == "tvl.abc-pool.total"]
    assert len(total) == 670 and not res.skipped
    assert total[-1].ts == 1739124299  # the fractional "now" point is kept
    assert all(o.unit == "usd" and o.value >= 0 for o in res.observations)


def test_defillama_parent_aave_key_filter() -> None:
    body = load("defillama_pro_v2_metrics_tvl_protocol_aave_docs_example.json")
    with pytest.raises(MalformedResponse, match=r"defillama: .*neither 'tvl' nor 'chainTvls'"):
        parse_protocol(body, "aave")  # a different (Pro) endpoint: no series in it
    keys = list(body["currentChainTvls"])
    plain = [k for k in keys if is_plain_chain(k)]
    assert "Ethereum" in plain
    assert not any(k.endswith(("-borrowed", "-staking", "-pool2")) for k in plain)
    assert not {"borrowed", "staking", "pool2"} & set(plain)


def test_defillama_historical_chain_tvl() -> None:
    res = parse_chain_tvl(
        load("defillama_historicalChainTvl_Ethereum_recorded_excerpt.json"), "Ethereum"
    )
    assert [(o.ts, o.value) for o in res.observations] == [
        (1506470400, 0.0),
        (1506556800, 0.0),
        (1786060800, 41655886906.0),
    ]
    assert res.observations[0].key == "tvl.chain.Ethereum"


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("hyperliquid_fundingHistory_BTC_start_end.json", 34),
        ("hyperliquid_fundingHistory_BTC_start_only.json", 1038),
    ],
)
def test_hyperliquid_funding_history(name: str, rows: int) -> None:
    body = load(name)
    res, last_ms = parse_funding_history(body, "BTC")
    assert len(res.observations) == rows and not res.skipped
    assert last_ms == body[-1]["time"]
    for raw, o in zip(body, res.observations, strict=True):
        hourly = o.ts >= HOURLY_FROM
        assert o.source == f"hyperliquid:fundingHistory:{'1h' if hourly else '8h'}"
        assert o.value == pytest.approx(float(raw["fundingRate"]) * (8760 if hourly else 1095))
    if rows == 1038:
        first_hourly = next(o for o in res.observations if o.source.endswith("1h"))
        assert first_hourly.ts == 1686186000 and first_hourly.value == pytest.approx(0.1095)


@pytest.mark.parametrize(
    ("name", "assets"),
    [
        ("hyperliquid_metaAndAssetCtxs_2025-08-22.json", 203),
        ("hyperliquid_metaAndAssetCtxs_dex-empty_2026-02-06.json", 228),
    ],
)
def test_hyperliquid_meta_and_asset_ctxs(name: str, assets: int) -> None:
    body = load(name)
    delisted = sum(1 for u in body[0]["universe"] if u.get("isDelisted"))
    res = parse_meta_and_asset_ctxs(body, ts=1_755_820_800)
    assert res.rows == assets
    assert len(res.observations) == assets - delisted
    assert len(res.skipped) == delisted
    btc = next(o for o in res.observations if o.key == "funding.hyperliquid.BTC")
    assert btc.value == pytest.approx(float(body[1][0]["funding"]) * 8760)


def test_hyperliquid_meta_alone_is_malformed() -> None:
    with pytest.raises(MalformedResponse, match=r"^hyperliquid: "):
        parse_meta_and_asset_ctxs(load("hyperliquid_meta.json"), ts=0)


def test_dydx_ccxt_and_nautilus() -> None:
    res, _ = parse_historical_funding(
        load("dydx_v4_historicalFunding_BTC-USD_ccxt.json"), "BTC-USD"
    )
    (o,) = res.observations
    assert o.ts == 1753765201 and o.value == pytest.approx(0.000176 * 8760)
    wrapped = load("dydx_v4_historicalFunding_BTC-USD_nautilus_wrapped.json")
    res2, oldest = parse_historical_funding(wrapped["result"], "BTC-USD")
    n = len(wrapped["result"]["historicalFunding"])
    assert len(res2.observations) == n and not res2.skipped
    assert res2.observations[0].ts == 1765209600  # 2025-12-08T16:00:00.219Z floored
    assert oldest is not None and oldest == min(o.ts for o in res2.observations) + (oldest % 1)
    with pytest.raises(MalformedResponse):
        parse_historical_funding(wrapped, "BTC-USD")  # the test envelope is not the indexer body


CPI = FredSeriesConfig(series_id="CPILFESL", key="macro.cpi")


def test_fred_observations() -> None:
    res, count = parse_observations(load("fred_series_observations_CPILFESL.json"), CPI)
    assert count == 816 and len(res.observations) == 816 and not res.skipped
    assert {o.known_at for o in res.observations[-12:]} == {1736899200}  # realtime_start 2025-01-15
    # but an old month can't be "known" before it ended: known_at = max(realtime_start, next month)
    assert all(o.known_at is not None and o.known_at >= o.ts for o in res.observations)
    gdp = FredSeriesConfig(series_id="GDP", key="macro.gdp")
    res, count = parse_observations(load("fred_series_observations_GDP_missing_dot.json"), gdp)
    assert count == 315 and len(res.observations) == 311 and len(res.skipped) == 4
    assert all("missing ('.')" in s for s in res.skipped)
    g = FredSeriesConfig(series_id="GNPCA", key="x", vintages=False, monthly=False)
    res, count = parse_observations(
        load("fred_series_observations_GNPCA_limit10_pagination_httptest.json"), g
    )
    assert count == 91 and res.rows == 10 and res.observations[0].known_at is None
    res, count = parse_observations(
        load("fred_series_observations_empty_future_start_httptest.json"), g
    )
    assert count == 0 and res.observations == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("fred_error_400_api_key_not_set.json", "Variable api_key is not set."),
        ("fred_error_400_invalid_series_id.json", "Invalid value for variable series_id."),
        ("fred_error_400_series_id_not_set.json", "Variable series_id has not been set."),
    ],
)
def test_fred_error_bodies(name: str, text: str) -> None:
    with pytest.raises(SourceError) as ei:
        parse_observations(load(name), CPI)
    assert str(ei.value).startswith("fred: CPILFESL: Bad Request.") and text in str(ei.value)


def test_bls_bodies() -> None:
    res = parse_timeseries(
        load("bls_v2_timeseries_success_APU0000701111.json"), {"APU0000701111": "price.flour"}
    )
    assert len(res.observations) == 12 and not res.skipped
    dec = max(res.observations, key=lambda o: o.ts)
    assert (dec.ts, dec.value, dec.known_at) == (
        1669852800,
        0.522,
        1673740800,
    )  # 2022-12 -> known 2023-01-15
    with pytest.raises(
        SourceError, match=r"^bls: REQUEST_NOT_PROCESSED: Request could not be serviced"
    ):
        parse_timeseries(
            load("bls_v2_timeseries_failure_REQUEST_NOT_PROCESSED_daily_threshold.json"), {}
        )


def test_aave_v2_subgraph_reserves() -> None:
    body = load("aave_v2_polygon_subgraph_reserves_readme.jsonc")
    res = parse_reserves(body, venue="aave-v2", chain="Polygon", ts=1_700_000_000)
    n = len(body["data"]["reserves"])
    rates = [o for o in res.observations if o.key.startswith("rate.")]
    assert len(rates) == 3 * n  # supply, borrow, utilization per reserve (keyed by name slug)
    wmatic = {o.key: o.value for o in rates if ".wrapped-matic." in o.key}
    ray = int(body["data"]["reserves"][0]["liquidityRate"]) / 1e27
    assert wmatic["rate.aave-v2.polygon.wrapped-matic.supply_apy"] == pytest.approx(
        (1 + ray / 31536000) ** 31536000 - 1
    )
    assert wmatic["rate.aave-v2.polygon.wrapped-matic.utilization"] == pytest.approx(0.13393932)
    # the README query had no decimals/price: TVL can't be priced, and says why
    assert not any(o.key.startswith("tvl.") for o in res.observations)
    assert len(res.skipped) == n and all("decimals" in s for s in res.skipped)
