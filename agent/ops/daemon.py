"""The daemon's operations side in one place, so the runner reports facts at a few call sites
and stays a loop: metrics and health (``Telemetry`` + ``OpsServer``), notifications
(``Notifier``), the pause switch and the failing-source watch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from agent.collectors.onchain import ChainConfig
from agent.config import Settings
from agent.core.errors import ConfigError
from agent.core.rpc import RpcClient
from agent.core.rpc_pool import HeadCheck
from agent.ops.guardian import GuardianWatch
from agent.ops.pause import PauseState, PauseSwitch, pause_path
from agent.ops.procmem import rss_bytes
from agent.ops.server import OpsServer
from agent.ops.telemetry import Telemetry
from agent.pipeline.parts import Position
from agent.simulator.fork import ForkSimulator
from agent.sinks.notify import (
    Notice,
    Notifier,
    SourceWatch,
    guard_critical_notice,
    halt_notice,
    pause_notice,
    proposal_notice,
)

log = structlog.get_logger("agent.ops")


class Operations:
    def __init__(self, settings: Settings) -> None:
        a = settings.agent
        self.telemetry = Telemetry(
            tick_interval_s=a.tick_interval_s,
            error_budget=a.error_budget,
            readiness_max_age_s=a.readiness_max_age_s or max(30.0, 2 * a.tick_interval_s),
        )
        self.server = OpsServer(self.telemetry, a.http.listen) if a.http.listen else None
        cfg = settings.sinks.notify
        try:
            self.notifier = Notifier(cfg, count=self._count_notice)
        except ValueError as exc:
            raise ConfigError(f"{settings.origin}: {exc}") from None
        self.sources = SourceWatch(cfg.source_failing_after_s)
        self.guardian = GuardianWatch(self.telemetry)
        self.switch = PauseSwitch(pause_path(a.store_path))
        self._pause: PauseState | None = None
        self._server_task: asyncio.Task[None] | None = None

    def rpc_hooks(
        self, chain: ChainConfig
    ) -> tuple[Callable[[str], None], Callable[[HeadCheck], None]]:
        """What a chain's rotating pool reports (App builds the pool): each switch counted per
        reason, each head check's lagging URLs."""

        def rotated(reason: str) -> None:
            self.telemetry.rpc_rotations.labels(chain.name, reason).inc()
            log.warning("rpc.rotated", chain=chain.name, reason=reason)

        def heads(check: HeadCheck) -> None:
            self.telemetry.rpc_heads(chain.name, check)
            if check.lagging:
                log.warning(
                    "rpc.lagging",
                    chain=chain.name,
                    lagging=list(check.lagging),
                    best_head=check.best,
                    max_lag_blocks=chain.max_lag_blocks,
                    using=check.active,
                    providers=check.describe(),
                )

        return rotated, heads

    def _count_notice(self, kind: str, outcome: str) -> None:
        self.telemetry.notifications.labels(kind, outcome).inc()

    def _notify(self, notice: Notice) -> None:
        self.notifier.submit(notice)
        self.telemetry.notify_queue.set(self.notifier.depth)

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Bind the metrics server now (a taken port is a one-line error before anything
        else) and run it and the notifier as tasks of the daemon's task group."""
        self.notifier.start(tasks)
        if self.server is not None and self._server_task is None:
            await self.server.start()
            self._server_task = tasks.create_task(self.server.serve(), name="ops-server")
            log.info("ops.listening", host=self.server.host, port=self.server.port)

    async def stop(self) -> None:
        """End the tasks (queued notices, a halt, get their chance to go out first)."""
        await self.notifier.stop()
        if self._server_task is not None:
            self._server_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._server_task
            self._server_task = None

    async def close(self) -> None:
        """The composition root's close: the tasks, then the metrics observer."""
        await self.stop()
        self.telemetry.close()

    # -- facts the runner reports --------------------------------------------------------------

    def source(self, name: str, ok: bool, error: str | None = None) -> None:
        """A dependency answered (or not): readiness, and a notice when it fails too long."""
        self.telemetry.dependency(name, ok, error)
        notice = self.sources.ok(name) if ok else self.sources.failed(name, error or "failed")
        if notice is not None:
            self._notify(notice)

    def proposals_allowed(self) -> bool:
        """Read the pause switch; log, count and notify each change. False while paused."""
        state = self.switch.read()
        if self._pause is None or state.paused != self._pause.paused:
            if state.paused:
                log.warning("agent.paused", reason=state.reason, since=state.since)
            elif self._pause is not None:
                log.info("agent.resumed")
            if self._pause is not None or state.paused:
                self._notify(pause_notice(state.paused, state.reason))
        self._pause = state
        self.telemetry.set_paused(state.paused)
        return not state.paused

    def evaluated(self, decision: Any, signals: Iterable[Any], *, paused: bool) -> None:
        self.telemetry.signals(signals)
        self.telemetry.decision(decision, paused=paused)

    def guarded(self, report: Any) -> None:
        """The liquidation guard of every position (``agent.pipeline.guarding.GuardReport``): its
        gauges, one log line per position, and a critical HF as the first notice out."""
        self.telemetry.guard(report.views)
        for v in report.views:
            g = v.prices
            log.info(
                "guard",
                position=v.label,
                chain=v.position.chain,
                verdict=v.verdict.kind,
                health_factor=v.verdict.health_factor_wad / 1e18
                if v.verdict.health_factor_wad < 2**255
                else None,
                trigger_hf=v.verdict.trigger.trigger_hf_wad / 1e18,
                stressed=v.verdict.trigger.stressed,
                liquidation_price=None if g is None else g.liquidation_price / 1e8,
                guard_price=None if g is None else g.guard_price / 1e8,
                reason=v.verdict.reason,
            )
        for v in report.critical():
            self._notify(guard_critical_notice(v.label, v.lines()))

    def proposals(self, records: Iterable[Mapping[str, Any]]) -> None:
        for r in records:
            self.telemetry.proposal(r)
            self._notify(proposal_notice(r))

    async def watch_guardian(self, rpc: RpcClient, s: Settings, position: Position) -> None:
        """Between ticks: ``position``'s guardian's balances on its chain and the guard
        actions they cover, as gauges, at most every that guardian's ``refresh_s``."""
        await self.guardian.refresh(rpc, s, position)

    async def recycle_fork(self, simulator: ForkSimulator | None, limit_mb: int) -> bool:
        """Stop the fork anvil between ticks when its memory passed ``limit_mb``; the next
        simulation starts a fresh one."""
        if simulator is None or limit_mb <= 0 or simulator.pid is None:
            return False
        rss = rss_bytes(simulator.pid)
        if rss is None or rss < limit_mb * 2**20:
            return False
        log.info("fork.recycled", rss_mb=round(rss / 2**20, 1), limit_mb=limit_mb)
        await simulator.stop()
        self.telemetry.forks_recycled.inc()
        return True

    def halted(self, reason: str) -> None:
        self._notify(halt_notice(reason))
