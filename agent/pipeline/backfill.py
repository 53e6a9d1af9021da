"""Load history for every configured source, resumably.

The work is split into *tasks*, one per resumable stream (``fred:CPIAUCSL``,
``hyperliquid:ETH``, ``onchain:devnet`` ...). A task advances in *steps* (one page, one time
window, one segment of blocks); each step's observations and the task's new cursor are written in
**one** store transaction (``Store.advance``), so after an interruption (Ctrl-C, a crash, a
cancelled task) a restart continues from the last stored step, and — because a step is a pure
function of its cursor — ends with exactly the rows an uninterrupted run writes.

Tasks and cursors:

==========================  =================================  ===================================
task                        step                               cursor (JSON)
==========================  =================================  ===================================
``defillama:protocol:S``    the whole ``/protocol/S`` series   none (one step)
``defillama:chain:C``       ``/v2/historicalChainTvl/C``       none (one step)
``hyperliquid:COIN``        one ``fundingHistory`` page        next ``startTime`` (ms)
``dydx:TICKER``             one page, walking back             next ``effectiveBeforeOrAt`` (s)
``fred:SERIES``             one ``series/observations`` page   next ``offset``
``bls``                     one ``timeseries/data`` query      none (one step)
``closes:PRODUCT``          one candles window                 next window start (s)
``onchain:CHAIN``           ``segment_steps`` snapshots via    ``{"t": next step time, "head"}``
                            ``backfill_snapshots`` (+ Comet)
``liquidations:CHAIN``      ``backfill_segment_hours`` hours   ``{"hour", "head", "chunk"}``
==========================  =================================  ===================================

A checkpoint remembers the ``since`` it was made for; a different ``since`` restarts that task.
A finished task is skipped on the next run unless ``restart=True``. On-chain tasks pin the head
block of their first run in the cursor, so a resumed run covers exactly the same blocks. The live
``metaAndAssetCtxs`` funding and the subgraph (no history API) are not backfilled.

One backfill: ``hedge-agent backfill`` (:func:`backfill_chains`) and the daemon's start-up
(:func:`startup_backfill`, the snapshot task alone, from where the store's last snapshot ends,
as ``startup:onchain:CHAIN``) run the same tasks through :func:`run_tasks`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TextIO

import structlog

from agent.collectors import build_http_collectors
from agent.collectors.bls import BlsCollector
from agent.collectors.closes import DAY, ClosesCollector
from agent.collectors.defillama import DefiLlamaCollector
from agent.collectors.dydx import DydxCollector
from agent.collectors.fred import FredCollector
from agent.collectors.hyperliquid import HyperliquidCollector
from agent.collectors.liquidations import (
    HOUR,
    BlockClock,
    hour_floor,
    liquidation_volume,
)
from agent.collectors.onchain import (
    ChainConfig,
    backfill_snapshots,
    discover,
    snapshot_observations,
)
from agent.config import Settings
from agent.core.errors import AgentError, StoreError
from agent.core.http import HttpClient
from agent.core.market import MarketLayout
from agent.core.models import Observation
from agent.core.rpc import RpcClient
from agent.ops.incremental import backfill_start
from agent.pipeline.collect import comet_collect
from agent.pipeline.parts import Chain, lists_comet
from agent.store.sqlite import Store

log = structlog.get_logger(__name__)

# A step: cursor -> (observations, next cursor, done).
Step = Callable[[Any], Awaitable[tuple[list[Observation], Any, bool]]]


@dataclass
class Task:
    name: str
    step: Step
    describe: Callable[[Any], str] = str


@dataclass
class TaskReport:
    name: str
    steps: int = 0  # steps run by this invocation
    rows: int = 0  # observations written by this invocation
    changed: int = 0  # rows inserted or changed
    resumed_from: Any = None
    done: bool = False
    skipped: str | None = None  # why it did not run (already done, no history API)
    error: str | None = None


@dataclass
class BackfillReport:
    since: int
    tasks: dict[str, TaskReport] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def errors(self) -> list[str]:
        return [f"{t.name}: {t.error}" for t in self.tasks.values() if t.error]

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tasks.values())


class Progress:
    """One status line on a terminal (rewritten in place), or a throttled line per update
    otherwise (logs, CI)."""

    def __init__(
        self, stream: TextIO | None = None, *, min_interval_s: float = 5.0, enabled: bool = True
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval_s = 0.0 if self.tty else min_interval_s
        self.enabled = enabled
        self._last = 0.0
        self._width = 0

    def update(self, report: BackfillReport, total: int, line: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        done = sum(1 for t in report.tasks.values() if t.done or t.skipped or t.error)
        text = f"backfill [{done}/{total} tasks, {report.rows} rows] {line}"
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()


# -- task builders ----------------------------------------------------------------------------


def _one_shot(fetch: Callable[[], Awaitable[list[Observation]]]) -> Step:
    async def step(cursor: Any) -> tuple[list[Observation], Any, bool]:
        return await fetch(), None, True

    return step


def http_tasks(
    settings: Settings, http: HttpClient, since: int
) -> tuple[list[Task], dict[str, str]]:
    """Tasks for the enabled HTTP collectors, and the sources that have no history to load."""
    tasks: list[Task] = []
    skipped: dict[str, str] = {}
    for c in build_http_collectors(settings.collectors):
        if isinstance(c, DefiLlamaCollector):
            for slug in c.config.protocols:
                tasks.append(
                    Task(
                        f"defillama:protocol:{slug}",
                        _one_shot(partial(c.protocol, http, slug, since)),
                    )
                )
            chains: list[str | None] = list(c.config.chains)
            if c.config.all_chains_total:
                chains.append(None)
            for chain in chains:
                tasks.append(
                    Task(
                        f"defillama:chain:{chain or 'total'}",
                        _one_shot(partial(c.chain_tvl, http, chain, since)),
                    )
                )
        elif isinstance(c, HyperliquidCollector):
            for coin in c.config.markets:

                async def hl(
                    cursor: Any, c: HyperliquidCollector = c, coin: str = coin
                ) -> tuple[list[Observation], Any, bool]:
                    start_ms = since * 1000 if cursor is None else int(cursor)
                    obs, nxt = await c.history_page(http, coin, since, start_ms)
                    return obs, nxt, nxt is None

                tasks.append(Task(f"hyperliquid:{coin}", hl, lambda v: f"startTime={v}"))
        elif isinstance(c, DydxCollector):
            for ticker in c.config.markets:

                async def dydx(
                    cursor: Any, c: DydxCollector = c, ticker: str = ticker
                ) -> tuple[list[Observation], Any, bool]:
                    obs, nxt = await c.history_page(
                        http, ticker, since, None if cursor is None else float(cursor)
                    )
                    return obs, nxt, nxt is None

                tasks.append(Task(f"dydx:{ticker}", dydx, lambda v: f"before={v}"))
        elif isinstance(c, FredCollector):
            for series in c.config.series:

                async def fred(
                    cursor: Any, c: FredCollector = c, s: Any = series
                ) -> tuple[list[Observation], Any, bool]:
                    obs, nxt = await c.series_page(
                        http, s, since, 0 if cursor is None else int(cursor)
                    )
                    return obs, nxt, nxt is None

                tasks.append(Task(f"fred:{series.series_id}", fred, lambda v: f"offset={v}"))
        elif isinstance(c, BlsCollector):
            tasks.append(Task("bls", _one_shot(partial(c.collect, http, since))))
        elif isinstance(c, ClosesCollector):
            for product in c.config.products:

                async def closes(
                    cursor: Any, c: ClosesCollector = c, p: Any = product
                ) -> tuple[list[Observation], Any, bool]:
                    start = since // DAY * DAY if cursor is None else int(cursor)
                    now = c.now()
                    if start >= now:
                        return [], None, True
                    obs, nxt = await c.window(http, p, since, start, now)
                    return obs, nxt, nxt is None

                tasks.append(Task(f"closes:{product.product}", closes, lambda v: f"start={v}"))
        else:
            skipped[c.name] = "no history API (current values only)"
    return tasks, skipped


def chain_tasks(
    settings: Settings,
    chain: ChainConfig,
    rpc: RpcClient,
    layout: MarketLayout,
    since: int,
    *,
    comet: bool = True,
    liquidations: bool = True,
    head: int | None = None,
    prefix: str = "",
    segment_steps: int = 24,
) -> list[Task]:
    """On-chain history of one chain: snapshots every ``agent.backfill_step_s`` (plus, with
    ``comet``, Comet rates at the same blocks) and, with ``liquidations`` (and the collector
    on), liquidation volume per hour, both pinned to the head of their first run (``head``,
    default the chain's head less the liquidations' confirmations). ``prefix`` goes before
    the task names (the daemon's start-up backfill checkpoints apart from the command's)."""
    step_s = settings.agent.backfill_step_s
    clock = BlockClock(rpc)
    comet_cfg = settings.collectors.comet
    comet_on = comet and comet_cfg.enabled and bool(comet_cfg.markets)

    async def head_now() -> int:
        if head is not None:
            return head
        return max(0, await rpc.block_number() - settings.collectors.liquidations.confirmations)

    async def onchain(cursor: Any) -> tuple[list[Observation], Any, bool]:
        if cursor is None:
            cursor = {"t": since, "head": await head_now()}
        t, top = int(cursor["t"]), int(cursor["head"])
        head_ts = await clock.ts(top)
        if t >= head_ts:
            return [], cursor, True
        seg_end = t + segment_steps * step_s
        until = await clock.first_at_or_after(seg_end, 0, top)
        last = until > top or seg_end >= head_ts
        until = min(until, top)
        first = max(0, await clock.first_at_or_after(t, 0, top) - 1)
        snaps = await backfill_snapshots(
            rpc, layout, since_ts=t, until_block=until, step_s=step_s, first_block=first
        )
        obs: list[Observation] = []
        for snap in snaps:
            rows, _ = snapshot_observations(snap, layout, net_of_debt=chain.tvl_net_of_debt)
            obs += rows
            if comet_on:
                try:
                    rates, _ = await comet_collect(rpc, chain, comet_cfg, block=snap.block_number)
                    obs += rates
                except AgentError as exc:  # e.g. Comet not deployed yet at that block
                    log.info("backfill.comet_unreadable", block=snap.block_number, error=str(exc))
        nxt = {"t": seg_end, "head": top}
        return obs, nxt, last

    async def liquidation_hours(cursor: Any) -> tuple[list[Observation], Any, bool]:
        lc = settings.collectors.liquidations
        if cursor is None:
            cursor = {"hour": hour_floor(since), "head": await head_now(), "chunk": lc.chunk_blocks}
        hour, top, chunk = int(cursor["hour"]), int(cursor["head"]), int(cursor["chunk"])
        final = hour_floor(await clock.ts(top))
        end = min(hour + lc.backfill_segment_hours * HOUR, final)
        if end <= hour:
            return [], cursor, True
        scan = await liquidation_volume(
            rpc, layout, start_hour=hour, end_hour=end, head=top, chunk_blocks=chunk, clock=clock
        )
        for p in scan.problems:
            log.warning("backfill.liquidations_problem", problem=p)
        return (
            scan.observations,
            {"hour": end, "head": top, "chunk": scan.chunk_blocks},
            end >= final,
        )

    tasks = [Task(f"{prefix}onchain:{chain.name}", onchain, lambda v: f"t={v and v['t']}")]
    if liquidations and settings.collectors.liquidations.enabled:
        tasks.append(
            Task(
                f"{prefix}liquidations:{chain.name}",
                liquidation_hours,
                lambda v: f"hour={v and v['hour']}",
            )
        )
    return tasks


# -- driver -----------------------------------------------------------------------------------


async def run_tasks(
    store: Store,
    tasks: list[Task],
    *,
    since: int,
    report: BackfillReport,
    restart: bool = False,
    progress: Progress | None = None,
    on_step: Callable[[str, int], None] | None = None,
    concurrency: int = 4,
) -> BackfillReport:
    """Run tasks (at most ``concurrency`` at once). A task that fails with an ``AgentError``
    stops at its last stored step and is reported; anything else (Ctrl-C, cancellation, the
    ``on_step`` test hook) stops the whole backfill, resumable from the checkpoints."""
    sem = asyncio.Semaphore(concurrency)
    total = len(tasks) + sum(1 for t in report.tasks.values() if t.skipped)

    async def run(task: Task) -> None:
        r = report.tasks[task.name] = TaskReport(task.name)
        if restart:
            await asyncio.to_thread(store.drop_checkpoint, task.name)
        cp = await asyncio.to_thread(store.checkpoint, task.name)
        cursor: Any = None
        if cp is not None and cp.since == since:
            if cp.done:
                r.skipped, r.done = "already complete (use --restart to load it again)", True
                return
            cursor = r.resumed_from = cp.cursor
        elif cp is not None:
            log.info("backfill.since_changed", task=task.name, old=cp.since, new=since)
        async with sem:
            while True:
                try:
                    obs, cursor, done = await task.step(cursor)
                    changed = await asyncio.to_thread(
                        _advance, store, task.name, since, cursor, done, obs
                    )
                except AgentError as exc:
                    r.error = str(exc)
                    log.warning("backfill.task_failed", task=task.name, error=r.error)
                    return
                r.steps += 1
                r.rows += len(obs)
                r.changed += changed
                r.done = done
                if progress is not None:
                    progress.update(
                        report,
                        total,
                        f"{task.name}: step {r.steps}, +{len(obs)} rows"
                        + ("" if done else f", next {task.describe(cursor)}"),
                        force=done,
                    )
                if on_step is not None:
                    on_step(task.name, r.steps)
                if done:
                    return

    try:
        async with asyncio.TaskGroup() as tg:
            for task in tasks:
                tg.create_task(run(task))
    except BaseExceptionGroup as eg:
        raise eg.exceptions[0] from None
    return report


def _advance(
    store: Store, name: str, since: int, cursor: Any, done: bool, obs: list[Observation]
) -> int:
    try:
        return store.advance(name, since=since, cursor=cursor, done=done, observations=obs)
    except StoreError:
        raise
    except (TypeError, ValueError) as exc:  # pragma: no cover - cursors are plain JSON
        raise StoreError(f"checkpoint {name}: {exc}") from exc


async def backfill(
    settings: Settings,
    store: Store,
    *,
    since: int,
    chain: Chain,
    http: HttpClient,
    rpc: RpcClient | None,
    shared: bool = True,
    restart: bool = False,
    progress: Progress | None = None,
    on_step: Callable[[str, int], None] | None = None,
    segment_steps: int = 24,
) -> BackfillReport:
    """Backfill every configured source from ``since`` (unix s) for one chain (its ``rpc``
    None: no URL, its history is skipped); the chain-independent sources only when
    ``shared``. The clients come from the composition root. Resumable (see the module)."""
    t0 = time.perf_counter()
    report = BackfillReport(since=since)
    cfg = chain.config
    try:
        tasks, skipped = http_tasks(settings, http, since) if shared else ([], {})
        for name, why in skipped.items():
            report.tasks[name] = TaskReport(name, skipped=why)
        if rpc is not None and cfg.pool_addresses_provider is not None:
            try:
                await rpc.ensure_chain(cfg.chain_id)
                layout = await discover(rpc, cfg)
            except AgentError as exc:
                report.tasks[f"onchain:{chain.name}"] = TaskReport(
                    f"onchain:{chain.name}", error=f"market discovery failed: {exc}"
                )
            else:
                tasks += chain_tasks(
                    settings,
                    cfg,
                    rpc,
                    layout,
                    since,
                    comet=lists_comet(settings, chain),
                    segment_steps=segment_steps,
                )
        else:
            report.tasks[f"onchain:{chain.name}"] = TaskReport(
                f"onchain:{chain.name}", skipped="chain.rpc_url / pool_addresses_provider not set"
            )
        await run_tasks(
            store,
            tasks,
            since=since,
            report=report,
            restart=restart,
            progress=progress,
            on_step=on_step,
        )
    finally:
        if progress is not None:
            progress.close()
    report.elapsed_s = time.perf_counter() - t0
    return report


async def backfill_chains(
    settings: Settings,
    store: Store,
    chains: Sequence[Chain],
    *,
    since: int,
    rpcs: Mapping[str, RpcClient | None],
    http: HttpClient,
    restart: bool = False,
    progress: Progress | None = None,
) -> BackfillReport:
    """``hedge-agent backfill``: :func:`backfill` for every chain in turn (``rpcs`` by chain
    name; None: no URL), the chain-independent history (HTTP APIs) once, with the first chain;
    with several chains one report whose on-chain task names carry their chain."""
    reports = [
        await backfill(
            settings,
            store,
            since=since,
            chain=chain,
            shared=i == 0,
            http=http,
            rpc=rpcs.get(chain.name),
            restart=restart,
            progress=progress,
        )
        for i, chain in enumerate(chains)
    ]
    if len(reports) == 1:
        return reports[0]
    merged = BackfillReport(since=reports[0].since, elapsed_s=sum(r.elapsed_s for r in reports))
    for i, (chain, r) in enumerate(zip(chains, reports, strict=True)):
        for name, task in r.tasks.items():
            merged.tasks[name if i == 0 else f"{name}:{chain.name}"] = task
    return merged


STARTUP = "startup:"  # the daemon's start-up tasks' checkpoint names begin with this


async def startup_backfill(
    settings: Settings,
    store: Store,
    chains: Sequence[Chain],
    *,
    rpcs: Mapping[str, RpcClient],
    layouts: Mapping[str, MarketLayout],
) -> int:
    """The daemon's start-up backfill: each chain's on-chain snapshots over the signal
    windows (``agent.backfill_hours``, one per ``agent.backfill_step_s``), every chain at once,
    through the snapshot task of ``hedge-agent backfill`` (:func:`chain_tasks`, run by
    :func:`run_tasks`, checkpointed as ``startup:onchain:<chain>``) pinned to the head at
    start. It begins just after the store's last on-chain snapshot when that is later than the
    window's start (``backfill_start``): a restart reads only its downtime. Neither Comet nor
    liquidations are read here (the first tick's liquidation scan reads its look-back). A task
    that fails fails the start-up, after the other chains' backfills are cancelled (none is left
    running against the store and clients the daemon then closes). Returns the rows inserted or
    changed."""
    hours = settings.agent.backfill_hours
    if hours <= 0:
        return 0
    step_s = settings.agent.backfill_step_s

    async def one(chain: Chain, layout: MarketLayout) -> int:
        rpc = rpcs[chain.name]
        head = await rpc.block_number()
        head_ts = int((await rpc.get_block(head))["timestamp"], 16)
        since = backfill_start(store, layout, head_ts=head_ts, hours=hours, step_s=step_s)
        snapshots = 0

        def counted(step: Step) -> Step:
            async def run(cursor: Any) -> tuple[list[Observation], Any, bool]:
                nonlocal snapshots
                obs, nxt, done = await step(cursor)
                snapshots += len({o.ts for o in obs})  # one time per snapshot read
                return obs, nxt, done

            return run

        tasks = [
            replace(t, step=counted(t.step))
            for t in chain_tasks(
                settings,
                chain.config,
                rpc,
                layout,
                since,
                comet=False,
                liquidations=False,
                head=head,
                prefix=STARTUP,
            )
        ]
        # restart: where to begin is the store's (above), not an earlier start-up's checkpoint
        report = await run_tasks(
            store, tasks, since=since, report=BackfillReport(since=since), restart=True
        )
        if report.errors:
            raise AgentError("start-up backfill: " + "; ".join(report.errors))
        stored = sum(t.changed for t in report.tasks.values())
        log.info(
            "backfill.done",
            chain=chain.name,
            snapshots=snapshots,
            rows=stored,
            hours=hours,
            since_ts=since,
        )
        return stored

    try:
        async with asyncio.TaskGroup() as tg:
            runs = [tg.create_task(one(c, layouts[c.name])) for c in chains if c.name in layouts]
    except BaseExceptionGroup as eg:
        raise eg.exceptions[0] from None  # the first chain's error, as one line
    return sum(r.result() for r in runs)
