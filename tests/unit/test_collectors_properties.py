"""Property tests: whatever JSON arrives, every parser returns a ParseResult of finite
Observations or raises an AgentError naming its source. Never anything else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.collectors import ParseResult
from agent.collectors.bls import parse_timeseries
from agent.collectors.closes import parse_candles
from agent.collectors.config import ClosesProduct, FredSeriesConfig
from agent.collectors.defillama import parse_chain_tvl, parse_protocol
from agent.collectors.dydx import parse_historical_funding
from agent.collectors.fred import parse_observations
from agent.collectors.hyperliquid import parse_funding_history, parse_meta_and_asset_ctxs
from agent.collectors.subgraph import parse_reserves
from agent.core.errors import AgentError, SourceError
from agent.core.http import Request, Response, decode_json

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "0.0000125",
            ".",
            "-",
            "1e400",
            "NaN",
            "2024-01-01",
            "M13",
            "M01",
            "2025-12-08T16:00:00.219Z",
            "1000000000000000000000000000",
            "REQUEST_SUCCEEDED",
            "BTC",
            "BTC-USD",
            "Ethereum",
        ]
    ),
)
FIELDS = [
    "date",
    "tvl",
    "totalLiquidityUSD",
    "chainTvls",
    "coin",
    "fundingRate",
    "time",
    "funding",
    "universe",
    "name",
    "isDelisted",
    "historicalFunding",
    "ticker",
    "rate",
    "effectiveAt",
    "observations",
    "value",
    "realtime_start",
    "count",
    "error_message",
    "status",
    "message",
    "Results",
    "series",
    "seriesID",
    "data",
    "year",
    "period",
    "errors",
    "reserves",
    "symbol",
    "decimals",
    "totalATokenSupply",
    "liquidityRate",
    "variableBorrowRate",
    "utilizationRate",
    "price",
    "priceInEth",
    "_meta",
    "block",
    "timestamp",
    "totalCurrentVariableDebt",
    "Ethereum",
    "Ethereum-borrowed",
]
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)), children, max_size=6
        ),
    ),
    max_leaves=30,
)

SPX = FredSeriesConfig(series_id="SP500", key="close.spx", vintages=False, monthly=False)
CPI = FredSeriesConfig(series_id="CPIAUCSL", key="macro.cpi")

PARSERS: dict[str, tuple[str, Callable[[Any], object]]] = {
    "defillama_protocol": ("defillama", lambda b: parse_protocol(b, "aave-v3", chains=None)),
    "defillama_chain": ("defillama", lambda b: parse_chain_tvl(b, "Ethereum", since=0)),
    "hyperliquid_history": ("hyperliquid", lambda b: parse_funding_history(b, "BTC")[0]),
    "hyperliquid_ctxs": ("hyperliquid", lambda b: parse_meta_and_asset_ctxs(b, ts=1_700_000_000)),
    "dydx": ("dydx", lambda b: parse_historical_funding(b, "BTC-USD")[0]),
    "fred_cpi": ("fred", lambda b: parse_observations(b, CPI)[0]),
    "fred_spx": ("fred", lambda b: parse_observations(b, SPX)[0]),
    "bls": ("bls", lambda b: parse_timeseries(b, {"CUSR0000SA0": "macro.cpi", "X": "macro.x"})),
    "subgraph": (
        "subgraph",
        lambda b: parse_reserves(b, venue="aave-v3", chain="Ethereum", ts=1_700_000_000),
    ),
    "closes": (
        "closes",
        lambda b: parse_candles(b, ClosesProduct(product="BTC-USD", key="close.btc")),
    ),
}


def check(name: str, body: Any) -> None:
    source, fn = PARSERS[name]
    try:
        res = fn(body)
    except AgentError as e:
        assert isinstance(e, SourceError) and e.source == source, e
        return
    assert isinstance(res, ParseResult)
    for o in res.observations:
        assert isinstance(o.value, float) and isinstance(o.ts, int)


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=json_values)
def test_arbitrary_json_never_crashes(name: str, body: Any) -> None:
    check(name, body)


# Shaped bodies reach the row parsers, where the interesting failures are.
row = st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=8)
rows = st.lists(st.one_of(row, scalars), max_size=6)
SHAPED: dict[str, Callable[[Any], Any]] = {
    "defillama_protocol": lambda r: {"tvl": r, "chainTvls": {"Ethereum": {"tvl": r}, "Polygon": r}},
    "defillama_chain": lambda r: r,
    "hyperliquid_history": lambda r: r,
    "hyperliquid_ctxs": lambda r: [{"universe": r}, list(reversed(r))],
    "dydx": lambda r: {"historicalFunding": r},
    "fred_cpi": lambda r: {"observations": r, "count": 3},
    "fred_spx": lambda r: {"observations": r},
    "bls": lambda r: {
        "status": "REQUEST_SUCCEEDED",
        "message": [],
        "Results": {"series": [{"seriesID": "CUSR0000SA0", "data": r}]},
    },
    "subgraph": lambda r: {"data": {"reserves": r, "_meta": {"block": {"timestamp": 5}}}},
    "closes": lambda r: [list(x.values()) if isinstance(x, dict) else x for x in r],
}


@pytest.mark.parametrize("name", sorted(SHAPED))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(r=rows)
def test_shaped_rows_never_crash(name: str, r: Any) -> None:
    check(name, SHAPED[name](r))


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200), ctype=st.sampled_from(["application/json", "text/html", ""]))
def test_decode_json_only_malformed(body: bytes, ctype: str) -> None:
    req = Request(source="s", method="GET", url="http://h/p?api_key=SECRET")
    try:
        decode_json(req, Response(200, {"content-type": ctype}, body, req.url))
    except AgentError as e:
        assert isinstance(e, SourceError) and e.source == "s" and "SECRET" not in str(e)
