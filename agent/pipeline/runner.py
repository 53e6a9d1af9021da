"""The daemon: one tick = collect → store → signals → policy → plan → simulate → sinks.

Shape borrowed from silverback's runner: OS signals only set an event; the loop runs in one
task group and checks the event between ticks; shutdown always runs (the composition root
closes every client and stops the simulator's fork anvil; the devnet's own anvil belongs to
`hedge-agent devnet`). Any exception a tick raises is logged with its traceback and spends the
time-based error budget (``error_budget`` consecutive failed ticks AND ``error_budget_s``
seconds of failing); ``Halt`` stops the daemon at once, on purpose. A tick runs under a deadline
(``tick_timeout_s``) and is cancelled by a stop signal (safe at any await: see
``agent.sinks.recovery``, which also settles live sends and journal lines at start-up and each
tick).
``once=True`` runs a single tick (arq's burst mode), which is what tests drive. Nothing is kept
per tick: the daemon's memory does not grow with its age.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from agent.app import App
from agent.collectors import build_http_collectors
from agent.collectors.onchain import (
    backfill_snapshots,
    discover,
    read_snapshot,
    snapshot_observations,
)
from agent.config import Settings
from agent.core.budget import ErrorBudget, Interrupted, unless_stopped, within
from agent.core.errors import AgentError, ConfigError, Halt, WrongChain
from agent.core.market import ChainSnapshot, MarketLayout
from agent.core.metrics import METRICS
from agent.core.rpc_pool import ChainWentBack, HeadWatch, RpcPool
from agent.ops.guardian import guarded_positions
from agent.ops.incremental import backfill_start
from agent.pipeline.advise import spx_advisory
from agent.pipeline.collect import CollectReport, IntervalSchedule, collect_once
from agent.pipeline.evaluate import Evaluation, MarketRead, evaluate
from agent.pipeline.parts import Chain
from agent.pipeline.propose import Proposer
from agent.sinks import recovery
from agent.sinks.live import check_live_allowed
from agent.sinks.outbox import pending_records

log = structlog.get_logger("agent")


@dataclass(frozen=True)
class TickReport:
    tick_id: int
    block_number: int
    timestamp: int
    stored: int
    proposals: int


class Agent:
    """The wired pipeline: parts from the composition root, no logic of its own. One chain or
    several (``[[chains]]``): every chain is read concurrently each tick, one decision covers
    every position under one budget, and each position is proposed on its own chain's fork."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.settings = app.settings
        self.layouts: dict[str, MarketLayout] = {}
        # One per position, plus the put ladder's buyer when it is not a position.
        self.proposers: list[Proposer] = []
        self.schedule = IntervalSchedule()
        self.ops = app.ops
        self._failures = 0  # consecutive failed ticks, for the exporter (tick_loop halts)
        self._heads: dict[str, HeadWatch] = {}  # per chain: a tick never goes back

    def _live_chain(self) -> Chain:
        """The chain of the live sender's sends: live sending is one chain's (the configuration
        refuses it with several), so with it on this is the one chain; without it no live
        sender's send exists, and the reconciliation (by chain id) finds none."""
        (chain, *_) = self.app.chains.values()
        return chain

    def _fork_source(self, chain: str) -> str:
        return "fork" if len(self.app.chains) == 1 else f"fork:{chain}"

    async def setup(self) -> None:
        settings = self.settings
        chains = list(self.app.chains.values())
        # a one-line error when a chain's rpc_url is not set or answers for another chain
        await asyncio.gather(*(self.app.rpc(c).ensure_chain(c.chain_id) for c in chains))
        live = settings.sinks.live
        if live.enabled:  # one chain only (the configuration refuses live with several)
            (chain,) = chains
            # Refuse to start rather than discover at the first proposal that live cannot work.
            if not settings.simulator.enabled:
                raise ConfigError(
                    f"{settings.origin}: live submission needs the simulator (simulator.enabled)"
                )
            check_live_allowed(
                live,
                await self.app.rpc(chain).chain_id(),
                chain.chain_id,
                True,
                live.signer_key is not None,
            )
            log.warning("live.enabled", note="simulated proposals will be SENT", chain=chain.name)
        # Before anything else the daemon does: live sends without an outcome are settled,
        # proposals committed but not journaled get their line.
        sinks = [self.app.sinks(c) for c in chains]
        lc = self._live_chain()
        await recovery.recover(
            live, self.app.rpc(lc), self.app.ledger, self.app.journal, sinks, chain_id=lc.chain_id
        )
        layouts = await asyncio.gather(*(discover(self.app.rpc(c), c.config) for c in chains))
        self.layouts = {c.name: lay for c, lay in zip(chains, layouts, strict=True)}
        self.proposers = self._proposers()
        # Autonomous sends of each chain: settled on that chain's RPC, and a fresh intent a
        # kill left unsent is broadcast (its journaled bytes: it can only be mined once).
        for own in {id(p.sinks): p.sinks for p in self.proposers}.values():
            await recovery.recover_autonomous(own)
        if settings.policy.spx.enabled and self.app.parts.spx is None:
            log.warning(
                "spx.off",
                note="several positions and no put ladder: set sinks.spx_ticket_position to "
                "the position whose chain records the S&P 500 ticket",
            )
        if settings.simulator.enabled and settings.simulator.warm_up:
            await self._warm_up()
        # ops: what /readyz waits for (each must answer its first check).
        self.ops.telemetry.expect(
            *(f"rpc:{name}" for name in self.layouts),
            "store",
            *(self._fork_source(c.name) for c in chains if c.fork.enabled),
            *(f"api:{c.name}" for c in build_http_collectors(settings.collectors)),
        )
        self.ops.telemetry.expect_fresh(*(f"rpc:{name}" for name in self.layouts), "store")
        for lay in self.layouts.values():
            log.info(
                "agent.ready",
                chain=lay.chain,
                chain_id=self.app.chains[lay.chain].chain_id,
                pool=lay.pool,
                reserves=[r.symbol for r in lay.reserves],
                accounts=list(lay.accounts),
            )
        if settings.multi_chain:
            log.info(
                "agent.positions",
                positions=[
                    f"{p.position.name} ({p.account} on {p.chain.name})" for p in self.proposers
                ],
                puts=next(
                    (f"{p.chain.name} by {p.account}" for p in self.proposers if p.puts.venue),
                    "none",
                ),
            )

    async def _warm_up(self) -> None:
        """Each position's fork primed with its working set before the first tick (one
        snapshot read per chain): the first trigger's proposal does not pay a cold fork."""
        t0 = time.perf_counter()
        snaps: dict[str, ChainSnapshot] = {}
        warmed = 0
        for p in self.proposers:
            name = p.chain.name
            try:
                if name not in snaps:
                    snaps[name] = await read_snapshot(self.app.rpc(p.chain), self.layouts[name])
            except AgentError as exc:
                log.warning("fork.warm_up_failed", chain=name, error=str(exc))
                continue
            warmed += await p.warm_up(snaps[name])
        log.info("fork.warmed", positions=warmed, ms=round((time.perf_counter() - t0) * 1000))

    def _proposers(self) -> list[Proposer]:
        """One proposer per position, on its chain; the put ladder goes to the position that
        buys it (``options.chain``/``options.account``), or to a proposer of its own."""
        puts = self.app.parts.puts
        out = [
            self.app.proposer(
                p,
                self.layouts[p.chain.name],
                puts if puts is not None and p == puts.buyer else None,
            )
            for p in self.app.positions
        ]
        if puts is not None and puts.buyer not in self.app.positions:
            out.append(self.app.proposer(puts.buyer, self.layouts[puts.chain.name], puts))
        return out

    async def backfill(self) -> int:
        """Read on-chain history for the signal windows (one batched call per step), every
        chain concurrently."""
        hours = self.settings.agent.backfill_hours
        if hours <= 0:
            return 0
        counts = await asyncio.gather(
            *(self._backfill(self.app.chains[name], lay) for name, lay in self.layouts.items())
        )
        return sum(counts)

    async def _backfill(self, chain: Chain, layout: MarketLayout) -> int:
        hours = self.settings.agent.backfill_hours
        rpc = self.app.rpc(chain)
        head = await rpc.block_number()
        head_ts = int((await rpc.get_block(head))["timestamp"], 16)
        step_s = self.settings.agent.backfill_step_s
        # ops: after a restart only the downtime is read, not the whole window again
        since_ts = backfill_start(
            self.app.store, layout, head_ts=head_ts, hours=hours, step_s=step_s
        )
        snaps = await backfill_snapshots(
            rpc, layout, since_ts=since_ts, until_block=head, step_s=step_s
        )
        stored = 0
        for snap in snaps:
            obs, _ = snapshot_observations(snap, layout, net_of_debt=chain.config.tvl_net_of_debt)
            stored += self.app.store.upsert(obs)
        log.info(
            "backfill.done",
            chain=layout.chain,
            snapshots=len(snaps),
            rows=stored,
            hours=hours,
            since_ts=since_ts,
        )
        return stored

    async def tick(self, tick_id: int) -> TickReport:
        """One tick, timed and counted for the exporter; between ticks a fork anvil is
        recycled once its memory passed ``simulator.recycle_rss_mb``."""
        t0 = time.monotonic()
        self.ops.telemetry.beat()
        try:
            report = await self._tick(tick_id)
        except Exception:
            self._failures += 1
            self.ops.telemetry.tick_failed(time.monotonic() - t0, self._failures)
            raise
        self._failures = 0
        self.ops.telemetry.tick_ok(time.monotonic() - t0)
        for name, lay in self.layouts.items():
            chain = self.app.chains[name]
            await self.ops.recycle_fork(self.app.simulator(chain, lay), chain.fork.recycle_rss_mb)
        for guarded in guarded_positions(self.app.positions):  # each guardian on its chain
            await self.ops.watch_guardian(self.app.rpc(guarded.chain), self.settings, guarded)
        return report

    def _report_sources(self, chain: str, collected: CollectReport) -> None:
        """ops: each source's answer this tick (readiness; a notice when one fails too long)."""
        several = len(self.app.chains) > 1
        for name, r in collected.sources.items():
            if name == "onchain":
                self.ops.source(f"rpc:{chain}", r.ok, "; ".join(r.errors) or None)
                if r.ok:
                    self.ops.source("store", True)
            elif name in ("liquidations", "comet", "scenario"):
                label = f"{name}:{chain}" if several and name != "scenario" else name
                self.ops.source(label, r.ok, "; ".join(r.errors) or None)
            else:
                self.ops.source(f"api:{name}", r.ok, "; ".join(r.errors) or None)

    async def _diagnose(self, chain: Chain) -> None:
        """A chain gave no snapshot: if its RPC now answers for another chain, halt (a
        provider moved to another chain); any other failure is the snapshot's own error."""
        try:
            await self.app.rpc(chain).ensure_chain(chain.chain_id)
        except WrongChain as exc:
            raise Halt(str(exc)) from exc
        except AgentError:
            pass  # not answering at all: the snapshot's error says it

    async def _collect(self, name: str, first: bool) -> CollectReport:
        """One chain's sources; the chain-independent ones run with the first chain only."""
        chain = self.app.chains[name]
        rpc = self.app.rpc(chain)
        if isinstance(rpc, RpcPool):
            await rpc.check_heads()  # several URLs: leave one lagging behind the others
        return await collect_once(
            self.settings,
            self.app.store,
            chain=chain,
            shared=first,
            http=self.app.http,
            rpc=rpc,
            layout=self.layouts[name],
            due=self.schedule if first else None,
        )

    async def _tick(self, tick_id: int) -> TickReport:
        assert self.layouts and self.proposers
        structlog.contextvars.bind_contextvars(tick_id=tick_id)
        METRICS.reset()
        # Live sends settle on their chain's RPC (autonomous sends: each chain's, below);
        # journal lines that could not be written are retried either way.
        lc = self._live_chain()
        await recovery.each_tick(
            self.settings.sinks.live,
            self.app.rpc(lc),
            self.app.ledger,
            self.app.journal,
            [self.app.sinks(c) for c in self.app.chains.values()],
            chain_id=lc.chain_id,
        )
        for sinks in {id(p.sinks): p.sinks for p in self.proposers}.values():
            await recovery.settle_autonomous(sinks)
        # The same collection as `hedge-agent collect`, every chain at once: one failing side
        # source is logged and skipped; a chain without its snapshot is not evaluated this
        # tick (its positions wait); without any snapshot there is nothing to evaluate. The
        # chain-independent sources go with the first chain.
        names = list(self.layouts)
        reports = await asyncio.gather(*(self._collect(n, i == 0) for i, n in enumerate(names)))
        collected = dict(zip(names, reports, strict=True))
        markets: dict[str, MarketRead] = {}
        errors: list[str] = []
        for name, report in collected.items():
            self._report_sources(name, report)
            chain = self.app.chains[name]
            snap = report.snapshot
            if snap is None:
                await self._diagnose(chain)  # halts on a provider moved to another chain
                onchain = report.sources.get("onchain")
                why = onchain.errors[0] if onchain and onchain.errors else "no chain snapshot"
                errors.append(f"{name}: {why}" if len(names) > 1 else why)
                continue
            # Every tick, not only at start: the chain id read in the snapshot's own batch.
            if snap.chain_id is not None and snap.chain_id != chain.chain_id:
                wrong = self.app.rpc(chain).wrong_chain(snap.chain_id, chain.chain_id)
                raise Halt(str(wrong))
            try:  # never a block, or a chain time, older than the last tick's
                self._heads.setdefault(name, HeadWatch(f"rpc:{name}")).accept(
                    snap.block_number, snap.timestamp
                )
            except ChainWentBack as exc:
                self.ops.source(f"rpc:{name}", False, str(exc))
                errors.append(f"{name}: {exc}" if len(names) > 1 else str(exc))
                continue
            markets[name] = MarketRead(self.layouts[name], snap)
            self.ops.telemetry.chain_read(name, snap.block_number, snap.timestamp)
        if not markets:
            raise AgentError("; ".join(errors) or "no chain snapshot this tick")
        for e in errors:
            log.warning("chain.unread", error=e, note="its positions wait for the next tick")
        first = next(iter(markets.values()))
        snap = first.snap
        structlog.contextvars.bind_contextvars(block_number=snap.block_number)
        # Committed proposals still waiting for their journal line are part of the memory too.
        history = self.app.journal.records() + pending_records(self.app.ledger)
        evaluation = evaluate(
            self.app.store,
            self.settings,
            self.app.positions,
            markets,
            history,
            ledger=self.app.ledger,
            options_enabled=self.app.parts.puts is not None,
        )
        for line in evaluation.log_lines():
            log.info("signal", **line)
        log.info("decision", **evaluation.summary())
        allowed = self.ops.proposals_allowed()  # the pause switch, read every tick
        self.ops.evaluated(evaluation.decision, evaluation.decision.signals, paused=not allowed)
        self.ops.guarded(evaluation.guard)  # gauges; a critical HF is the first notice out
        proposals: list[dict[str, Any]] = []
        stored = sum(r.stored for r in collected.values())
        if allowed:
            # Each committed record is counted and notified by the sinks (App._published).
            # A proposal made while a feed is stale says so (the stale answers were not stored).
            stale = [
                p
                for report in collected.values()
                for r in report.sources.values()
                for p in r.problems
                if "stale" in p
            ]
            proposals = await self._propose(markets, evaluation, stale)
            # The S&P 500 side (issue 15): an advisory ticket after the DeFi proposals.
            # The S&P 500 side (issue 15): an advisory ticket after the DeFi proposals, through
            # the sinks of the chain sinks.spx_ticket_position names (its chain read this tick).
            ticket = self.app.parts.spx
            if ticket is not None and ticket.chain.name in markets:
                read = markets[ticket.chain.name]
                proposals += spx_advisory(
                    self.app.store,
                    self.settings,
                    ticket.chain,
                    self.app.sinks(ticket.chain),
                    read.snap,
                    evaluation,
                    ticket.account or read.layout.accounts[0],
                )
        else:
            # Paused: recovery and retries of already-committed work ran above; nothing new.
            for chain in self.app.chains.values():
                if chain.fork.enabled:
                    self.ops.telemetry.set_idle(
                        self._fork_source(chain.name), "paused: nothing is simulated"
                    )
            log.warning(
                "proposals.paused",
                withheld=len(evaluation.actions()),
                note="hedge-agent resume to propose again",
            )
        log.info("tick.done", rpc=METRICS.snapshot(), proposals=len(proposals), stored=stored)
        return TickReport(tick_id, snap.block_number, snap.timestamp, stored, len(proposals))

    async def _propose(
        self, markets: Mapping[str, MarketRead], evaluation: Evaluation, stale: list[str]
    ) -> list[dict[str, Any]]:
        """Each position's actions through its proposer, on its chain's fork, in the order
        of the decision's allocation (the position closest to liquidation first); one at a
        time, so each proposal's cap check sees the spend of the ones before it."""
        tops = evaluation.topups()  # in allocation order
        proposers = sorted(
            self.proposers,
            key=lambda p: next((i for i, a in enumerate(tops) if p.owns(a)), len(tops)),
        )
        out: list[dict[str, Any]] = []
        for proposer in proposers:
            chain = proposer.chain.name
            read = markets.get(chain)
            if read is None:
                continue  # its chain was not read this tick
            actions = [a for a in evaluation.actions() if proposer.owns(a)]
            fork = proposer.simulator
            try:
                out += await proposer.propose(read.snap, evaluation, stale, actions=actions)
            except Exception as exc:
                if fork is not None:
                    self.ops.source(self._fork_source(chain), False, f"{type(exc).__name__}: {exc}")
                raise
            if fork is not None:
                self.ops.source(self._fork_source(chain), True)
        return out


@dataclass
class TickCount:
    """Ticks run so far, kept outside the loop: a halt raises out of it, and the stop line
    still reports what ran."""

    ok: int = 0
    failed: int = 0


async def tick_loop(
    tick: Callable[[int], Awaitable[object]],
    *,
    stop: asyncio.Event,
    interval_s: float,
    error_budget: int,
    error_budget_s: float = 0.0,
    tick_timeout_s: float | None = None,
    once: bool = False,
    count: TickCount | None = None,
) -> int:
    """Run ``tick`` until ``stop`` is set; returns the number of ticks that succeeded (also
    kept in ``count``, which survives a ``Halt``).

    Every exception a tick raises (the project's errors or any other) is logged with its
    traceback and spends the error budget: the daemon halts after ``error_budget`` consecutive
    failures that have lasted ``error_budget_s`` seconds (a brief burst at a short interval is
    not an outage). A tick past ``tick_timeout_s`` fails; a stop signal cancels the running
    tick. ``Halt`` (a deliberate stop, e.g. live sending refused) and cancellation pass
    through at once."""
    budget = ErrorBudget(error_budget, error_budget_s)
    count = count if count is not None else TickCount()
    tick_id = 0
    while not stop.is_set():
        tick_id += 1
        try:
            work = tick(tick_id)
            await unless_stopped(
                stop, within(tick_timeout_s, work) if tick_timeout_s is not None else work
            )
            budget.ok()
            count.ok += 1
        except Interrupted:
            log.warning("tick.interrupted", note="stop signal; the tick was cancelled")
            break
        except (Halt, asyncio.CancelledError):
            raise
        except Exception as exc:
            budget.failed()
            count.failed += 1
            # A project error is one line; anything else is a bug and keeps its traceback.
            trace = {} if isinstance(exc, AgentError) else {"exc_info": exc}
            log.error(
                "tick.failed",
                error=str(exc) or type(exc).__name__,
                error_type=type(exc).__name__,
                failures=budget.failures,
                budget=error_budget,
                failing_for_s=round(budget.failing_for_s(), 1),
                **trace,
            )
            if once:
                raise
            if budget.spent():
                span = (
                    f" ticks and {error_budget_s:g}s; failing for {budget.failing_for_s():.0f}s"
                    if error_budget_s
                    else ""
                )
                raise Halt(
                    f"{budget.failures} consecutive failed ticks "
                    f"(error budget {error_budget}{span}); last: {exc}"
                ) from exc
        finally:
            structlog.contextvars.unbind_contextvars("tick_id", "block_number")
        if once:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
    return count.ok


async def run(settings: Settings, *, once: bool = False) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = False
    count = TickCount()
    try:
        async with App(settings) as app:
            # One daemon per store and journal (the second refuses); fork anvils a daemon
            # killed with -9 left behind are stopped.
            app.take_locks()
            try:
                async with asyncio.TaskGroup() as tasks:
                    # The daemon's long-running tasks share this group (the tick loop, the
                    # metrics server, the notifier): one failing cancels the others, and the
                    # app closes after all of them have ended.
                    ops = app.ops
                    await ops.start(tasks)  # /healthz answers during set-up and backfill
                    try:
                        agent = Agent(app)
                        await agent.setup()
                        started = True
                        await agent.backfill()
                        await tasks.create_task(
                            tick_loop(
                                agent.tick,
                                stop=stop,
                                interval_s=settings.agent.tick_interval_s,
                                error_budget=settings.agent.error_budget,
                                error_budget_s=settings.agent.error_budget_s,
                                tick_timeout_s=settings.agent.tick_timeout_s,
                                once=once,
                                count=count,
                            ),
                            name="ticks",
                        )
                    except Halt as exc:
                        ops.halted(str(exc))
                        raise
                    finally:
                        # Queued notices (a halt) get their chance to go out, then the
                        # server and the notifier end so the group can.
                        await ops.stop()
            except BaseExceptionGroup as group:
                # One failing task: raise its error itself (a Halt ends as one line).
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if started:  # a failed start-up ends with the one-line error alone
            log.info("agent.stopped", ticks=count.ok, failed_ticks=count.failed)
    return 0
