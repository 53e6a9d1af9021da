"""The proposal pipeline for one decision: plan → simulate → sink, one action at a time.

Each stage takes and returns a frozen record: ``agent.planner.draft`` turns a policy action into
a ``Draft`` (transactions, sizing under the session cap), ``agent.simulator.outcome`` executes it
on the fork into an ``Outcome``, and ``agent.sinks.publish`` validates the journal record and
delivers it. When the Safe Transaction Service sink is on, the sinks first set the draft's Safe
transaction to the nonce after the service's queue, so the fork executes what the signers will
see. This module only sequences them. A proposal whose planning or simulation fails is
still recorded, with the reason; the journal never holds an idempotency key twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog

from agent.config import OptionsConfig
from agent.core.errors import AgentError
from agent.core.market import ChainSnapshot, MarketLayout
from agent.core.rpc import RpcClient
from agent.core.units import WAD
from agent.pipeline.evaluate import Evaluation
from agent.pipeline.parts import Position, PutLadder
from agent.planner.draft import (
    DeleverageConfig,
    Draft,
    LayerBudget,
    ProposalHeader,
    ProtectionConfig,
    PutConfig,
    SpendCap,
    as_safe_batch,
    plan_protection,
    plan_put,
)
from agent.planner.options import PremiaV3Venue
from agent.planner.uniswap import UniswapConfig
from agent.policy import OptionAction, PolicyConfig, TopUpAction
from agent.simulator.fork import ForkSimulator
from agent.simulator.outcome import simulate
from agent.sinks.publish import ProposalSinks
from agent.store.ledger import ProposalLedger

log = structlog.get_logger(__name__)


def deleverage_config(u: UniswapConfig, *, immediate: bool = False) -> DeleverageConfig | None:
    """``immediate``: the deleverage is sent at once (an autonomous position with [roles])."""
    venue = u.venue()
    if venue is None:
        return None
    return DeleverageConfig(
        venue=venue,
        hf_floor_wad=int(u.hf_floor * WAD),
        slippage_bps=u.slippage_bps,
        immediate_slippage_bps=u.immediate_slippage_bps,
        # sent at once through the Roles module (sinks/autonomous.py): mined within a block or
        # two, so its bound is the immediate one; otherwise it waits for the signers
        execution="immediate" if immediate else "signers",
    )


def options_venue(o: OptionsConfig) -> PremiaV3Venue | None:
    if not (o.enabled and o.configured):
        return None
    assert o.pool_factory and o.oracle_adapter and o.base and o.quote and o.erc20_router
    return PremiaV3Venue(
        pool_factory=o.pool_factory,
        oracle_adapter=o.oracle_adapter,
        base=o.base,
        quote=o.quote,
        erc20_router=o.erc20_router,
        quote_decimals=o.quote_decimals,
    )


class Proposer:
    """The proposer of one position on its chain; with ``puts`` it also buys the put ladder
    (``position`` is then the ladder's buyer)."""

    def __init__(
        self,
        position: Position,
        layout: MarketLayout,
        *,
        policy: PolicyConfig,
        puts: PutLadder | None,
        rpc: RpcClient,
        ledger: ProposalLedger,
        simulator: ForkSimulator | None,
        sinks: ProposalSinks,
    ) -> None:
        self.position = position
        self.chain = position.chain
        self.policy = policy
        self.layout = layout
        self.rpc = rpc
        self.ledger = ledger
        self.simulator = simulator
        self.sinks = sinks
        self.protection = ProtectionConfig(
            topup_asset=self.position.topup_asset,
            repay_asset=self.position.repay_asset,
            deleverage=deleverage_config(self.chain.dex, immediate=position.immediate),
            guardian=position.guardian,
        )
        venue = puts.venue if puts is not None else None
        self.puts = PutConfig(
            venue=None if venue is None else options_venue(venue),
            slippage_bps=100 if venue is None else venue.slippage_bps,
            lot_wad=10**16 if venue is None else venue.lot_wad,
            underlying=policy.option_underlying,
        )

    @property
    def account(self) -> str:
        return self.position.account or self.layout.accounts[0]

    async def propose(
        self,
        snap: ChainSnapshot,
        evaluation: Evaluation,
        warnings: Sequence[str] = (),
        *,
        actions: Sequence[TopUpAction | OptionAction] | None = None,
    ) -> list[dict[str, Any]]:
        """Plan and simulate ``actions`` (default: all the decision's) in order on one fork
        state, so each sees the ones before it (the put planner reads wallet balances through
        the fork). ``warnings`` (a stale feed) are written into every record of the tick."""
        todo: list[TopUpAction | OptionAction] = (
            list(evaluation.actions()) if actions is None else list(actions)
        )
        if self.simulator is None:
            return await self._propose_all(snap, evaluation, todo, self.rpc, tuple(warnings))
        if not todo:
            # Nothing to simulate: do not move the fork (anvil_reset costs ~40 upstream reads),
            # only check that it still answers, so a frozen one is replaced before it is needed.
            await self.simulator.keep_warm()
            return []
        async with self.simulator.sequence(snap.block_number) as fork_rpc:
            return await self._propose_all(snap, evaluation, todo, fork_rpc, tuple(warnings))

    async def warm_up(self, snap: ChainSnapshot) -> bool:
        """Start-up priming: plan and simulate this position's protection (to half a point of
        HF above where it stands) and, when this proposer buys it, the put ladder on the fork,
        and discard them: nothing is published or recorded. The fork's relay keeps the state
        it read (the position's working set: reserves, tokens, the Safe, the DEX and put pools),
        the fork loads it (``ForkSimulator.prime``), and the relay fetches it again in batches
        when the fork moves to a later block, so the first trigger's proposal is as warm as the
        later ones. Only a speed-up: a failure is logged
        and start-up goes on."""
        account = snap.accounts.get(self.account)
        if self.simulator is None or account is None or account.total_debt_base == 0:
            return False
        hf = min(account.health_factor_wad, 10 * WAD)
        key = f"warm-up:{self.account.lower()}"
        action = TopUpAction(
            account=self.account,
            target_health_factor_wad=hf + WAD // 2,
            max_spend_usd=Decimal(10**12),
            required_collateral_base=0,
            required_collateral_usd=Decimal(0),
            idempotency_key=key,
            action_key=key,
        )
        header = ProposalHeader(
            id=key,
            idempotency_key=key,
            created_at=datetime.fromtimestamp(snap.timestamp, UTC).isoformat(),
            chain=self.chain.name,
            chain_id=self.chain.chain_id,
            block_number=snap.block_number,
            account=self.account,
            explanation=(),
            evidence={},
            policy={},
        )
        cap = SpendCap(session_id=key, cap_usd=Decimal(10**12), spent_usd=Decimal(0))
        multisend = self.position.multisend_call_only
        safe = self.position.kind == "safe" and multisend is not None
        try:
            async with self.simulator.sequence(snap.block_number) as fork_rpc:
                draft = await plan_protection(
                    header, snap, self.layout, action, cap, self.protection, fork_rpc
                )
                if safe and draft.planned and multisend and draft.sender is None:
                    draft = as_safe_batch(draft, multisend)
                await simulate(draft, self.simulator, snap.block_number)
                if self.puts.venue is not None:
                    for h in self.policy.horizons:
                        put = OptionAction(h.name, self.puts.underlying, h.dte_min, h.dte_max,
                                           h.otm_fraction, Decimal(1_000), key, key)  # fmt: skip
                        d = await plan_put(header, snap, self.layout, put, cap, self.puts, fork_rpc)
                        if safe and d.planned and multisend:
                            d = as_safe_batch(d, multisend)
                        await simulate(d, self.simulator, snap.block_number)
            # What they read, loaded into the fork outside the reverted snapshot: a trigger at
            # this block loads nothing, a later block fetches the same set in batches.
            accounts, slots = await self.simulator.prime()
        except AgentError as exc:
            log.warning("fork.warm_up_failed", account=self.account, error=str(exc))
            return False
        log.info("fork.primed", account=self.account, accounts=accounts, slots=slots)
        return True

    def owns(self, action: TopUpAction | OptionAction) -> bool:
        """Whether ``action`` is this position's: its top-up (same chain and account), or the
        put ladder when this proposer buys it."""
        if isinstance(action, OptionAction):
            return self.puts.venue is not None
        return action.account.lower() == self.account.lower() and action.chain == self.chain.name

    async def _propose_all(
        self,
        snap: ChainSnapshot,
        evaluation: Evaluation,
        actions: Sequence[TopUpAction | OptionAction],
        reader: RpcClient,
        warnings: tuple[str, ...] = (),
    ) -> list[dict[str, Any]]:
        out = []
        for action in actions:
            record = await self.propose_one(snap, evaluation, action, reader, warnings)
            if record is not None:
                out.append(record)
        return out

    async def propose_one(
        self,
        snap: ChainSnapshot,
        evaluation: Evaluation,
        action: TopUpAction | OptionAction,
        reader: RpcClient,
        warnings: tuple[str, ...] = (),
    ) -> dict[str, Any] | None:
        if self.sinks.seen(action.idempotency_key):
            return None
        draft = await self.plan(snap, evaluation, action, reader)
        if warnings:
            draft = replace(draft, header=replace(draft.header, warnings=warnings))
        # The Safe service's queue decides the nonce before the fork executes the batch.
        draft, service_nonce = await self.sinks.at_service_nonce(draft)
        outcome = await simulate(draft, self.simulator, snap.block_number)
        return await self.sinks.publish(
            outcome,
            session_id=evaluation.ledger_session(action),
            at=snap.timestamp,
            service_nonce=service_nonce,
        )

    async def plan(
        self,
        snap: ChainSnapshot,
        evaluation: Evaluation,
        action: TopUpAction | OptionAction,
        reader: RpcClient,
    ) -> Draft:
        cap = self._cap(evaluation, action)
        if isinstance(action, TopUpAction):
            header = self._header(snap, evaluation, action.idempotency_key, action.action_key)
            draft = await plan_protection(
                header, snap, self.layout, action, cap, self.protection, reader
            )
        else:
            header = self._header(
                snap, evaluation, action.idempotency_key, action.action_key, action.horizon
            )
            draft = await plan_put(
                header,
                snap,
                self.layout,
                action,
                cap,
                self.puts,
                reader,
                exposure_base=evaluation.collateral_base or None,
            )
        pos = self.position
        # a guardian's draft is sent by the guardian, not batched for the Safe's signers
        if pos.kind != "safe" or not draft.planned or draft.sender is not None:
            return draft
        if not pos.multisend_call_only:
            raise AgentError(
                f"position {pos.name or self.account}: multisend_call_only is required for a Safe"
            )
        return as_safe_batch(draft, pos.multisend_call_only)

    def _cap(self, evaluation: Evaluation, action: TopUpAction | OptionAction) -> SpendCap:
        d = evaluation.decision
        guard = evaluation.guard.view_of(action.action_key)
        if guard is not None:
            # The guard's own budget, in its own ledger session: neither the layer's session
            # cap nor B (issue 22).
            return SpendCap(
                session_id=guard.ledger_session,
                cap_usd=guard.cfg.budget_usd,
                spent_usd=Decimal(self.ledger.session_spent_usd(guard.ledger_session)),
                priority="guard",
            )
        # B bounds the open layers: this action's room is what the decision left for it (the
        # room after every action it sized, plus this action's own share).
        return SpendCap(
            session_id=evaluation.session_id,
            cap_usd=Decimal(self.policy.session_cap_usd),
            spent_usd=Decimal(self.ledger.session_spent_usd(evaluation.session_id)),
            priority=d.priority,
            size_fraction=d.size_fraction,
            budget=LayerBudget(
                budget_usd=d.budget_usd,
                open_usd=d.open_layers_usd,
                room_usd=d.budget_room_usd,
                action_room_usd=d.budget_room_usd - d.proposed_spend_usd + action.spend_usd,
                frees_next=d.budget_frees_next,
            ),
        )

    def _header(
        self,
        snap: ChainSnapshot,
        evaluation: Evaluation,
        key: str,
        action_key: str,
        horizon: str | None = None,
    ) -> ProposalHeader:
        return ProposalHeader(
            id=uuid.uuid4().hex[:12],
            idempotency_key=key,
            created_at=datetime.fromtimestamp(snap.timestamp, UTC).isoformat(),
            chain=self.chain.name,
            chain_id=self.chain.chain_id,
            block_number=snap.block_number,
            account=self.account,
            position=self.position.name,
            explanation=tuple(evaluation.explain()),
            evidence=evaluation.evidence(),
            policy=evaluation.policy_entry(action_key, horizon=horizon),
        )
