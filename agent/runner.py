"""The daemon: one tick = collect → store → signals → policy → plan → simulate → sinks.

Shape borrowed from silverback's runner: OS signals only set an event; the loop checks it
between ticks; shutdown always runs (both anvils are stopped); consecutive failed ticks spend
an error budget, and ``Halt`` stops the daemon on purpose. ``once=True`` runs a single tick
(arq's burst mode), which is what tests drive.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

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
from agent.core.errors import AgentError, Halt, PlanningError
from agent.core.metrics import METRICS
from agent.core.rpc import RpcClient
from agent.core.units import AAVE_BASE_UNIT_USD, WAD
from agent.evaluate import evaluate
from agent.planner.safe import build_safe_tx
from agent.planner.topup import TopUpPlan, plan_topup
from agent.simulator.fork import ForkSimulator, SimulationResult
from agent.sinks.journal import ProposalJournal
from agent.sinks.render import render_proposal
from agent.store.sqlite import Store

log = structlog.get_logger("agent")


@dataclass
class TickReport:
    tick_id: int
    block_number: int
    timestamp: int
    stored: int
    problems: list[str]
    decision: Any = None
    proposals: list[dict[str, Any]] = field(default_factory=list)


class Agent:
    """The wired pipeline for one chain. Holds connections, not logic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        chain = settings.chain
        self.rpc = RpcClient(
            chain.rpc_url.get_secret_value(), source=f"rpc:{chain.name}", timeout_s=chain.timeout_s
        )
        Path(settings.agent.store_path).parent.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.agent.store_path)
        self.journal = ProposalJournal(settings.agent.journal_path)
        self.layout: MarketLayout | None = None
        self.simulator: ForkSimulator | None = None

    async def setup(self) -> MarketLayout:
        chain = self.settings.chain
        if not chain.rpc_url.get_secret_value():
            raise AgentError(f"{self.settings.origin}: chain.rpc_url is not set")
        await self.rpc.ensure_chain(chain.chain_id)
        self.layout = await discover(self.rpc, chain)
        if self.settings.simulator.enabled:
            self.simulator = ForkSimulator(
                chain.rpc_url.get_secret_value(),
                pool=self.layout.pool,
                block_lag=self.settings.simulator.block_lag,
                chain_id=chain.chain_id,
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
        if self.simulator is not None:
            await self.simulator.stop()
        await self.rpc.close()
        self.store.close()

    async def tick(self, tick_id: int) -> TickReport:
        assert self.layout is not None
        structlog.contextvars.bind_contextvars(tick_id=tick_id)
        METRICS.reset()
        snap = await read_snapshot(self.rpc, self.layout)
        structlog.contextvars.bind_contextvars(block_number=snap.block_number)
        obs, problems = snapshot_observations(
            snap, self.layout, net_of_debt=self.settings.chain.tvl_net_of_debt
        )
        stored = self.store.upsert(obs)
        for p in problems:
            log.warning("collect.problem", problem=p)
        if self.settings.scenario.feed:
            feed = load_scenario_feed(self.settings.scenario.feed)
            stored += self.store.upsert(feed)
            log.info(
                "scenario.loaded",
                data_origin="scenario",
                observations=len(feed),
                feed=self.settings.scenario.feed,
            )
        report = TickReport(tick_id, snap.block_number, snap.timestamp, stored, problems)
        report.decision = evaluation = evaluate(
            self.store, self.settings, self.layout, snap, self.journal.read()
        )
        for line in evaluation.log_lines():
            log.info("signal", **line)
        log.info("decision", **evaluation.summary())
        for action in evaluation.topups():
            record = await self.propose_topup(snap, evaluation, action)
            if record is not None:
                report.proposals.append(record)
        log.info(
            "tick.done", rpc=METRICS.snapshot(), proposals=len(report.proposals), stored=stored
        )
        return report

    async def propose_topup(
        self, snap: ChainSnapshot, evaluation: Any, action: Any
    ) -> dict[str, Any] | None:
        assert self.layout is not None
        s = self.settings
        key = action.idempotency_key
        if self.journal.has(key):
            log.info(
                "proposal.duplicate",
                idempotency_key=key,
                note="already in the journal; not proposed again",
            )
            return None
        account_addr = s.position.account or self.layout.accounts[0]
        account = snap.accounts[account_addr]
        asset = self.layout.reserve(s.position.topup_asset)
        reserve = snap.reserves[asset.symbol]
        target_hf_wad = int(action.target_health_factor_wad)
        max_spend_base = int(Decimal(action.max_spend_usd) * AAVE_BASE_UNIT_USD)
        now = datetime.fromtimestamp(snap.timestamp, UTC)
        record: dict[str, Any] = {
            "id": uuid.uuid4().hex[:12],
            "idempotency_key": key,
            "created_at": now.isoformat(),
            "chain": s.chain.name,
            "chain_id": s.chain.chain_id,
            "block_number": snap.block_number,
            "account": account_addr,
            "action": "collateral_top_up",
            "explanation": evaluation.explain(),
            "evidence": evaluation.evidence(),
            "policy": evaluation.policy_entry(action.action_key),
        }
        try:
            plan = plan_topup(
                layout=self.layout,
                account_addr=account_addr,
                account=account,
                asset=asset,
                reserve=reserve,
                target_hf_wad=target_hf_wad,
                max_spend_base=max_spend_base,
                allowance=account.pool_allowances.get(asset.symbol, 0),
            )
        except PlanningError as exc:
            record |= {"status": "planning_failed", "error": str(exc), "transactions": []}
            log.warning("proposal.not_planned", idempotency_key=key, reason=str(exc))
            self.journal.append(record)
            return record
        record["transactions"] = [t.as_dict() for t in plan.transactions]
        record["sizing"] = evaluation.sizing(plan.value_base / AAVE_BASE_UNIT_USD) | {
            "amount": str(plan.amount),
            "asset": asset.symbol,
            "capped_by": plan.capped_by,
            "needed_value_usd": plan.needed_value_base / AAVE_BASE_UNIT_USD,
        }
        sim = await self.simulate(snap, plan)
        record["simulation"] = simulation_record(sim, plan, target_hf_wad) if sim else None
        if sim is not None and s.position.kind == "safe" and s.position.multisend_call_only:
            st = build_safe_tx(account_addr, s.position.multisend_call_only, plan.transactions)
            record["safe_tx"] = {
                "safe": st.safe,
                "to": st.to,
                "value": str(st.value),
                "data": st.data,
                "operation": st.operation,
            }
        record["status"] = (
            "simulated" if sim and sim.success else ("simulation_failed" if sim else "planned")
        )
        if self.journal.append(record):
            self.store.record_spend(
                evaluation.session_id,
                key,
                Decimal(plan.value_base) / AAVE_BASE_UNIT_USD,
                snap.timestamp,
            )
        self._log_proposal(record)
        return record

    def _log_proposal(self, record: dict[str, Any]) -> None:
        head = {k: record.get(k) for k in ("id", "status", "action", "account", "idempotency_key")}
        if self.settings.agent.log_format == "console":
            # A terminal gets the readable block instead of one very long line.
            log.info("proposal", **head)
            print(render_proposal(record), flush=True)
            return
        log.info("proposal", **head, **{k: v for k, v in record.items() if k not in head})

    async def simulate(self, snap: ChainSnapshot, plan: TopUpPlan) -> SimulationResult | None:
        if self.simulator is None:
            return None
        s = self.settings
        if s.position.kind == "safe":
            if not s.position.multisend_call_only:
                raise AgentError(f"{s.origin}: position.multisend_call_only is required for a Safe")
            st = build_safe_tx(plan.account, s.position.multisend_call_only, plan.transactions)
            return await self.simulator.simulate_safe(
                snap.block_number, st, plan.account, "Safe.execTransaction (top-up batch)"
            )
        return await self.simulator.simulate_eoa(
            snap.block_number, plan.account, plan.transactions, plan.account
        )


def simulation_record(sim: SimulationResult, plan: TopUpPlan, target_hf_wad: int) -> dict[str, Any]:
    def hf(v: int | None) -> float | None:
        return None if v is None or v >= 2**255 else v / WAD

    return {
        "success": sim.success,
        "fork_block": sim.fork_block,
        "error": sim.error,
        "target_health_factor": target_hf_wad / WAD,
        "expected_health_factor": hf(plan.hf_expected_wad),
        "health_factor_before": hf(sim.before.health_factor_wad) if sim.before else None,
        "health_factor_after": hf(sim.after.health_factor_wad) if sim.after else None,
        "collateral_usd_before": sim.before.total_collateral_base / AAVE_BASE_UNIT_USD
        if sim.before
        else None,
        "collateral_usd_after": sim.after.total_collateral_base / AAVE_BASE_UNIT_USD
        if sim.after
        else None,
        "debt_usd_before": sim.before.total_debt_base / AAVE_BASE_UNIT_USD if sim.before else None,
        "debt_usd_after": sim.after.total_debt_base / AAVE_BASE_UNIT_USD if sim.after else None,
        "transactions": [
            {
                "description": t.description,
                "success": t.success,
                "gas_used": t.gas_used,
                "tx_hash": t.tx_hash,
                "revert_reason": t.revert_reason,
                "events": [e.signature() for e in t.events],
            }
            for t in sim.transactions
        ],
    }


async def run(settings: Settings, *, once: bool = False) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    agent = Agent(settings)
    reports: list[TickReport] = []
    started = False
    try:
        await agent.setup()
        started = True
        await agent.backfill()
        failures = 0
        tick_id = 0
        while not stop.is_set():
            tick_id += 1
            try:
                reports.append(await agent.tick(tick_id))
                failures = 0
            except Halt:
                raise
            except AgentError as exc:
                failures += 1
                log.error(
                    "tick.failed",
                    error=str(exc),
                    failures=failures,
                    budget=settings.agent.error_budget,
                )
                if once:
                    raise
                if failures >= settings.agent.error_budget:
                    raise Halt(
                        f"{failures} consecutive failed ticks (error budget {settings.agent.error_budget}); last: {exc}"
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
            log.info("agent.stopped", ticks=len(reports))
    return 0
