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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from agent.advisory import spx_advisory
from agent.app import App
from agent.collect import IntervalSchedule, collect_once
from agent.collectors.onchain import backfill_snapshots, discover, snapshot_observations
from agent.config import Settings
from agent.core.budget import ErrorBudget, Interrupted, unless_stopped, within
from agent.core.errors import AgentError, ConfigError, Halt, WrongChain
from agent.core.market import MarketLayout
from agent.core.metrics import METRICS
from agent.evaluate import evaluate
from agent.propose import Proposer
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
    """The wired pipeline for one chain: parts from the composition root, no logic of its own."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.settings = app.settings
        self.layout: MarketLayout | None = None
        self.proposer: Proposer | None = None
        self.schedule = IntervalSchedule()

    async def setup(self) -> MarketLayout:
        settings = self.settings
        chain = settings.chain
        rpc = self.app.rpc()  # a one-line error when chain.rpc_url is not set
        await rpc.ensure_chain(chain.chain_id)
        live = settings.sinks.live
        if live.enabled:
            # Refuse to start rather than discover at the first proposal that live cannot work.
            if not settings.simulator.enabled:
                raise ConfigError(
                    f"{settings.origin}: live submission needs the simulator (simulator.enabled)"
                )
            check_live_allowed(
                live, await rpc.chain_id(), chain.chain_id, True, live.signer_key is not None
            )
            log.warning("live.enabled", note="simulated proposals will be SENT", chain=chain.name)
        # Before anything else the daemon does: live sends without an outcome are settled,
        # proposals committed but not journaled get their line.
        await recovery.recover(live, rpc, self.app.store, self.app.journal)
        self.layout = await discover(rpc, chain)
        self.proposer = self.app.proposer(self.layout)
        log.info(
            "agent.ready",
            chain=chain.name,
            chain_id=chain.chain_id,
            pool=self.layout.pool,
            reserves=[r.symbol for r in self.layout.reserves],
            accounts=list(self.layout.accounts),
        )
        return self.layout

    async def backfill(self) -> int:
        """Read on-chain history for the signal windows (one batched call per step)."""
        assert self.layout is not None
        hours = self.settings.agent.backfill_hours
        if hours <= 0:
            return 0
        rpc = self.app.rpc()
        head = await rpc.block_number()
        head_ts = int((await rpc.get_block(head))["timestamp"], 16)
        snaps = await backfill_snapshots(
            rpc,
            self.layout,
            since_ts=head_ts - int(hours * 3600),
            until_block=head,
            step_s=self.settings.agent.backfill_step_s,
        )
        stored = 0
        for snap in snaps:
            obs, _ = snapshot_observations(
                snap, self.layout, net_of_debt=self.settings.chain.tvl_net_of_debt
            )
            stored += self.app.store.upsert(obs)
        log.info("backfill.done", snapshots=len(snaps), rows=stored, hours=hours)
        return stored

    async def tick(self, tick_id: int) -> TickReport:
        assert self.layout is not None and self.proposer is not None
        structlog.contextvars.bind_contextvars(tick_id=tick_id)
        METRICS.reset()
        rpc = self.app.rpc()
        try:  # every tick, not only at start: a provider moved to another chain halts
            await rpc.ensure_chain(self.settings.chain.chain_id)
        except WrongChain as exc:
            raise Halt(str(exc)) from exc
        await recovery.each_tick(self.settings.sinks.live, rpc, self.app.store, self.app.journal)
        # The same collection as `hedge-agent collect`: one failing side source is logged and
        # skipped; without the chain snapshot there is nothing to evaluate, so the tick fails.
        collected = await collect_once(
            self.settings,
            self.app.store,
            http=self.app.http,
            rpc=rpc,
            layout=self.layout,
            due=self.schedule,
        )
        snap = collected.snapshot
        if snap is None:
            onchain = collected.sources.get("onchain")
            raise AgentError(
                onchain.errors[0] if onchain and onchain.errors else "no chain snapshot this tick"
            )
        structlog.contextvars.bind_contextvars(block_number=snap.block_number)
        # Committed proposals still waiting for their journal line are part of the memory too.
        history = self.app.journal.records() + pending_records(self.app.store)
        evaluation = evaluate(self.app.store, self.settings, self.layout, snap, history)
        for line in evaluation.log_lines():
            log.info("signal", **line)
        log.info("decision", **evaluation.summary())
        # A proposal made while a feed is stale says so (the stale answers were not stored).
        stale = [p for r in collected.sources.values() for p in r.problems if "stale" in p]
        proposals = await self.proposer.propose(snap, evaluation, warnings=stale)
        # The S&P 500 side (issue 15): an advisory ticket after the DeFi proposals.
        proposals += spx_advisory(
            self.app.store, self.settings, self.app.sinks, snap, evaluation, self.proposer.account
        )
        log.info(
            "tick.done",
            rpc=METRICS.snapshot(),
            proposals=len(proposals),
            stored=collected.stored,
        )
        return TickReport(
            tick_id, snap.block_number, snap.timestamp, collected.stored, len(proposals)
        )


async def tick_loop(
    tick: Callable[[int], Awaitable[object]],
    *,
    stop: asyncio.Event,
    interval_s: float,
    error_budget: int,
    error_budget_s: float = 0.0,
    tick_timeout_s: float | None = None,
    once: bool = False,
) -> int:
    """Run ``tick`` until ``stop`` is set; returns the number of ticks that succeeded.

    Every exception a tick raises (the project's errors or any other) is logged with its
    traceback and spends the error budget: the daemon halts after ``error_budget`` consecutive
    failures that have lasted ``error_budget_s`` seconds (a brief burst at a short interval is
    not an outage). A tick past ``tick_timeout_s`` fails; a stop signal cancels the running
    tick. ``Halt`` (a deliberate stop, e.g. live sending refused) and cancellation pass
    through at once."""
    budget = ErrorBudget(error_budget, error_budget_s)
    done = 0
    tick_id = 0
    while not stop.is_set():
        tick_id += 1
        try:
            work = tick(tick_id)
            await unless_stopped(
                stop, within(tick_timeout_s, work) if tick_timeout_s is not None else work
            )
            budget.ok()
            done += 1
        except Interrupted:
            log.warning("tick.interrupted", note="stop signal; the tick was cancelled")
            break
        except (Halt, asyncio.CancelledError):
            raise
        except Exception as exc:
            budget.failed()
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
    return done


async def run(settings: Settings, *, once: bool = False) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = False
    ticks = 0
    try:
        async with App(settings) as app:
            # One daemon per store and journal (the second refuses); fork anvils a daemon
            # killed with -9 left behind are stopped.
            app.take_locks()
            agent = Agent(app)
            await agent.setup()
            started = True
            await agent.backfill()
            try:
                async with asyncio.TaskGroup() as tasks:
                    # The daemon's long-running tasks share this group: one failing cancels
                    # the others, and the app closes after all of them have ended.
                    ticking = tasks.create_task(
                        tick_loop(
                            agent.tick,
                            stop=stop,
                            interval_s=settings.agent.tick_interval_s,
                            error_budget=settings.agent.error_budget,
                            error_budget_s=settings.agent.error_budget_s,
                            tick_timeout_s=settings.agent.tick_timeout_s,
                            once=once,
                        )
                    )
            except BaseExceptionGroup as group:
                # One failing task: raise its error itself (a Halt ends as one line).
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise
            ticks = ticking.result()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if started:  # a failed start-up ends with the one-line error alone
            log.info("agent.stopped", ticks=ticks)
    return 0
