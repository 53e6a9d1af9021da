"""Aave reserves from a subgraph (GraphQL POST).

Query: ``reserves(first: N) { symbol name decimals totalATokenSupply totalCurrentVariableDebt
availableLiquidity liquidityRate variableBorrowRate utilizationRate price { priceInEth } }`` plus
``_meta { block { timestamp } }``. Every number is a string (BigInt/BigDecimal).

Keys (venue and chain from config, default ``aave-v3`` / ``Ethereum``):

* ``tvl.<venue>-subgraph.<Chain>`` unit "usd": sum over reserves of
  ``net = totalATokenSupply - totalCurrentVariableDebt`` (DefiLlama's lending methodology) or the
  supplied amount (``tvl_mode="supplied"``), in token decimals, times ``price.priceInEth`` (a
  legacy name: the base-currency price, 1e8 = $1 on v3 USD markets). Reserves without a price or
  decimals are left out of the sum with a reason.
* ``rate.<venue>.<chain>.<asset>.supply_apy`` / ``.borrow_apy`` unit "apy" (fraction): ray APR
  (``liquidityRate`` / ``variableBorrowRate``) -> APY with Aave's per-second compounding.
* ``rate.<venue>.<chain>.<asset>.utilization`` unit "ratio" (``utilizationRate``, a fraction).
  ``<chain>`` and ``<asset>`` are lower-cased (asset = ``symbol``, else a slug of ``name``).

ts = the indexed block's timestamp (``_meta``), else collection time; known_at None.
GraphQL ``errors`` -> SourceError with the first message.
"""

from __future__ import annotations

import contextlib
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from agent.collectors import HttpCollector, ParseResult, need, obs
from agent.collectors.config import SubgraphConfig
from agent.core.errors import ConfigError, SourceError
from agent.core.http import HttpClient, expect_dict, expect_list, num, redact, unix_s
from agent.core.models import Observation
from agent.core.units import ray_apr_to_apy

SOURCE = "subgraph"
RAY = 10**27
MAX_RAY_APR = 100 * RAY  # 10,000% APR: anything above is garbage (and would overflow the APY)

QUERY = """
query Reserves($first: Int!) {
  reserves(first: $first) {
    symbol name decimals underlyingAsset
    totalATokenSupply totalCurrentVariableDebt availableLiquidity
    liquidityRate variableBorrowRate utilizationRate
    price { priceInEth }
  }
  _meta { block { number timestamp } }
}
"""


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise ValueError(f"{what} is not an integer string: {v!r}")
    s = str(v).strip()
    if not re.fullmatch(r"-?\d{1,80}", s):
        raise ValueError(f"{what} is not an integer string: {s[:40]!r}")
    return int(s)


def _dec(v: Any, what: str) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise ValueError(f"{what} is not a number: {v!r}")
    try:
        d = Decimal(str(v).strip()[:100])
    except InvalidOperation as e:
        raise ValueError(f"{what} is not a number: {str(v)[:40]!r}") from e
    if not d.is_finite():
        raise ValueError(f"{what} is not finite")
    return d


def asset_id(r: dict[str, Any]) -> str:
    sym = r.get("symbol")
    if isinstance(sym, str) and sym.strip():
        return sym.strip().lower()
    name = r.get("name")
    if isinstance(name, str) and name.strip():
        return re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")
    raise ValueError("reserve has neither symbol nor name")


def parse_reserves(
    body: Any,
    *,
    venue: str,
    chain: str,
    ts: int,
    assets: list[str] | None = None,
    price_decimals: int = 8,
    tvl_mode: str = "net",
) -> ParseResult:
    d = expect_dict(SOURCE, body, "graphql")
    errors = d.get("errors")
    if errors:
        first = errors[0] if isinstance(errors, list) and errors else errors
        msg = first.get("message") if isinstance(first, dict) else first
        raise SourceError(SOURCE, f"GraphQL error: {str(msg)[:300]}")
    data = expect_dict(SOURCE, d.get("data"), "graphql data")
    reserves = expect_list(SOURCE, data.get("reserves"), "graphql data.reserves")
    meta = data.get("_meta")
    if isinstance(meta, dict) and isinstance(meta.get("block"), dict):
        with contextlib.suppress(ValueError):  # else keep the collection time
            ts = unix_s(meta["block"].get("timestamp"))
    wanted = None if not assets else {a.lower() for a in assets}
    source = f"subgraph:{venue}:reserves"
    prefix = f"rate.{venue}.{chain.lower()}"
    out = ParseResult()
    tvl = Decimal(0)
    priced = 0
    for i, r in enumerate(reserves):
        out.rows += 1
        try:
            if not isinstance(r, dict):
                raise ValueError(f"reserve is {type(r).__name__}")
            aid = asset_id(r)
            if wanted is None or aid in wanted:
                liq = _int(need(r, "liquidityRate"), "liquidityRate")
                var = _int(need(r, "variableBorrowRate"), "variableBorrowRate")
                for raw, name in ((liq, "liquidityRate"), (var, "variableBorrowRate")):
                    if not 0 <= raw <= MAX_RAY_APR:
                        raise ValueError(f"{name} {raw} out of range")
                util = num(need(r, "utilizationRate"))
                out.observations += [
                    obs(f"{prefix}.{aid}.supply_apy", ts, ray_apr_to_apy(liq), "apy", source),
                    obs(f"{prefix}.{aid}.borrow_apy", ts, ray_apr_to_apy(var), "apy", source),
                    obs(f"{prefix}.{aid}.utilization", ts, util, "ratio", source),
                ]
        except (ValueError, TypeError, OverflowError) as e:
            out.skipped.append(f"reserves[{i}] rates: {str(e)[:160]}")
        try:
            if not isinstance(r, dict):
                continue
            decimals = _int(need(r, "decimals"), "decimals")
            if not 0 <= decimals <= 36:
                raise ValueError(f"decimals {decimals}")
            supplied = _int(need(r, "totalATokenSupply"), "totalATokenSupply")
            amount = supplied
            if tvl_mode == "net":
                amount -= _int(need(r, "totalCurrentVariableDebt"), "totalCurrentVariableDebt")
            price = need(r, "price")
            price_raw = _dec(need(price, "priceInEth"), "priceInEth")
            tvl += (
                Decimal(max(amount, 0))
                / Decimal(10) ** decimals
                * price_raw
                / Decimal(10) ** price_decimals
            )
            priced += 1
        except (ValueError, TypeError, OverflowError, InvalidOperation) as e:
            out.skipped.append(f"reserves[{i}] tvl: {str(e)[:160]}")
    if priced:
        try:
            out.observations.append(
                obs(f"tvl.{venue}-subgraph.{chain}", ts, float(tvl), "usd", source)
            )
        except (ValueError, OverflowError) as e:
            out.skipped.append(f"tvl: {e}")
    return out


class SubgraphCollector(HttpCollector):
    name = SOURCE

    def __init__(self, config: SubgraphConfig, **kw: Any) -> None:
        super().__init__(**kw)
        self.config = config

    async def collect(self, http: HttpClient, since: int | None = None) -> list[Observation]:
        """A snapshot of the current state (the subgraph has no cheap history): ``since`` only
        filters."""
        self.reset()
        c = self.config
        if not c.url:
            raise ConfigError("subgraph.url is not set")
        secret = c.api_key.get_secret_value() if c.api_key is not None else ""
        url, headers = c.url, {}
        if secret and "{api_key}" in url:
            url = url.replace("{api_key}", secret)
        elif secret:
            headers["Authorization"] = f"Bearer {secret}"
        elif "{api_key}" in url:
            raise ConfigError("subgraph.url needs {api_key} but subgraph.api_key is not set")
        body = await http.post_json(
            SOURCE,
            url,
            {"query": QUERY, "variables": {"first": c.first}},
            headers=headers,
            label="graphql:reserves",
            secrets=(secret,) if secret else (),
        )
        try:
            result = parse_reserves(
                body,
                venue=c.venue,
                chain=c.chain,
                ts=self.now(),
                assets=c.assets or None,
                price_decimals=c.price_decimals,
                tvl_mode=c.tvl_mode,
            )
        except SourceError as e:
            if secret:
                raise type(e)(SOURCE, redact(e.message, (secret,))) from e
            raise
        if since is not None:
            result.observations = [o for o in result.observations if o.ts >= since]
        return self.take(result, "reserves")
