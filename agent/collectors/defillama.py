"""DefiLlama TVL: ``/protocol/{slug}`` and ``/v2/historicalChainTvl[/{chain}]``.

Keys (unit "usd", ts = DefiLlama's ``date`` in unix seconds, known_at None):

* ``tvl.<slug>.total``    the protocol's top-level ``tvl`` series (borrows excluded for lenders)
* ``tvl.<slug>.<Chain>``  each plain chain of ``chainTvls`` (DefiLlama's spelling, e.g. "Ethereum");
  aggregate/suffixed keys (``borrowed``, ``Ethereum-borrowed``, ``staking``, ``pool2`` ...) are
  excluded, as DefiLlama itself does when summing TVL.
* ``tvl.chain.<Chain>``   ``/v2/historicalChainTvl/{chain}``
* ``tvl.chain.total``     ``/v2/historicalChainTvl`` (all chains; same quantity as the CSV history)

The last point of ``/protocol`` is the live "now" value, not at midnight; it is kept as is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import quote

from agent.collectors import HttpCollector, ParseResult, need, obs, parse_rows
from agent.collectors.config import DefiLlamaConfig
from agent.core.errors import MalformedResponse
from agent.core.http import HttpClient, expect_dict, expect_list, num, unix_s
from agent.core.models import Observation

SOURCE = "defillama"
# chainTvls keys that are not chains, alone or as a "<Chain>-<suffix>" suffix.
NON_CHAIN_KEYS = frozenset(
    {
        "borrowed",
        "staking",
        "pool2",
        "vesting",
        "offers",
        "treasury",
        "doublecounted",
        "liquidstaking",
        "dcandlsoverlap",
        "owntokens",
    }
)


def is_plain_chain(key: str) -> bool:
    low = key.lower()
    if low in NON_CHAIN_KEYS:
        return False
    return not ("-" in low and low.rsplit("-", 1)[1] in NON_CHAIN_KEYS)


def _tvl_points(
    points: Any, key: str, source: str, since: int | None, value_field: str, what: str
) -> ParseResult:
    items = expect_list(SOURCE, points, what)

    def row(p: Any) -> list[Observation]:
        ts = unix_s(need(p, "date"))
        if since is not None and ts < since:
            return []
        v = num(need(p, value_field))
        if v < 0:
            raise ValueError(f"negative TVL {v}")
        return [obs(key, ts, v, "usd", source)]

    return parse_rows(items, what, row)


def parse_protocol(
    body: Any, slug: str, *, chains: list[str] | None = None, since: int | None = None
) -> ParseResult:
    """``/protocol/{slug}`` -> ``tvl.<slug>.total`` and ``tvl.<slug>.<Chain>``."""
    d = expect_dict(SOURCE, body, f"/protocol/{slug}")
    source = f"defillama:/protocol/{slug}"
    out = ParseResult()
    if "tvl" in d:
        out.extend(
            _tvl_points(d["tvl"], f"tvl.{slug}.total", source, since, "totalLiquidityUSD", "tvl")
        )
    chain_tvls = d.get("chainTvls")
    if chain_tvls is not None:
        ct = expect_dict(SOURCE, chain_tvls, f"/protocol/{slug} chainTvls")
        wanted = None if chains is None else set(chains)
        for chain, entry in ct.items():
            if not is_plain_chain(chain) or (wanted is not None and chain not in wanted):
                continue
            if not isinstance(entry, dict) or "tvl" not in entry:
                out.skipped.append(f"chainTvls[{chain!r}]: no tvl series")
                continue
            out.extend(
                _tvl_points(
                    entry["tvl"],
                    f"tvl.{slug}.{chain}",
                    source,
                    since,
                    "totalLiquidityUSD",
                    f"chainTvls[{chain!r}].tvl",
                )
            )
    if "tvl" not in d and chain_tvls is None:
        raise MalformedResponse(
            SOURCE, f"/protocol/{slug}: neither 'tvl' nor 'chainTvls' in the answer"
        )
    return out


def parse_chain_tvl(body: Any, chain: str | None, *, since: int | None = None) -> ParseResult:
    """``/v2/historicalChainTvl[/{chain}]`` -> ``tvl.chain.<Chain>`` / ``tvl.chain.total``."""
    path = "/v2/historicalChainTvl" + (f"/{chain}" if chain else "")
    key = f"tvl.chain.{chain}" if chain else "tvl.chain.total"
    return _tvl_points(body, key, f"defillama:{path}", since, "tvl", path)


class DefiLlamaCollector(HttpCollector):
    name = SOURCE

    def __init__(self, config: DefiLlamaConfig, **kw: Any) -> None:
        super().__init__(**kw)
        self.config = config

    async def protocol(self, http: HttpClient, slug: str, since: int) -> list[Observation]:
        """``/protocol/{slug}``: the whole history in one answer."""
        base = self.config.base_url.rstrip("/")
        body = await http.get_json(SOURCE, f"{base}/protocol/{quote(slug)}", label="/protocol")
        return self.take(
            parse_protocol(body, slug, chains=self.config.protocol_chains, since=since),
            f"/protocol/{slug}",
        )

    async def chain_tvl(self, http: HttpClient, chain: str | None, since: int) -> list[Observation]:
        """``/v2/historicalChainTvl/{chain}``, or all chains for ``chain=None``."""
        base = self.config.base_url.rstrip("/")
        url = f"{base}/v2/historicalChainTvl" + (f"/{quote(chain)}" if chain else "")
        body = await http.get_json(SOURCE, url, label="/v2/historicalChainTvl")
        return self.take(parse_chain_tvl(body, chain, since=since), chain or "all chains")

    async def collect(self, http: HttpClient, since: int | None = None) -> list[Observation]:
        self.reset()
        c = self.config
        start = self.start(since, c.lookback_s)
        parts: list[tuple[str, Callable[[], Awaitable[list[Observation]]]]] = [
            (f"protocol {slug}", partial(self.protocol, http, slug, start)) for slug in c.protocols
        ]
        parts += [
            (f"historicalChainTvl {ch}", partial(self.chain_tvl, http, ch, start))
            for ch in c.chains
        ]
        if c.all_chains_total:
            parts.append(("historicalChainTvl (all)", partial(self.chain_tvl, http, None, start)))
        return await self.each_part(parts)
