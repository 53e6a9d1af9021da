"""The daemon: one tick = collect → store → signals → policy → plan → simulate → sinks.

Shape borrowed from silverback's runner: OS signals only set an event; the loop checks it
between ticks; shutdown always runs (the simulator's fork anvil is stopped; the devnet's own
anvil belongs to `hedge-agent devnet`); consecutive failed ticks spend
an error budget, and ``Halt`` stops the daemon on purpose. ``once=True`` runs a single tick
(arq's burst mode), which is what tests drive.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from agent.collectors import build_http_collectors
from agent.collectors.comet import comet_calls, comet_observations
from agent.collectors.liquidations import collect_liquidations
from agent.collectors.onchain import (
    ChainSnapshot,
    MarketLayout,
    backfill_snapshots,
    discover,
    read_snapshot,
    snapshot_observations,
)
from agent.collectors.scenario import load_scenario_feed
from agent.config import Settings
from agent.core.budget import ErrorBudget, Interrupted, unless_stopped, within
from agent.core.errors import AgentError, ConfigError, Halt, WrongChain
from agent.core.http import HttpClient
from agent.core.metrics import METRICS
from agent.core.rpc import RpcClient
from agent.evaluate import Evaluation, evaluate
from agent.propose import Proposer
from agent.simulator.fork import ForkSimulator
from agent.sinks import recovery
from agent.sinks.journal import ProposalJournal
from agent.sinks.live import check_live_allowed
from agent.sinks.outbox import pending_records
from agent.store.sqlite import Store

log = structlog.get_logger("agent")


@dataclass
class TickReport:
    tick_id: int
    block_number: int
    timestamp: int
    stored: int
    problems: list[str]
    evaluation: Evaluation | None = None
    proposals: list[dict[str, Any]] = field(default_factory=list)


class Agent:
    """The wired pipeline for one chain. Holds connections, not logic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        chain = settings.chain
        self.rpc = RpcClient(
            chain.rpc_url.get_secret_value(), source=f"rpc:{chain.name}", timeout_s=chain.timeout_s
        )
        # One daemon per store and journal (the second refuses), then open them.
        self.locks = recovery.take_locks(settings.agent.store_path, settings.agent.journal_path)
        self.store = Store(settings.agent.store_path)
        self.journal = ProposalJournal(settings.agent.journal_path)
        recovery.reap_forks(settings.agent.store_path)  # left by a daemon killed with -9
        self.layout: MarketLayout | None = None
        self.simulator: ForkSimulator | None = None
        self.proposer: Proposer | None = None
        self.http: HttpClient | None = None
        self.http_collectors = build_http_collectors(settings.collectors)
        self._last_run: dict[str, float] = {}

    async def setup(self) -> MarketLayout:
        chain = self.settings.chain
        if not chain.rpc_url.get_secret_value():
            raise AgentError(f"{self.settings.origin}: chain.rpc_url is not set")
        await self.rpc.ensure_chain(chain.chain_id)
        live = self.settings.sinks.live
        if live.enabled:
            # Refuse to start rather than discover at the first proposal that live cannot work.
            if not self.settings.simulator.enabled:
                raise ConfigError(
                    f"{self.settings.origin}: live submission needs the simulator (simulator.enabled)"
                )
            check_live_allowed(
                live, await self.rpc.chain_id(), chain.chain_id, True, live.signer_key is not None
            )
            log.warning("live.enabled", note="simulated proposals will be SENT", chain=chain.name)
        # Before anything else the daemon does: live sends without an outcome are settled,
        # proposals committed but not journaled get their line.
        await recovery.recover(self.settings.sinks.live, self.rpc, self.store, self.journal)
        self.layout = await discover(self.rpc, chain)
        if self.settings.simulator.enabled:
            self.simulator = ForkSimulator(
                chain.rpc_url.get_secret_value(),
                pool=self.layout.pool,
                block_lag=self.settings.simulator.block_lag,
                chain_id=chain.chain_id,
                call_timeout_s=self.settings.simulator.call_timeout_s,
                pid_dir=str(recovery.fork_pid_dir(self.settings.agent.store_path)),
            )
        self.proposer = Proposer(
            self.settings,
            self.layout,
            rpc=self.rpc,
            store=self.store,
            journal=self.journal,
            simulator=self.simulator,
        )
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
        head = await self.rpc.block_number()
        head_ts = int((await self.rpc.get_block(head))["timestamp"], 16)
        snaps = await backfill_snapshots(
            self.rpc,
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
            stored += self.store.upsert(obs)
        log.info("backfill.done", snapshots=len(snaps), rows=stored, hours=hours)
        return stored

    async def close(self) -> None:
        if self.proposer is not None:
            await self.proposer.close()
        if self.simulator is not None:
            await self.simulator.stop()
        if self.http is not None:
            await self.http.close()
        await self.rpc.close()
        self.store.close()
        for lock in self.locks:
            lock.release()

    async def collect_side(self, snap: ChainSnapshot) -> int:
        """Everything besides the one-call snapshot: liquidation logs, HTTP sources when their
        interval has passed, the scenario feed. A failing source is logged and skipped; the
        tick goes on with what the store already holds."""
        assert self.layout is not None
        stored = 0
        lc = self.settings.collectors.liquidations
        if lc.enabled:
            try:
                scan = await collect_liquidations(
                    self.rpc,
                    self.layout,
                    lookback_blocks=lc.lookback_blocks,
                    chunk_blocks=lc.chunk_blocks,
                    confirmations=lc.confirmations,
                    head=snap.block_number,
                )
                stored += self.store.upsert(scan.observations)
                for p in scan.problems:
                    log.warning("collect.problem", source="liquidations", problem=p)
            except AgentError as exc:
                log.warning("collect.failed", source="liquidations", error=str(exc))
        now = time.monotonic()
        for c in self.http_collectors:
            if now - self._last_run.get(c.name, -math.inf) < c.interval_s:
                continue
            self._last_run[c.name] = now
            try:
                if self.http is None:
                    self.http = self.settings.collectors.http.client()
                obs = await c.collect(self.http)
                stored += self.store.upsert(obs)
                log.info("collect.done", source=c.name, observations=len(obs))
            except AgentError as exc:
                log.warning("collect.failed", source=c.name, error=str(exc))
            finally:
                c.reset()
        if self.settings.scenario.feed:
            try:
                feed = load_scenario_feed(self.settings.scenario.feed)
            except AgentError as exc:
                log.warning(
                    "collect.failed", source="scenario", data_origin="scenario", error=str(exc)
                )
            else:
                stored += self.store.upsert(feed)
                log.info(
                    "scenario.loaded",
                    data_origin="scenario",
                    observations=len(feed),
                    feed=self.settings.scenario.feed,
                )
        return stored

    async def tick(self, tick_id: int) -> TickReport:
        assert self.layout is not None
        structlog.contextvars.bind_contextvars(tick_id=tick_id)
        METRICS.reset()
        try:  # every tick, not only at start: a provider moved to another chain halts
            await self.rpc.ensure_chain(self.settings.chain.chain_id)
        except WrongChain as exc:
            raise Halt(str(exc)) from exc
        await recovery.each_tick(self.settings.sinks.live, self.rpc, self.store, self.journal)
        comets = self.settings.collectors.comet
        markets = comets.markets if comets.enabled else ()
        extra = [c for i, m in enumerate(markets) for c in comet_calls(m.address, f"comet{i}")]
        snap = await read_snapshot(self.rpc, self.layout, extra=extra)
        structlog.contextvars.bind_contextvars(block_number=snap.block_number)
        obs, problems = snapshot_observations(
            snap, self.layout, net_of_debt=self.settings.chain.tvl_net_of_debt
        )
        for i, m in enumerate(markets):
            try:
                obs += comet_observations(
                    snap.extra,
                    f"comet{i}",
                    chain=self.layout.chain,
                    asset=m.asset,
                    ts=snap.timestamp,
                    source=f"onchain:{self.layout.chain}:block={snap.block_number}",
                    protocol=comets.protocol,
                )
            except (KeyError, ValueError, TypeError) as exc:
                problems.append(f"Comet {m.asset} at {m.address}: unreadable ({exc})")
        stored = self.store.upsert(obs)
        for p in problems:
            log.warning("collect.problem", problem=p)
        stored += await self.collect_side(snap)
        report = TickReport(tick_id, snap.block_number, snap.timestamp, stored, problems)
        report.evaluation = evaluation = evaluate(
            self.store,
            self.settings,
            self.layout,
            snap,
            self.journal.records() + pending_records(self.store),
        )
        for line in evaluation.log_lines():
            log.info("signal", **line)
        log.info("decision", **evaluation.summary())
        assert self.proposer is not None
        # A proposal made while a feed is stale says so (the stale answers were not stored).
        stale = [p for p in problems if "stale" in p]
        report.proposals = await self.proposer.propose(snap, evaluation, warnings=stale)
        log.info(
            "tick.done", rpc=METRICS.snapshot(), proposals=len(report.proposals), stored=stored
        )
        return report


async def run(settings: Settings, *, once: bool = False) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    agent = Agent(settings)
    ticks = 0  # a count, not the reports: the daemon's memory must not grow per tick
    started = False
    try:
        await agent.setup()
        started = True
        await agent.backfill()
        budget = ErrorBudget(settings.agent.error_budget, settings.agent.error_budget_s)
        tick_id = 0
        while not stop.is_set():
            tick_id += 1
            try:
                await unless_stopped(
                    stop, within(settings.agent.tick_timeout_s, agent.tick(tick_id))
                )
                ticks += 1
                budget.ok()
            except Interrupted:
                log.warning("tick.interrupted", note="stop signal; the tick was cancelled")
                break
            except Halt:
                raise
            except AgentError as exc:
                budget.failed()
                log.error(
                    "tick.failed",
                    error=str(exc),
                    failures=budget.failures,
                    budget=settings.agent.error_budget,
                    failing_for_s=round(budget.failing_for_s(), 1),
                )
                if once:
                    raise
                if budget.spent():
                    raise Halt(
                        f"{budget.failures} consecutive failed ticks over {budget.failing_for_s():.0f}s "
                        f"(error budget {settings.agent.error_budget} ticks, {settings.agent.error_budget_s:g}s); last: {exc}"
                    ) from exc
            finally:
                structlog.contextvars.unbind_contextvars("tick_id", "block_number")
            if once:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.agent.tick_interval_s)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await agent.close()
        if started:  # a failed start-up ends with the one-line error alone
            log.info("agent.stopped", ticks=ticks)
    return 0
