"""Configuration of the HTTP layer and the HTTP collectors.

Every base URL, key, market list and interval lives here (``extra="forbid"``: a typo in a config file
is an error, not a silently ignored key). API keys are ``SecretStr`` so they never print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agent.core.http import RateLimit, RetryPolicy

DAY = 86_400


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(_Model):
    attempts: int = Field(4, ge=1, le=20)
    base_delay_s: float = Field(0.5, ge=0)
    max_delay_s: float = Field(30.0, ge=0)
    max_retry_after_s: float = Field(120.0, ge=0)


class RateLimitConfig(_Model):
    rate_per_s: float = Field(gt=0)
    burst: int = Field(1, ge=1)


def _default_rate_limits() -> dict[str, RateLimitConfig]:
    # Conservative public limits: FRED 120/min, BLS v2 ~50 queries/10s, Hyperliquid 1200 weight/min
    # (fundingHistory costs ~20 weight), DefiLlama free tier is unmetered but asks for restraint.
    return {
        "defillama": RateLimitConfig(rate_per_s=2.0, burst=4),
        "hyperliquid": RateLimitConfig(rate_per_s=0.8, burst=4),
        "dydx": RateLimitConfig(rate_per_s=4.0, burst=4),
        "fred": RateLimitConfig(rate_per_s=1.5, burst=3),
        "bls": RateLimitConfig(rate_per_s=1.0, burst=2),
        "subgraph": RateLimitConfig(rate_per_s=2.0, burst=2),
        "closes": RateLimitConfig(rate_per_s=3.0, burst=3),
    }


class HttpConfig(_Model):
    timeout_s: float = Field(20.0, gt=0)
    user_agent: str = "defi-hedge-agent/0.1"
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0)  # /protocol/aave is ~10 MB
    retry: RetryConfig = RetryConfig()
    rate_limits: dict[str, RateLimitConfig] = Field(default_factory=_default_rate_limits)
    record_path: Path | None = None  # JSONL recording of every exchange (redacted)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(**self.retry.model_dump())

    def limits(self) -> dict[str, RateLimit]:
        return {k: RateLimit(v.rate_per_s, v.burst) for k, v in self.rate_limits.items()}


class DefiLlamaConfig(_Model):
    enabled: bool = True
    base_url: str = "https://api.llama.fi"
    protocols: list[str] = ["aave-v3"]  # slugs for /protocol/{slug}
    # Which chain keys of a protocol's chainTvls to keep; None = every plain chain key.
    protocol_chains: list[str] | None = ["Ethereum"]
    chains: list[str] = ["Ethereum"]  # /v2/historicalChainTvl/{chain} -> tvl.chain.<Chain>
    all_chains_total: bool = True  # /v2/historicalChainTvl -> tvl.chain.total
    interval_s: int = Field(3600, gt=0)
    lookback_s: int = Field(120 * DAY, gt=0)


class HyperliquidConfig(_Model):
    enabled: bool = True
    base_url: str = "https://api.hyperliquid.xyz"
    markets: list[str] = ["BTC", "ETH"]
    page_limit: int = Field(500, gt=0)  # the API returns at most 500 rows per call
    max_pages: int = Field(200, gt=0)
    include_current: bool = True  # also take the live hourly rate from metaAndAssetCtxs
    interval_s: int = Field(3600, gt=0)
    lookback_s: int = Field(35 * DAY, gt=0)


class DydxConfig(_Model):
    enabled: bool = True
    base_url: str = "https://indexer.dydx.trade/v4"
    markets: list[str] = ["BTC-USD", "ETH-USD"]
    page_limit: int = Field(100, gt=0, le=1000)
    max_pages: int = Field(200, gt=0)
    interval_s: int = Field(3600, gt=0)
    lookback_s: int = Field(35 * DAY, gt=0)


class FredSeriesConfig(_Model):
    series_id: str
    key: str
    unit: str = "index"
    # True: ask ALFRED for every vintage (realtime_start=1776-07-04) so each print/revision is kept
    # with the date it became known. False: current values only, known_at=None (daily market data).
    vintages: bool = True
    monthly: bool = True  # monthly: a print can't be known before its reference month has ended


class FredConfig(_Model):
    enabled: bool = False  # needs a (free) API key: enable it together with ``api_key``
    base_url: str = "https://api.stlouisfed.org/fred"
    api_key: SecretStr | None = None
    series: list[FredSeriesConfig] = [
        FredSeriesConfig(series_id="CPIAUCSL", key="macro.cpi"),
        FredSeriesConfig(series_id="PPIFIS", key="macro.ppi"),
        FredSeriesConfig(series_id="SP500", key="close.spx", vintages=False, monthly=False),
        # S9/S10: VIX and VIX3M daily closes (known at the end of their day, like SP500).
        FredSeriesConfig(series_id="VIXCLS", key="close.vix", vintages=False, monthly=False),
        FredSeriesConfig(series_id="VXVCLS", key="close.vix3m", vintages=False, monthly=False),
    ]
    page_limit: int = Field(100_000, gt=0, le=100_000)
    max_pages: int = Field(50, gt=0)
    interval_s: int = Field(6 * 3600, gt=0)
    lookback_s: int = Field(3 * 365 * DAY, gt=0)


class BlsConfig(_Model):
    enabled: bool = False  # FRED carries the same prints; BLS is the fallback
    base_url: str = "https://api.bls.gov/publicAPI/v2"
    api_key: SecretStr | None = None
    series: dict[str, str] = {"CUSR0000SA0": "macro.cpi", "WPUFD4": "macro.ppi"}
    interval_s: int = Field(6 * 3600, gt=0)
    lookback_years: int = Field(3, ge=1, le=20)  # v2 allows 20 years per query with a key


class SubgraphConfig(_Model):
    enabled: bool = False  # needs a The Graph gateway key
    # "{api_key}" in the URL is replaced by the key; otherwise the key goes as a Bearer header.
    # e.g. "https://gateway.thegraph.com/api/subgraphs/id/<Aave V3 subgraph id>"; required if enabled.
    url: str = ""
    api_key: SecretStr | None = None
    venue: str = "aave-v3"
    chain: str = "Ethereum"  # TVL key keeps this spelling; rate keys use it lower-cased
    assets: list[str] = ["USDC", "USDT", "DAI"]  # reserves (symbols) for rate series; [] = all
    price_decimals: int = Field(8, ge=0, le=36)  # v3 USD markets: base currency unit 1e8
    tvl_mode: Literal["net", "supplied"] = "net"  # net = supplied - borrowed (DefiLlama style)
    first: int = Field(200, gt=0, le=1000)
    interval_s: int = Field(900, gt=0)


class ClosesProduct(_Model):
    product: str  # e.g. "BTC-USD"
    key: str  # e.g. "close.btc"
    unit: str = "usd"


class ClosesConfig(_Model):
    """Daily candles from a Coinbase-Exchange-shaped endpoint:
    ``GET {base_url}{path}?granularity=86400&start=ISO&end=ISO`` ->
    ``[[time_s, low, high, open, close, volume], ...]`` (newest first, at most 300 per call)."""

    enabled: bool = True
    base_url: str = "https://api.exchange.coinbase.com"
    path: str = "/products/{product}/candles"
    products: list[ClosesProduct] = [
        ClosesProduct(product="BTC-USD", key="close.btc"),
        ClosesProduct(product="ETH-USD", key="close.eth"),
    ]
    granularity_s: int = Field(DAY, gt=0)
    time_index: int = Field(0, ge=0)
    close_index: int = Field(4, ge=0)
    max_candles_per_request: int = Field(300, gt=0)
    drop_incomplete: bool = True  # the current day's candle is still moving
    interval_s: int = Field(3600, gt=0)
    lookback_s: int = Field(200 * DAY, gt=0)


_ADDR = r"^0x[0-9a-fA-F]{40}$"


class LiquidationsConfig(_Model):
    """Aave V3 ``LiquidationCall`` volume from ``eth_getLogs`` on the configured chain
    (``liquidations.<protocol>.<chain>``, USD per hour). Needs the chain's RPC; the pool comes
    from market discovery."""

    enabled: bool = True
    # How far back a scan without a checkpoint reaches (rounded back to the start of that
    # block's hour): the first scan; later ones (``collect`` and the daemon's ticks) read only
    # blocks after the stored checkpoint. 7200 blocks ~ 1 day on Ethereum.
    lookback_blocks: int = Field(7200, gt=0)
    # Blocks per eth_getLogs request; halved automatically on a provider "range too large" error.
    chunk_blocks: int = Field(2000, gt=0)
    confirmations: int = Field(0, ge=0)  # stay this many blocks behind the head (reorgs)
    backfill_segment_hours: int = Field(24, gt=0)  # hours per resumable backfill step


class CometMarket(_Model):
    address: str = Field(pattern=_ADDR)  # the Comet proxy, e.g. cUSDCv3 0xc3d6...cdc3 on mainnet
    asset: str = Field(min_length=1)  # base asset for the series key, e.g. "usdc"


class CometConfig(_Model):
    """Compound III (Comet) base-asset rates on the configured chain:
    ``rate.compound-v3.<chain>.<asset>.supply_apy|borrow_apy|utilization``."""

    enabled: bool = True  # no markets configured = nothing to read
    markets: list[CometMarket] = []
    protocol: str = "compound-v3"
    # The chain the markets are on (a [[chains]] name; required with several chains).
    chain: str | None = None


class CollectorsConfig(_Model):
    http: HttpConfig = HttpConfig()
    defillama: DefiLlamaConfig = DefiLlamaConfig()
    hyperliquid: HyperliquidConfig = HyperliquidConfig()
    dydx: DydxConfig = DydxConfig()
    fred: FredConfig = FredConfig()
    bls: BlsConfig = BlsConfig()
    subgraph: SubgraphConfig = SubgraphConfig()
    closes: ClosesConfig = ClosesConfig()
    liquidations: LiquidationsConfig = LiquidationsConfig()
    comet: CometConfig = CometConfig()
