"""Run every configured collector once and store what they return.

Sources (each named in the report; one failing never stops the others):

* ``onchain``      the chain snapshot: one Multicall3 ``eth_call`` (``discover`` once, then
                   ``read_snapshot`` / ``snapshot_observations``)
* ``liquidations`` Aave ``LiquidationCall`` volume per complete hour since the stored
                   checkpoint (the first scan: the last
                   ``collectors.liquidations.lookback_blocks`` blocks)
* ``comet``        Compound III rates of ``collectors.comet.markets`` (one ``eth_call``)
* ``scenario``     the devnet scenario feed, when ``scenario.feed`` is set
* every enabled HTTP collector of ``collectors`` (``defillama``, ``hyperliquid``, ``dydx``,
  ``fred``, ``bls``, ``subgraph``, ``closes``)

On-chain sources need the chain's RPC client (from the composition root; None when the chain
has no ``rpc_url``): without one they are listed as skipped, not failed. The observations of
each source are stored as soon as it finishes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from agent.collectors import HttpCollector, build_http_collectors
from agent.collectors.comet import comet_calls, comet_observations
from agent.collectors.config import CollectorsConfig, CometConfig
from agent.collectors.onchain import (
    ChainConfig,
    discover,
    read_snapshot,
    snapshot_observations,
)
from agent.collectors.scenario import load_scenario_feed
from agent.config import Settings
from agent.core.abi import load_abi
from agent.core.errors import AgentError, ConfigError, MalformedResponse
from agent.core.http import HttpClient
from agent.core.market import ChainSnapshot, MarketLayout
from agent.core.models import Observation
from agent.core.multicall import Call, multicall
from agent.core.rpc import RpcClient
from agent.core.rpc_pool import RpcPool
from agent.ops.incremental import collect_new_liquidations
from agent.pipeline.parts import Chain, lists_comet
from agent.store.sqlite import Store

log = structlog.get_logger(__name__)

MAX_PROBLEMS = 50


@dataclass
class SourceReport:
    source: str
    observations: list[Observation] = field(default_factory=list)
    stored: int = 0  # rows inserted or changed
    errors: list[str] = field(default_factory=list)  # the source failed (message names it)
    problems: list[str] = field(default_factory=list)  # partial: skipped rows, failed calls
    elapsed_s: float = 0.0

    @property
    def count(self) -> int:
        return len(self.observations)

    @property
    def keys(self) -> list[str]:
        return sorted({o.key for o in self.observations})

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class CollectReport:
    sources: dict[str, SourceReport] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # source -> why it did not run
    elapsed_s: float = 0.0
    snapshot: ChainSnapshot | None = None  # the on-chain read, when it succeeded

    @property
    def errors(self) -> list[str]:
        return [e for r in self.sources.values() for e in r.errors]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def counts(self) -> dict[str, int]:
        return {name: r.count for name, r in self.sources.items()}

    @property
    def stored(self) -> int:
        return sum(r.stored for r in self.sources.values())

    @property
    def keys(self) -> list[str]:
        return sorted({k for r in self.sources.values() for k in r.keys})

    @property
    def observations(self) -> list[Observation]:
        return [o for r in self.sources.values() for o in r.observations]


Produce = Callable[[], Awaitable[tuple[list[Observation], list[str]]]]


def _message(source: str, exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, AgentError) else f"{type(exc).__name__}: {exc}"
    return text if text.startswith(f"{source}:") else f"{source}: {text}"


async def _run(report: CollectReport, store: Store, source: str, produce: Produce) -> None:
    """Run one source, store its observations, record the outcome; never raises (except
    cancellation)."""
    r = report.sources.setdefault(source, SourceReport(source))
    # The scenario's made-up data is labelled on every line that reports it.
    tag = {"data_origin": "scenario"} if source == "scenario" else {}
    t0 = time.perf_counter()
    try:
        observations, problems = await produce()
        r.observations = observations
        r.problems = problems[:MAX_PROBLEMS]
        r.stored = await asyncio.to_thread(store.upsert, observations)
    except Exception as exc:  # one source must never stop the others
        r.errors.append(_message(source, exc))
        log.warning("collect.source_failed", source=source, error=r.errors[-1], **tag)
    finally:
        r.elapsed_s = time.perf_counter() - t0
    for p in r.problems:
        log.warning("collect.problem", source=source, problem=p, **tag)
    log.info("collect.source", source=source, observations=r.count, stored=r.stored, ok=r.ok, **tag)


async def comet_collect(
    rpc: RpcClient, chain: ChainConfig, cfg: CometConfig, *, block: int | str = "latest"
) -> tuple[list[Observation], list[str]]:
    """Every configured Comet market in one Multicall3 ``eth_call``. A market whose reads fail
    is a problem naming it; if none could be read, the source fails."""
    mc = load_abi("Multicall3")
    calls = [
        Call("block", chain.multicall3, mc, "getBlockNumber"),
        Call("time", chain.multicall3, mc, "getCurrentBlockTimestamp"),
    ]
    for i, m in enumerate(cfg.markets):
        calls += comet_calls(m.address, f"comet{i}")
    out, failures = await multicall(rpc, calls, block=block, address=chain.multicall3)
    if "block" not in out or "time" not in out:
        raise MalformedResponse(rpc.source, f"Multicall3 at {chain.multicall3} gave no block/time")
    block_number, ts = int(out["block"][0]), int(out["time"][0])
    source = f"onchain:{chain.name}:block={block_number}"
    reasons: dict[str, list[str]] = {}
    for f in failures:
        reasons.setdefault(f.tag.split(":")[0], []).append(f.reason)
    obs: list[Observation] = []
    problems: list[str] = []
    for i, m in enumerate(cfg.markets):
        try:
            obs += comet_observations(
                out,
                f"comet{i}",
                chain=chain.name,
                asset=m.asset,
                ts=ts,
                source=source,
                protocol=cfg.protocol,
            )
        except (KeyError, ValueError, TypeError) as exc:
            why = "; ".join(reasons.get(f"comet{i}", [])[:2]) or f"{type(exc).__name__}: {exc}"
            problems.append(f"Comet {m.asset} at {m.address}: {why}")
    if cfg.markets and not obs:
        raise MalformedResponse("comet", f"{chain.name}: " + "; ".join(problems))
    return obs, problems


async def collect_once(
    settings: Settings,
    store: Store,
    *,
    chain: Chain,
    http: HttpClient,
    rpc: RpcClient | None,
    shared: bool = True,
    layout: MarketLayout | None = None,
    due: Callable[[HttpCollector], bool] | None = None,
) -> CollectReport:
    """Run every configured collector once, store the observations, report per source.

    ``hedge-agent collect`` and the daemon's tick both collect through here, once per chain
    (``chain``, with its ``rpc``: None when it has no URL, its sources are then skipped): its
    snapshot, liquidation logs and, on the chain that lists them, the Comet markets; the
    chain-independent sources (HTTP APIs, the scenario feed) only when ``shared``. The clients
    come from the composition root. The daemon passes its market ``layout`` (discovered once at
    start-up) and ``due``, which picks the HTTP collectors whose interval has passed;
    ``report.snapshot`` is the chain snapshot the tick evaluates."""
    t0 = time.perf_counter()
    report = CollectReport()
    cfg = settings.collectors
    if not lists_comet(settings, chain):  # the Comet markets are read on the chain they are on
        off = {"enabled": False}
        cfg = cfg.model_copy(update={"comet": cfg.comet.model_copy(update=off)})
    http_collectors = (
        [c for c in build_http_collectors(cfg) if due is None or due(c)] if shared else []
    )
    jobs: list[Awaitable[None]] = []
    if rpc is not None:
        jobs.append(_chain_sources(report, store, chain.config, cfg, rpc, layout))
    else:
        why = "chain.rpc_url is not set"
        report.skipped["onchain"] = why
        if cfg.liquidations.enabled:
            report.skipped["liquidations"] = why
        if cfg.comet.enabled and cfg.comet.markets:
            report.skipped["comet"] = why
    if settings.scenario.feed and shared:
        feed = settings.scenario.feed

        async def scenario() -> tuple[list[Observation], list[str]]:
            return await asyncio.to_thread(load_scenario_feed, feed), []

        jobs.append(_run(report, store, "scenario", scenario))
    for collector in http_collectors:
        jobs.append(_run(report, store, collector.name, _http_source(collector, http)))
    await asyncio.gather(*jobs)
    report.elapsed_s = time.perf_counter() - t0
    log.info(
        "collect.done",
        sources=report.counts,
        stored=report.stored,
        errors=len(report.errors),
        skipped=sorted(report.skipped),
        elapsed_s=round(report.elapsed_s, 3),
    )
    return report


async def collect_chains(
    settings: Settings,
    store: Store,
    chains: Sequence[Chain],
    *,
    rpcs: Mapping[str, RpcClient | None],
    http: HttpClient,
    layouts: Mapping[str, MarketLayout] | None = None,
    due: Callable[[HttpCollector], bool] | None = None,
    check_heads: bool = False,
) -> dict[str, CollectReport]:
    """The one fan-out over chains (the daemon's tick and ``hedge-agent collect``): every
    chain collected at once through :func:`collect_once`, each on its own RPC (``rpcs`` by
    chain name; None: no URL, its sources are skipped) and with its discovered layout when
    given; the chain-independent sources (HTTP APIs, the scenario feed, ``due`` picking the
    HTTP collectors) go with the first chain only. ``check_heads``: a chain with several URLs
    first leaves one lagging behind the others (the daemon, every tick). Reports by chain
    name, in configuration order."""
    known = layouts or {}

    async def one(i: int, chain: Chain) -> CollectReport:
        rpc = rpcs.get(chain.name)
        if check_heads and isinstance(rpc, RpcPool):
            await rpc.check_heads()
        return await collect_once(
            settings,
            store,
            chain=chain,
            shared=i == 0,
            http=http,
            rpc=rpc,
            layout=known.get(chain.name),
            due=due if i == 0 else None,
        )

    reports = await asyncio.gather(*(one(i, c) for i, c in enumerate(chains)))
    return {c.name: r for c, r in zip(chains, reports, strict=True)}


def source_states(
    chain: str, report: CollectReport, *, several: bool
) -> list[tuple[str, bool, str | None]]:
    """Each source's answer in ``report`` (one chain's collection) as the daemon's ops names
    it (readiness; a notice when one fails too long): ``rpc:<chain>`` for the snapshot (and
    ``store`` when it was stored), the chain's own sources suffixed with the chain when there
    are several, ``api:<name>`` for the HTTP collectors."""
    out: list[tuple[str, bool, str | None]] = []
    for name, r in report.sources.items():
        error = "; ".join(r.errors) or None
        if name == "onchain":
            out.append((f"rpc:{chain}", r.ok, error))
            if r.ok:
                out.append(("store", True, None))
        elif name in ("liquidations", "comet", "scenario"):
            label = f"{name}:{chain}" if several and name != "scenario" else name
            out.append((label, r.ok, error))
        else:
            out.append((f"api:{name}", r.ok, error))
    return out


def fork_source(chain: str, *, several: bool) -> str:
    """The ops name of a chain's fork simulator."""
    return f"fork:{chain}" if several else "fork"


def stale_problems(reports: Iterable[CollectReport]) -> list[str]:
    """The problems that say a feed was stale (its answers were not stored): a proposal made
    this tick names them."""
    return [
        p for report in reports for r in report.sources.values() for p in r.problems if "stale" in p
    ]


class IntervalSchedule:
    """Which HTTP collectors are due: each runs at most once per its ``interval_s`` (the
    daemon's ``due`` for :func:`collect_once`). Holds one timestamp per source, no more."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}

    def __call__(self, collector: HttpCollector) -> bool:
        now = self._clock()
        if now - self._last.get(collector.name, -math.inf) < collector.interval_s:
            return False
        self._last[collector.name] = now
        return True


def _http_source(collector: HttpCollector, http: HttpClient) -> Produce:
    async def produce() -> tuple[list[Observation], list[str]]:
        observations = await collector.collect(http)
        return observations, list(collector.skipped)

    return produce


async def _chain_sources(
    report: CollectReport,
    store: Store,
    chain: ChainConfig,
    cfg: CollectorsConfig,
    rpc: RpcClient,
    known_layout: MarketLayout | None = None,
) -> None:
    layout: MarketLayout | None = known_layout
    layout_error: str | None = None

    async def onchain() -> tuple[list[Observation], list[str]]:
        nonlocal layout, layout_error
        if layout is None:
            try:
                await rpc.ensure_chain(chain.chain_id)
                layout = await discover(rpc, chain)
            except Exception as exc:
                layout_error = str(exc)
                raise
        snap = await read_snapshot(rpc, layout)
        report.snapshot = snap
        return snapshot_observations(snap, layout, net_of_debt=chain.tvl_net_of_debt)

    market_configured = known_layout is not None or chain.pool_addresses_provider is not None
    if market_configured:
        await _run(report, store, "onchain", onchain)
    else:
        report.skipped["onchain"] = "chain.pool_addresses_provider is not set"

    jobs: list[Awaitable[None]] = []
    if cfg.liquidations.enabled:
        if layout is not None:
            found = layout

            async def liquidations() -> tuple[list[Observation], list[str]]:
                lc = cfg.liquidations
                # Only blocks after the stored checkpoint (the gap, after downtime); the first
                # scan reads the look-back. The checkpoint and the rows are stored together.
                tail = await collect_new_liquidations(
                    rpc,
                    found,
                    store,
                    lookback_blocks=lc.lookback_blocks,
                    chunk_blocks=lc.chunk_blocks,
                    confirmations=lc.confirmations,
                    # the block the tick read (no extra request)
                    head=report.snapshot.block_number
                    if report.snapshot
                    else await rpc.block_number(),
                )
                return tail.scan.observations, tail.scan.problems

            jobs.append(_run(report, store, "liquidations", liquidations))
        elif market_configured:

            async def no_layout() -> tuple[list[Observation], list[str]]:
                raise ConfigError(f"needs the {chain.protocol} market layout: {layout_error}")

            jobs.append(_run(report, store, "liquidations", no_layout))
        else:
            report.skipped["liquidations"] = "chain.pool_addresses_provider is not set"
    if cfg.comet.enabled and cfg.comet.markets:

        async def comet() -> tuple[list[Observation], list[str]]:
            if layout is None:  # the chain id was not checked by discovery
                await rpc.ensure_chain(chain.chain_id)
            return await comet_collect(rpc, chain, cfg.comet)

        jobs.append(_run(report, store, "comet", comet))
    await asyncio.gather(*jobs)
