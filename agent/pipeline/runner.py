"""The daemon's pipeline: one tick = collect → store → signals → policy → plan → simulate → sinks.

The daemon's entry point (``agent.commands.run``) opens the composition root, which builds the
parts (:class:`DaemonParts`); the :class:`Agent` takes those, never the root itself, and
``tick_loop`` runs its ticks. Any exception a tick raises is logged with its traceback and
spends the time-based error budget (``error_budget`` consecutive failed ticks AND
``error_budget_s`` seconds of failing); ``Halt`` stops the daemon at once, on purpose. A tick
runs under a deadline (``tick_timeout_s``) and is cancelled by a stop signal (safe at any
await: see ``agent.sinks.recovery``, which also settles live sends and journal lines at
start-up and each tick). ``once=True`` runs a single tick (arq's burst mode), which is what
tests drive. Nothing is kept per tick: the daemon's memory does not grow with its age.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from agent.collectors import build_http_collectors
from agent.collectors.onchain import discover, read_snapshot
from agent.config import Settings
from agent.core.budget import ErrorBudget, Interrupted, unless_stopped, within
from agent.core.errors import AgentError, ConfigError, Halt, WrongChain
from agent.core.http import HttpClient
from agent.core.market import ChainSnapshot, MarketLayout
from agent.core.metrics import METRICS
from agent.core.rpc import RpcClient
from agent.core.rpc_pool import ChainWentBack, HeadWatch
from agent.core.tasks import all_at_once
from agent.ops.daemon import Operations
from agent.ops.guardian import guarded_positions
from agent.pipeline.advise import spx_ticket
from agent.pipeline.backfill import startup_backfill
from agent.pipeline.collect import (
    CollectReport,
    IntervalSchedule,
    collect_chains,
    fork_source,
    source_states,
    stale_problems,
)
from agent.pipeline.evaluate import Evaluation, MarketRead, clock_snapshot, evaluate
from agent.pipeline.parts import Chain, Parts, Position, PutLadder, proposer_positions
from agent.pipeline.propose import Proposer
from agent.simulator.fork import ForkSimulator
from agent.sinks import recovery
from agent.sinks.journal import ProposalJournal
from agent.sinks.live import check_live_allowed
from agent.sinks.outbox import pending_records
from agent.sinks.publish import ProposalSinks
from agent.store.ledger import ProposalLedger
from agent.store.sqlite import Store

log = structlog.get_logger("agent")


@dataclass(frozen=True)
class DaemonParts:
    """What the daemon's pipeline works with, built by the composition root
    (``App.daemon_parts``): the typed chains and positions, the store, the proposal ledger and
    journal, the HTTP client, every chain's RPC client and sinks (by chain name), the
    operations side (telemetry, notifier, pause switch); and the two parts that need a chain's
    discovered market: its fork simulator and a position's proposer."""

    settings: Settings
    parts: Parts
    store: Store
    ledger: ProposalLedger
    journal: ProposalJournal
    http: HttpClient
    ops: Operations
    rpcs: Mapping[str, RpcClient]
    sinks: Mapping[str, ProposalSinks]
    simulator: Callable[[Chain, MarketLayout], ForkSimulator | None]
    proposer: Callable[[Position, MarketLayout, PutLadder | None], Proposer]

    @property
    def chains(self) -> tuple[Chain, ...]:
        return self.parts.chains

    def rpc(self, chain: Chain) -> RpcClient:
        return self.rpcs[chain.name]

    def sinks_of(self, chain: Chain) -> ProposalSinks:
        return self.sinks[chain.name]

    @property
    def rpcs_by_id(self) -> dict[int, RpcClient]:
        """Every chain's RPC client by chain id (what a live send records)."""
        return {c.chain_id: self.rpcs[c.name] for c in self.chains}


@dataclass(frozen=True)
class TickReport:
    tick_id: int
    block_number: int
    timestamp: int
    stored: int
    proposals: int


async def refuse_unusable_live(p: DaemonParts) -> None:
    """Live sending on: refuse to start rather than find out at the first proposal that it
    cannot work (one chain only: the configuration refuses live sending with several)."""
    settings, live = p.settings, p.settings.sinks.live
    if not live.enabled:
        return
    (chain,) = p.chains
    if not settings.simulator.enabled:
        raise ConfigError(
            f"{settings.origin}: live submission needs the simulator (simulator.enabled)"
        )
    check_live_allowed(
        live, await p.rpc(chain).chain_id(), chain.chain_id, True, live.signer_key is not None
    )
    log.warning("live.enabled", note="simulated proposals will be SENT", chain=chain.name)


class Agent:
    """The wired pipeline: parts from the composition root, no rules of its own. One chain or
    several (``[[chains]]``): every chain is read concurrently each tick, one decision covers
    every position under one budget, and each position is proposed on its own chain's fork."""

    def __init__(self, parts: DaemonParts) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.chains: dict[str, Chain] = {c.name: c for c in parts.chains}
        self.layouts: dict[str, MarketLayout] = {}
        # One per position, plus the put ladder's buyer when it is not a position.
        self.proposers: list[Proposer] = []
        self.schedule = IntervalSchedule()
        self.ops = parts.ops
        self._failures = 0  # consecutive failed ticks, for the exporter (tick_loop halts)
        self._heads: dict[str, HeadWatch] = {}  # per chain: a tick never goes back

    @property
    def _several(self) -> bool:
        return self.parts.parts.several

    async def setup(self) -> None:
        p, settings = self.parts, self.settings
        chains = list(p.chains)
        # a one-line error when a chain's rpc_url is not set or answers for another chain
        await all_at_once(p.rpc(c).ensure_chain(c.chain_id) for c in chains)
        await refuse_unusable_live(p)
        # Before anything else the daemon does: live sends without an outcome are settled,
        # each on its own chain's RPC; proposals committed but not journaled get their line.
        await recovery.recover(
            settings.sinks.live,
            p.rpcs_by_id,
            p.ledger,
            p.journal,
            [p.sinks_of(c) for c in chains],
        )
        layouts = await all_at_once(discover(p.rpc(c), c.config) for c in chains)
        self.layouts = {c.name: lay for c, lay in zip(chains, layouts, strict=True)}
        self.proposers = [
            p.proposer(pos, self.layouts[pos.chain.name], puts)
            for pos, puts in proposer_positions(p.parts)
        ]
        # Autonomous sends of each chain: settled on that chain's RPC, and a fresh intent a
        # kill left unsent is broadcast (its journaled bytes: it can only be mined once).
        for own in {id(x.sinks): x.sinks for x in self.proposers}.values():
            await recovery.recover_autonomous(own)
        if settings.policy.spx.enabled and p.parts.spx is None:
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
            *(fork_source(c.name, several=self._several) for c in chains if c.fork.enabled),
            *(f"api:{c.name}" for c in build_http_collectors(settings.collectors)),
        )
        self.ops.telemetry.expect_fresh(*(f"rpc:{name}" for name in self.layouts), "store")
        for lay in self.layouts.values():
            log.info(
                "agent.ready",
                chain=lay.chain,
                chain_id=self.chains[lay.chain].chain_id,
                pool=lay.pool,
                reserves=[r.symbol for r in lay.reserves],
                accounts=list(lay.accounts),
            )
        if settings.multi_chain:
            log.info(
                "agent.positions",
                positions=[
                    f"{x.position.name} ({x.account} on {x.chain.name})" for x in self.proposers
                ],
                puts=next(
                    (f"{x.chain.name} by {x.account}" for x in self.proposers if x.puts.venue),
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
                    snaps[name] = await read_snapshot(self.parts.rpc(p.chain), self.layouts[name])
            except AgentError as exc:
                log.warning("fork.warm_up_failed", chain=name, error=str(exc))
                continue
            warmed += await p.warm_up(snaps[name])
        log.info("fork.warmed", positions=warmed, ms=round((time.perf_counter() - t0) * 1000))

    async def backfill(self) -> int:
        """The start-up backfill of every chain (``agent.pipeline.backfill.startup_backfill``:
        the same on-chain task as ``hedge-agent backfill``, from where the store ends)."""
        p = self.parts
        return await startup_backfill(
            self.settings, p.store, p.chains, rpcs=p.rpcs, layouts=self.layouts
        )

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
            chain = self.chains[name]
            await self.ops.recycle_fork(self.parts.simulator(chain, lay), chain.fork.recycle_rss_mb)
        for guarded in guarded_positions(self.parts.parts.positions):  # each guardian, its chain
            await self.ops.watch_guardian(self.parts.rpc(guarded.chain), self.settings, guarded)
        return report

    async def _diagnose(self, chain: Chain) -> None:
        """A chain gave no snapshot: if its RPC now answers for another chain, halt (a
        provider moved to another chain); any other failure is the snapshot's own error."""
        try:
            await self.parts.rpc(chain).ensure_chain(chain.chain_id)
        except WrongChain as exc:
            raise Halt(str(exc)) from exc
        except AgentError:
            pass  # not answering at all: the snapshot's error says it

    async def _markets(self, collected: Mapping[str, CollectReport]) -> dict[str, MarketRead]:
        """The chains whose snapshot this tick can evaluate: each checked for its chain id
        and for a block never older than the last tick's; the others are logged and wait."""
        several = self._several
        markets: dict[str, MarketRead] = {}
        errors: list[str] = []
        for name, report in collected.items():
            for label, ok, error in source_states(name, report, several=several):
                self.ops.source(label, ok, error)
            chain = self.chains[name]
            snap = report.snapshot
            if snap is None:
                await self._diagnose(chain)  # halts on a provider moved to another chain
                onchain = report.sources.get("onchain")
                why = onchain.errors[0] if onchain and onchain.errors else "no chain snapshot"
                errors.append(f"{name}: {why}" if several else why)
                continue
            # Every tick, not only at start: the chain id read in the snapshot's own batch.
            if snap.chain_id is not None and snap.chain_id != chain.chain_id:
                wrong = self.parts.rpc(chain).wrong_chain(snap.chain_id, chain.chain_id)
                raise Halt(str(wrong))
            try:  # never a block, or a chain time, older than the last tick's
                self._heads.setdefault(name, HeadWatch(f"rpc:{name}")).accept(
                    snap.block_number, snap.timestamp
                )
            except ChainWentBack as exc:
                self.ops.source(f"rpc:{name}", False, str(exc))
                errors.append(f"{name}: {exc}" if several else str(exc))
                continue
            markets[name] = MarketRead(self.layouts[name], snap)
            self.ops.telemetry.chain_read(name, snap.block_number, snap.timestamp)
        if not markets:
            raise AgentError("; ".join(errors) or "no chain snapshot this tick")
        for e in errors:
            log.warning("chain.unread", error=e, note="its positions wait for the next tick")
        return markets

    async def _tick(self, tick_id: int) -> TickReport:
        assert self.layouts and self.proposers
        p = self.parts
        structlog.contextvars.bind_contextvars(tick_id=tick_id)
        METRICS.reset()
        # Live sends settle on their chain's RPC (autonomous sends also on their executor's,
        # below); journal lines that could not be written are retried either way.
        await recovery.each_tick(
            self.settings.sinks.live,
            p.rpcs_by_id,
            p.ledger,
            p.journal,
            [p.sinks_of(c) for c in p.chains],
        )
        for sinks in {id(x.sinks): x.sinks for x in self.proposers}.values():
            await recovery.settle_autonomous(sinks)
        # The same collection as `hedge-agent collect`, every chain at once: one failing side
        # source is logged and skipped; a chain without its snapshot is not evaluated this
        # tick (its positions wait); without any snapshot there is nothing to evaluate. The
        # chain-independent sources go with the first chain.
        collected = await collect_chains(
            self.settings,
            p.store,
            p.chains,
            rpcs=p.rpcs,
            http=p.http,
            layouts=self.layouts,
            due=self.schedule,
            check_heads=True,
        )
        markets = await self._markets(collected)
        # The tick's block and time are those of the chain that sets the evaluation clock.
        snap = clock_snapshot(markets)
        structlog.contextvars.bind_contextvars(block_number=snap.block_number)
        # Committed proposals still waiting for their journal line are part of the memory too.
        history = p.journal.records() + pending_records(p.ledger)
        evaluation = evaluate(
            p.store,
            self.settings,
            p.parts.positions,
            markets,
            history,
            ledger=p.ledger,
            options_enabled=p.parts.puts is not None,
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
            proposals = await self._propose(markets, evaluation, stale_problems(collected.values()))
            # The S&P 500 side (issue 15): an advisory ticket after the DeFi proposals, through
            # the sinks of the chain sinks.spx_ticket_position names (its chain read this tick).
            proposals += spx_ticket(
                p.store, self.settings, p.parts.spx, p.sinks, markets, evaluation
            )
        else:
            # Paused: recovery and retries of already-committed work ran above; nothing new.
            for chain in p.chains:
                if chain.fork.enabled:
                    self.ops.telemetry.set_idle(
                        fork_source(chain.name, several=self._several),
                        "paused: nothing is simulated",
                    )
            log.warning(
                "proposals.paused",
                withheld=len(evaluation.actions()),
                note="hedge-agent resume to propose again",
            )
        # The session gauges after this tick's proposals (the decision saw the ledger before).
        spent = p.ledger.session_spent_usd(evaluation.session_id)
        self.ops.telemetry.session_ledger(float(evaluation.decision.session_cap_usd), float(spent))
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
            label = fork_source(chain, several=self._several)
            try:
                out += await proposer.propose(read.snap, evaluation, stale, actions=actions)
            except Exception as exc:
                if fork is not None:
                    self.ops.source(label, False, f"{type(exc).__name__}: {exc}")
                raise
            if fork is not None:
                self.ops.source(label, True)
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
