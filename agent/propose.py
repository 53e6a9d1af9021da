"""planner → simulator → sinks for one decision.

For each action the policy sized: plan the transactions against the real ABIs, execute them on
the fork exactly as they will be signed, and hand the result to the sinks (structured log,
append-only journal, Safe Transaction Builder file, optionally the Safe Transaction Service and,
only when explicitly enabled, live submission). A proposal whose planning or simulation fails is
still recorded, with the reason. The journal never holds an idempotency key twice, and the spend
ledger counts only proposals that could be executed.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog

from agent.collectors.multicall import Call
from agent.collectors.onchain import ChainSnapshot, MarketLayout
from agent.config import Settings
from agent.core.abi import load_abi
from agent.core.errors import AgentError, PlanningError, SourceError
from agent.core.http import HttpClient
from agent.core.rpc import RpcClient
from agent.core.units import AAVE_BASE_UNIT_USD, WAD
from agent.evaluate import Evaluation
from agent.planner.options import OptionsPlannerConfig, PremiaV3Venue, plan_option_action
from agent.planner.repay import RepayPlan, choose_protection, plan_repay
from agent.planner.safe import SafeTx, build_safe_tx
from agent.planner.topup import TopUpPlan, plan_topup
from agent.planner.tx import PlannedTx
from agent.policy import OptionAction, TopUpAction
from agent.simulator.fork import ForkSimulator, SimulationResult
from agent.sinks.journal import ProposalJournal
from agent.sinks.live import LiveSender, check_live_allowed, open_sends_of, send_durably
from agent.sinks.outbox import publish
from agent.sinks.proposal import Proposal
from agent.sinks.render import render_proposal
from agent.sinks.safe_service import propose as propose_to_service
from agent.sinks.safe_service import read_safe_nonce, safe_tx_from_record
from agent.sinks.safe_tx_builder import write_batch_file
from agent.store.sqlite import Store

log = structlog.get_logger("agent.propose")


def _option_outcome(
    sim: SimulationResult, planned_size: int, quote_decimals: int
) -> dict[str, Any]:
    """What the put purchase did on the fork: the position held and the premium actually paid,
    from the pool's own ``Trade`` event (Premia reports amounts as 18-decimal UD60x18; they are
    converted to quote-token units, rounded up, to compare with the premium limit)."""
    trades = [e for t in sim.transactions for e in t.events if e.method == "Trade"]
    paid_wad = sum(int(e.args["premium"]) + int(e.args["takerFee"]) for e in trades)
    unit = 10 ** (18 - quote_decimals)
    paid = -(-paid_wad // unit)
    long_after = int(sim.reads["long"][0]) if "long" in sim.reads else None
    return {
        "option_long_after": str(long_after) if long_after is not None else None,
        "option_size_planned": str(planned_size),
        "premium_paid": str(paid),
        "premium_paid_usd": float(Decimal(paid) / Decimal(10) ** quote_decimals),
    }


def _hf(v: int | None) -> float | None:
    return None if v is None or v >= 2**255 else v / WAD


def simulation_record(sim: SimulationResult, target_hf_wad: int | None = None) -> dict[str, Any]:
    return {
        "success": sim.success,
        "fork_block": sim.fork_block,
        "error": sim.error,
        "target_health_factor": _hf(target_hf_wad),
        "health_factor_before": _hf(sim.before.health_factor_wad) if sim.before else None,
        "health_factor_after": _hf(sim.after.health_factor_wad) if sim.after else None,
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


class Proposer:
    def __init__(
        self,
        settings: Settings,
        layout: MarketLayout,
        *,
        rpc: RpcClient,
        store: Store,
        journal: ProposalJournal,
        simulator: ForkSimulator | None,
        http: HttpClient | None = None,
    ) -> None:
        self.s = settings
        self.layout = layout
        self.rpc = rpc
        self.store = store
        self.journal = journal
        self.simulator = simulator
        self.http = http
        self._live: LiveSender | None = None
        self._reader = rpc  # where planners read: the fork while a sequence runs
        self._warnings: tuple[str, ...] = ()  # data problems of the tick, carried by its records

    @property
    def account(self) -> str:
        return self.s.position.account or self.layout.accounts[0]

    async def close(self) -> None:
        if self._live is not None:
            await self._live.close()

    async def propose(
        self, snap: ChainSnapshot, evaluation: Evaluation, warnings: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Plan and simulate the decision's actions in order on one fork state, so each sees
        the ones before it (the put planner reads wallet balances through the fork).
        ``warnings`` (a stale feed) are written into every record of the tick."""
        self._warnings = tuple(warnings)
        if self.simulator is None:
            self._reader = self.rpc
            return await self._propose_all(snap, evaluation)
        async with self.simulator.sequence(snap.block_number) as fork_rpc:
            self._reader = fork_rpc
            try:
                return await self._propose_all(snap, evaluation)
            finally:
                self._reader = self.rpc

    def _remaining_usd(self, evaluation: Evaluation) -> Decimal:
        """What the session cap still allows, from the persisted spend ledger."""
        spent = self.store.session_spent_usd(evaluation.session_id)
        return max(Decimal(0), self.s.policy.session_cap_usd - spent)

    async def _propose_all(
        self, snap: ChainSnapshot, evaluation: Evaluation
    ) -> list[dict[str, Any]]:
        out = []
        for action in evaluation.topups():
            record = await self.protect(snap, evaluation, action)
            if record is not None:
                out.append(record)
        for option in evaluation.options():
            record = await self.buy_put(snap, evaluation, option)
            if record is not None:
                out.append(record)
        return out

    # -- records ---------------------------------------------------------------------------

    def _new_record(
        self,
        snap: ChainSnapshot,
        evaluation: Evaluation,
        key: str,
        action: str,
        policy: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex[:12],
            "idempotency_key": key,
            "created_at": datetime.fromtimestamp(snap.timestamp, UTC).isoformat(),
            "chain": self.s.chain.name,
            "chain_id": self.s.chain.chain_id,
            "block_number": snap.block_number,
            "account": self.account,
            "action": action,
            "explanation": evaluation.explain(),
            "evidence": evaluation.evidence(),
            "policy": policy,
            "warnings": list(self._warnings) or None,
        }

    def _duplicate(self, key: str) -> bool:
        # The outbox holds committed proposals whose journal line is still to be written.
        if self.journal.has(key) or self.store.in_outbox(key):
            log.info("proposal.duplicate", idempotency_key=key, note="already in the journal")
            return True
        return False

    # -- protection: top-up or repay -------------------------------------------------------

    async def protect(
        self, snap: ChainSnapshot, evaluation: Evaluation, action: TopUpAction
    ) -> dict[str, Any] | None:
        key = action.idempotency_key
        if self._duplicate(key):
            return None
        record = self._new_record(
            snap, evaluation, key, "collateral_top_up", evaluation.policy_entry(action.action_key)
        )
        account = snap.accounts.get(self.account)
        if account is None:
            return await self._failed(record, f"no account data for {self.account} in this tick")
        target = int(action.target_health_factor_wad)
        # The hard cap: never past what the session still allows, whatever the action says.
        spend_cap_usd = min(Decimal(action.max_spend_usd), self._remaining_usd(evaluation))
        max_spend_base = int(spend_cap_usd * AAVE_BASE_UNIT_USD)
        errors: list[str] = []
        topup: TopUpPlan | None = None
        repay: RepayPlan | None = None
        try:
            asset = self.layout.reserve(self.s.position.topup_asset)
            topup = plan_topup(
                layout=self.layout,
                account_addr=self.account,
                account=account,
                asset=asset,
                reserve=snap.reserves[asset.symbol],
                target_hf_wad=target,
                max_spend_base=max_spend_base,
                allowance=account.pool_allowances.get(asset.symbol, 0),
            )
        except (PlanningError, KeyError) as exc:
            errors.append(f"top-up: {exc}")
        if self.s.position.repay_asset:
            try:
                debt = self.layout.reserve(self.s.position.repay_asset)
                repay = plan_repay(
                    layout=self.layout,
                    account_addr=self.account,
                    account=account,
                    asset=debt,
                    reserve=snap.reserves[debt.symbol],
                    target_hf_wad=target,
                    max_spend_base=max_spend_base,
                )
            except (PlanningError, KeyError) as exc:
                errors.append(f"repay: {exc}")
        if topup is not None and Decimal(
            topup.value_base
        ) / AAVE_BASE_UNIT_USD > self._remaining_usd(evaluation):
            topup = None  # its safety margin would cross the session cap
            errors.append("top-up: would exceed the session cap")
        plan, comparison = choose_protection(topup, repay, target_hf_wad=target)
        record["comparison"] = comparison
        if plan is None:
            return await self._failed(record, "; ".join(errors) or "no protection plan")
        record["action"] = comparison["chosen"]
        spent = self.store.session_spent_usd(evaluation.session_id)
        record["sizing"] = evaluation.sizing(plan.value_base / AAVE_BASE_UNIT_USD, spent) | {
            "amount": str(plan.amount),
            "asset": plan.asset.symbol,
            "capped_by": plan.capped_by,
            "needed_value_usd": plan.needed_value_base / AAVE_BASE_UNIT_USD,
            "expected_health_factor": _hf(plan.hf_expected_wad),
        }
        label = f"{comparison['chosen']} {plan.asset.symbol}"
        return await self._finish(
            record,
            snap,
            evaluation,
            plan.transactions,
            label,
            spend_usd=Decimal(plan.value_base) / AAVE_BASE_UNIT_USD,
            target_hf_wad=target,
        )

    # -- deeper out-of-the-money puts ------------------------------------------------------

    def _venue(self) -> PremiaV3Venue | None:
        o = self.s.options
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

    async def buy_put(
        self, snap: ChainSnapshot, evaluation: Evaluation, action: OptionAction
    ) -> dict[str, Any] | None:
        key = action.idempotency_key
        if self._duplicate(key):
            return None
        record = self._new_record(
            snap,
            evaluation,
            key,
            "option_put",
            evaluation.policy_entry(action.action_key, horizon=action.horizon),
        )
        venue = self._venue()
        if venue is None:
            return await self._failed(
                record, "no options venue configured ([options] in the config)"
            )
        o = self.s.options
        remaining = self._remaining_usd(evaluation)
        if remaining < action.spend_usd:
            action = dataclasses.replace(action, spend_usd=remaining.quantize(Decimal("0.01")))
        try:
            plan = await plan_option_action(
                self._reader,
                venue,
                action,
                account=self.account,
                now=snap.timestamp,
                config=OptionsPlannerConfig(slippage_bps=o.slippage_bps, lot=o.lot_wad),
                max_size=self._exposure_contracts(snap),
            )
        except PlanningError as exc:
            return await self._failed(record, f"put {action.horizon}: {exc}")
        scale = Decimal(10) ** o.quote_decimals
        option = {k: v for k, v in plan.as_dict().items() if k != "transactions"}
        record["option"] = option
        premium_usd = Decimal(plan.premium_quote) / scale  # premiumNet already includes the fee
        spent = self.store.session_spent_usd(evaluation.session_id)
        record["sizing"] = evaluation.sizing(float(premium_usd), spent) | {
            "horizon": action.horizon,
            "budget_usd": str(action.spend_usd),
            "premium_limit_usd": str(Decimal(plan.premium_limit) / scale),
        }
        reads = [
            Call("long", plan.pool.address, load_abi("PremiaPool"), "balanceOf", (self.account, 1)),
            Call("quote_balance", venue.quote, load_abi("ERC20"), "balanceOf", (self.account,)),
        ]
        return await self._finish(
            record,
            snap,
            evaluation,
            plan.transactions,
            f"put {action.horizon}",
            spend_usd=premium_usd,
            reads=reads,
            outcome=lambda sim: _option_outcome(sim, plan.size, o.quote_decimals),
        )

    def _exposure_contracts(self, snap: ChainSnapshot) -> int | None:
        """The position's collateral in units of the put's underlying (18 decimals): puts beyond
        it would be speculation, not protection."""
        acct = snap.accounts.get(self.account)
        try:
            under = self.layout.reserve(self.s.policy.option_underlying)
        except AgentError:
            return None
        price = snap.reserves.get(under.symbol)
        if acct is None or price is None or price.price_base <= 0:
            return None
        return acct.total_collateral_base * WAD // price.price_base

    # -- common tail: simulate, sinks ------------------------------------------------------

    async def _failed(self, record: dict[str, Any], reason: str) -> dict[str, Any] | None:
        record |= {"status": "planning_failed", "error": reason, "transactions": []}
        log.warning(
            "proposal.not_planned", idempotency_key=record["idempotency_key"], reason=reason
        )
        return await self._commit(record, None)

    def _safe_tx(self, txs: Sequence[PlannedTx]) -> SafeTx | None:
        if self.s.position.kind != "safe":
            return None
        if not self.s.position.multisend_call_only:
            raise AgentError(
                f"{self.s.origin}: position.multisend_call_only is required for a Safe"
            )
        return build_safe_tx(self.account, self.s.position.multisend_call_only, txs)

    async def _simulate(
        self,
        snap: ChainSnapshot,
        txs: Sequence[PlannedTx],
        st: SafeTx | None,
        label: str,
        reads: Sequence[Call],
    ) -> SimulationResult | None:
        if self.simulator is None:
            return None
        if st is not None:
            return await self.simulator.simulate_safe(
                snap.block_number,
                st,
                self.account,
                f"Safe.execTransaction ({label})",
                inner=txs,
                reads=reads,
            )
        return await self.simulator.simulate_eoa(
            snap.block_number, self.account, txs, self.account, reads=reads
        )

    async def _finish(
        self,
        record: dict[str, Any],
        snap: ChainSnapshot,
        evaluation: Evaluation,
        txs: Sequence[PlannedTx],
        label: str,
        *,
        spend_usd: Decimal,
        target_hf_wad: int | None = None,
        reads: Sequence[Call] = (),
        outcome: Callable[[SimulationResult], dict[str, Any]] | None = None,
    ) -> dict[str, Any] | None:
        record["transactions"] = [t.as_dict() for t in txs]
        st = self._safe_tx(txs)
        if st is not None:
            record["safe_tx"] = {
                "safe": st.safe,
                "to": st.to,
                "value": str(st.value),
                "data": st.data,
                "operation": st.operation,
            }
        sim = await self._simulate(snap, txs, st, label, reads)
        if sim is not None:
            record["simulation"] = simulation_record(sim, target_hf_wad) | (
                outcome(sim) if outcome and sim.success else {}
            )
        else:
            record["simulation"] = None
        record["status"] = (
            "simulated" if sim and sim.success else ("simulation_failed" if sim else "planned")
        )
        live = sim is not None and sim.success and self.s.sinks.live.enabled
        if live and sim is not None and (blocked := await self._live_blocked(sim)):
            log.warning("live.deferred", idempotency_key=record["idempotency_key"], reason=blocked)
            return None  # not recorded: planned again next tick
        if st is not None and self.s.sinks.safe_tx_builder_dir:
            record["safe_tx_builder_file"] = str(
                write_batch_file(record, self.s.sinks.safe_tx_builder_dir)
            )
        if sim is not None and sim.success:
            await self._to_service(record)
        spend = None
        if record["status"] != "simulation_failed":
            spend = (evaluation.session_id, spend_usd, snap.timestamp)
        calls = None
        if live:
            assert self._live is not None
            record["live"] = []  # filled by the sends; "not_sent" if interrupted before
            calls = (
                [self._live.exec_call(st)]
                if st is not None
                else [(t.to, t.data, t.value) for t in txs]
            )
        return await self._commit(record, spend, calls)

    async def _commit(
        self,
        record: dict[str, Any],
        spend: tuple[str, Decimal, int] | None,
        live_calls: Sequence[tuple[str, str, int]] | None = None,
    ) -> dict[str, Any] | None:
        """The durable tail: record and spend in one store transaction, then the live sends
        (each journaled before it is broadcast), then the journal line (retried from the
        outbox if the journal cannot be written)."""
        record = Proposal.model_validate(record).record()
        if not self.store.commit_proposal(record, spend):
            return None
        if live_calls is not None:
            assert self._live is not None
            key = record["idempotency_key"]
            try:
                sent = await send_durably(self._live, self.store, key, live_calls)
            except BaseException:
                # Nothing signed yet (nonce or fee reads failed): undo the commit so the
                # proposal is planned and sent next tick instead of journaled as not sent.
                if not self.store.live_sends(key):
                    self.store.retract_proposal(key)
                raise
            record = record | {"live": sent}
            self.store.update_outbox(record)
        publish(self.store, self.journal, record)
        self._log(record)
        return record

    async def _to_service(self, record: dict[str, Any]) -> None:
        cfg = self.s.sinks.safe_service
        if not cfg.enabled or "safe_tx" not in record:
            return
        if self.http is None:
            self.http = HttpClient()
        try:
            nonce = await read_safe_nonce(self.rpc, self.account)
            sent = await propose_to_service(
                self.http,
                cfg,
                safe_tx_from_record(record),
                chain_id=self.s.chain.chain_id,
                nonce=nonce,
            )
            record["safe_service"] = sent.as_dict()
        except SourceError as exc:
            # The proposal stands without the service; the reviewer sees why it is not queued.
            record["safe_service"] = {"error": str(exc)}
            log.warning("safe_service.failed", error=str(exc))

    async def _live_blocked(self, sim: SimulationResult) -> str | None:
        """Refuse (raise) when live sending is unsafe; a reason to wait when the signer still
        has a transaction without an outcome (its nonce would collide)."""
        live = self.s.sinks.live
        check_live_allowed(
            live,
            await self.rpc.chain_id(),
            self.s.chain.chain_id,
            [t.success for t in sim.transactions],
            live.signer_key is not None,
        )
        if self._live is None:
            self._live = LiveSender(live, chain_id=self.s.chain.chain_id, read_rpc=self.rpc)
        waiting = open_sends_of(self.store, self._live.address)
        if waiting:
            w = waiting[0]
            return f"transaction {w.tx_hash} (nonce {w.nonce}) is still {w.status}"
        return None

    def _log(self, record: dict[str, Any]) -> None:
        head = {k: record.get(k) for k in ("id", "status", "action", "account", "idempotency_key")}
        if self.s.agent.log_format == "console":
            # A terminal gets the readable block instead of one very long line.
            log.info("proposal", **head)
            print(render_proposal(record), flush=True)
            return
        log.info("proposal", **head, **{k: v for k, v in record.items() if k not in head})
