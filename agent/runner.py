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
from pathlib import Path
from typing import Any

import structlog

from agent.collectors import build_http_collectors
from agent.collectors.comet import comet_calls, comet_observations
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
from agent.core.errors import AgentError, ConfigError, Halt
from agent.core.http import HttpClient
from agent.core.metrics import METRICS
from agent.evaluate import Evaluation, evaluate
from agent.ops.daemon import Operations
from agent.ops.incremental import backfill_start, collect_new_liquidations
from agent.propose import Proposer
from agent.simulator.fork import ForkSimulator
from agent.sinks.journal import ProposalJournal
from agent.sinks.live import check_live_allowed
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

    def __init__(self, settings: Settings, ops: Operations | None = None) -> None:
        self.settings = settings
        self._own_ops = ops is None  # run() passes its own; a bare Agent makes one
        self.ops = ops if ops is not None else Operations(settings)
        chain = settings.chain
        self.rpc = self.ops.chain_rpc(chain)  # ops: one URL, or several rotated on failure
        Path(settings.agent.store_path).parent.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.agent.store_path)
        self.journal = ProposalJournal(settings.agent.journal_path)
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
        self.layout = await discover(self.rpc, chain)
        if self.settings.simulator.enabled:
            self.simulator = ForkSimulator(
                chain.rpc_url.get_secret_value(),
                pool=self.layout.pool,
                block_lag=self.settings.simulator.block_lag,
                chain_id=chain.chain_id,
            )
        self.proposer = Proposer(
            self.settings,
            self.layout,
            rpc=self.rpc,
            store=self.store,
            journal=self.journal,
            simulator=self.simulator,
        )
        # ops: what /readyz waits for (each must answer its first check).
        self.ops.telemetry.expect(
            f"rpc:{chain.name}",
            "store",
            *(["fork"] if self.simulator else []),
            *(f"api:{c.name}" for c in self.http_collectors),
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
        step_s = self.settings.agent.backfill_step_s
        # ops: after a restart only the downtime is read, not the whole window again
        since_ts = backfill_start(
            self.store, self.layout, head_ts=head_ts, hours=hours, step_s=step_s
        )
        snaps = await backfill_snapshots(
            self.rpc,
            self.layout,
            since_ts=since_ts,
            until_block=head,
            step_s=step_s,
        )
        stored = 0
        for snap in snaps:
            obs, _ = snapshot_observations(
                snap, self.layout, net_of_debt=self.settings.chain.tvl_net_of_debt
            )
            stored += self.store.upsert(obs)
        log.info("backfill.done", snapshots=len(snaps), rows=stored, hours=hours, since_ts=since_ts)
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
        if self._own_ops:
            self.ops.telemetry.close()

    async def collect_side(self, snap: ChainSnapshot) -> int:
        """Everything besides the one-call snapshot: liquidation logs, HTTP sources when their
        interval has passed, the scenario feed. A failing source is logged and skipped; the
        tick goes on with what the store already holds."""
        assert self.layout is not None
        stored = 0
        lc = self.settings.collectors.liquidations
        if lc.enabled:
            try:
                # ops: only blocks after the stored checkpoint (the gap, after downtime)
                tail = await collect_new_liquidations(
                    self.rpc,
                    self.layout,
                    self.store,
                    lookback_blocks=lc.lookback_blocks,
                    chunk_blocks=lc.chunk_blocks,
                    confirmations=lc.confirmations,
                    head=snap.block_number,
                )
                scan = tail.scan
                stored += tail.stored
                for p in scan.problems:
                    log.warning("collect.problem", source="liquidations", problem=p)
                self.ops.source("liquidations", True)
            except AgentError as exc:
                log.warning("collect.failed", source="liquidations", error=str(exc))
                self.ops.source("liquidations", False, str(exc))
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
                self.ops.source(f"api:{c.name}", True)
            except AgentError as exc:
                log.warning("collect.failed", source=c.name, error=str(exc))
                self.ops.source(f"api:{c.name}", False, str(exc))
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
        comets = self.settings.collectors.comet
        markets = comets.markets if comets.enabled else ()
        extra = [c for i, m in enumerate(markets) for c in comet_calls(m.address, f"comet{i}")]
        rpc_dep = f"rpc:{self.layout.chain}"
        try:
            snap = await read_snapshot(self.rpc, self.layout, extra=extra)
        except AgentError as exc:
            self.ops.source(rpc_dep, False, str(exc))
            raise
        self.ops.source(rpc_dep, True)
        self.ops.telemetry.chain_read(self.layout.chain, snap.block_number, snap.timestamp)
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
        try:
            stored = self.store.upsert(obs)
        except Exception as exc:
            self.ops.source("store", False, f"{type(exc).__name__}: {exc}")
            raise
        self.ops.source("store", True)
        for p in problems:
            log.warning("collect.problem", problem=p)
        stored += await self.collect_side(snap)
        report = TickReport(tick_id, snap.block_number, snap.timestamp, stored, problems)
        report.evaluation = evaluation = evaluate(
            self.store, self.settings, self.layout, snap, self.journal.records()
        )
        for line in evaluation.log_lines():
            log.info("signal", **line)
        log.info("decision", **evaluation.summary())
        assert self.proposer is not None
        allowed = self.ops.proposals_allowed()  # the pause switch, read every tick
        self.ops.evaluated(evaluation.decision, evaluation.decision.signals, paused=not allowed)
        if allowed:
            try:
                report.proposals = await self.proposer.propose(snap, evaluation)
            except AgentError as exc:
                if self.simulator is not None:
                    self.ops.source("fork", False, str(exc))
                raise
            if self.simulator is not None:
                self.ops.source("fork", True)
            self.ops.proposals(report.proposals)
        else:
            if self.simulator is not None:
                self.ops.telemetry.set_idle("fork", "paused: nothing is simulated")
            log.warning(
                "proposals.paused",
                withheld=len(evaluation.decision.actions),
                note="hedge-agent resume to propose again",
            )
        log.info(
            "tick.done", rpc=METRICS.snapshot(), proposals=len(report.proposals), stored=stored
        )
        return report


async def run(settings: Settings, *, once: bool = False) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ops = Operations(settings)
    agent = Agent(settings, ops)
    ticks_ok = 0  # a count, not the reports: keeping every tick's report grew ~14 kB a tick
    started = False
    try:
        await ops.start()
        await agent.setup()
        started = True
        await agent.backfill()
        failures = 0
        tick_id = 0
        while not stop.is_set():
            tick_id += 1
            t0 = time.monotonic()
            ops.telemetry.beat()
            try:
                await agent.tick(tick_id)
                ticks_ok += 1
                failures = 0
                ops.telemetry.tick_ok(time.monotonic() - t0)
                await ops.recycle_fork(agent.simulator, settings.simulator.recycle_rss_mb)
            except Halt as exc:
                ops.halted(str(exc))
                raise
            except AgentError as exc:
                failures += 1
                ops.telemetry.tick_failed(time.monotonic() - t0, failures)
                log.error(
                    "tick.failed",
                    error=str(exc),
                    failures=failures,
                    budget=settings.agent.error_budget,
                )
                if once:
                    raise
                if failures >= settings.agent.error_budget:
                    reason = f"{failures} consecutive failed ticks (error budget {settings.agent.error_budget}); last: {exc}"
                    ops.halted(reason)
                    raise Halt(reason) from exc
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
        await ops.stop()  # after the loop: queued notices (a halt) get their chance to go out
        if started:  # a failed start-up ends with the one-line error alone
            log.info("agent.stopped", ticks=ticks_ok)
    return 0
