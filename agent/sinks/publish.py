"""The sink stage of a proposal: an ``Outcome`` becomes one validated ``Proposal`` and goes to
every sink: the Safe Transaction Builder file, the Safe Transaction Service (optional), live
sending (only when explicitly enabled), the append-only journal, the spend ledger and the log.
The Safe Transaction Service also has a step before the simulation (``at_service_nonce``): the
nonce after its queue, which the fork and the post both use.

The record is validated once, when it is built from the typed stages; what the sinks add (the
file path, the service's answer, the sent transactions) comes back as typed values and is set on
the frozen model, so the journal line is exactly the serialised record.

Durability (issues 11, 24): the record and its spend commit in ONE store transaction (the
outbox, ``Store.commit_proposal``) BEFORE anything leaves the process. Then the outside sinks
run (``deliver``: the Safe Transaction Service post, idempotent by safeTxHash, and the Builder
file named by the proposal id), each answer written back into the outbox; a crash or a failed
store write after them leaves the proposal committed and undelivered, and the next tick (or
start-up) delivers it again without a second queue entry or a second file. Live sends are
journaled as intents before each broadcast (``send_durably``). The journal line is written from
the outbox once the sinks are done and every live send has an outcome, and retried every tick
when the journal cannot be written (``agent.sinks.outbox``). A proposal is never lost, never
journaled twice, never queued twice, and its transactions are never sent twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

import structlog

from agent.core.errors import ConfigError, StoreError
from agent.core.http import HttpClient
from agent.core.rpc import RpcClient
from agent.planner.draft import Draft
from agent.simulator.outcome import Outcome
from agent.sinks.autonomous import (
    PROTECTIVE,
    AutonomousExecutor,
    NotRouted,
    Route,
    autonomous_record,
)
from agent.sinks.config import SinksConfig
from agent.sinks.journal import ProposalJournal
from agent.sinks.live import LiveSender, check_live_allowed, open_sends_of, send_durably
from agent.sinks.outbox import awaiting_live
from agent.sinks.outbox import publish as publish_from_outbox
from agent.sinks.proposal import Proposal
from agent.sinks.render import CONSOLE
from agent.sinks.safe_service import SafeServiceSink, safe_tx_from_record
from agent.sinks.safe_tx_builder import remove_batch_file, write_batch_file
from agent.sinks.spx_ticket import append_ticket_csv
from agent.store.ledger import ProposalLedger

log = structlog.get_logger("agent.pipeline.propose")


def _safe_tx_record(draft: Draft) -> dict[str, Any] | None:
    st = draft.safe_tx
    if st is None:
        return None
    return {
        "safe": st.safe,
        "to": st.to,
        "value": str(st.value),
        "data": st.data,
        "operation": st.operation,
    } | ({"nonce": st.nonce} if st.nonce is not None else {})


def proposal_from(outcome: Outcome) -> Proposal:
    """The journal record of an outcome, validated against the journal's shape."""
    d = outcome.draft
    h = d.header
    return Proposal.model_validate(
        {
            "id": h.id,
            "idempotency_key": h.idempotency_key,
            "created_at": h.created_at,
            "chain": h.chain,
            "chain_id": h.chain_id,
            "block_number": h.block_number,
            "account": h.account,
            "position": h.position or None,
            "action": d.action,
            "status": outcome.status,
            "explanation": list(h.explanation),
            "evidence": dict(h.evidence),
            "policy": dict(h.policy),
            "transactions": [t.as_dict() for t in d.transactions],
            "sizing": dict(d.sizing) if d.sizing is not None else None,
            "simulation": outcome.simulation_record(),
            "comparison": dict(d.comparison) if d.comparison is not None else None,
            "deleverage": dict(d.deleverage) if d.deleverage is not None else None,
            "option": dict(d.option) if d.option is not None else None,
            "safe_tx": _safe_tx_record(d),
            "error": d.error,
            "warnings": list(h.warnings) or None,
        }
    )


class ProposalSinks:
    """Every sink a proposal goes to, built once by the composition root. ``rpc`` reads the
    real chain (the Safe nonce, the chain id before sending), never the fork."""

    def __init__(
        self,
        cfg: SinksConfig,
        *,
        journal: ProposalJournal,
        ledger: ProposalLedger,
        rpc: RpcClient,
        http: HttpClient,
        chain_id: int,
        console: bool = False,
        on_published: Callable[[Mapping[str, Any]], None] | None = None,
        executor: AutonomousExecutor | None = None,
        autonomous_accounts: frozenset[str] = frozenset(),
        live_send: RpcClient | None = None,
    ) -> None:
        self.cfg = cfg
        # The client of sinks.live.private_rpc_url (one attempt), built and closed by App.
        self.live_send = live_send
        # Autonomous execution (issue 23): the positions (lower-case accounts) whose protection
        # is sent at once, and the executor that sends it.
        self.executor = executor
        self.autonomous_accounts = autonomous_accounts
        # Told of every journalled record (the daemon's metrics and notifications).
        self._on_published = on_published
        self.journal = journal
        self.ledger = ledger
        self.rpc = rpc
        self.http = http
        self.chain_id = chain_id
        self.console = console
        self._live: LiveSender | None = None
        self._service = (
            SafeServiceSink(http, cfg.safe_service, chain_id=chain_id)
            if cfg.safe_service.enabled
            else None
        )

    def seen(self, idempotency_key: str) -> bool:
        # The outbox holds committed proposals whose journal line is still to be written.
        if self.journal.has(idempotency_key) or self.ledger.in_outbox(idempotency_key):
            log.info(
                "proposal.duplicate", idempotency_key=idempotency_key, note="already in the journal"
            )
            return True
        return False

    async def at_service_nonce(self, draft: Draft) -> tuple[Draft, Mapping[str, Any] | None]:
        """Before the simulation: the draft's Safe transaction at the nonce the signers will see
        (the next free one after the Safe Transaction Service's queue), so the fork executes it
        at that nonce and the service receives the same transaction; and the record's
        ``safe_service`` entry (the nonce plan, or why nothing will be posted). Unchanged, with
        no entry, when the service is off or the draft has no Safe transaction."""
        if self._service is None or draft.safe_tx is None:
            return draft, None
        st, entry = await self._service.reserve_nonce(
            draft.safe_tx, self.rpc, draft.header.block_number
        )
        return replace(draft, safe_tx=st), entry

    async def publish(
        self,
        outcome: Outcome,
        *,
        session_id: str,
        at: int,
        service_nonce: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Deliver one proposal; returns its journal record, or None if the journal already
        holds its idempotency key (then nothing else was done either). ``service_nonce`` is
        what :meth:`at_service_nonce` returned for the draft."""
        proposal = proposal_from(outcome)
        draft = outcome.draft
        if not draft.planned:
            log.warning(
                "proposal.not_planned", idempotency_key=proposal.idempotency_key, reason=draft.error
            )
        key = proposal.idempotency_key
        if self.journal.has(key) or self.ledger.in_outbox(key):
            return None
        sim = outcome.result
        live = sim is not None and sim.success and self.cfg.live.enabled
        if live and (blocked := await self._live_blocked(outcome)):
            log.warning("live.deferred", idempotency_key=key, reason=blocked)
            return None  # not recorded: planned again next tick
        updates: dict[str, Any] = {}
        if service_nonce is not None:
            updates["safe_service"] = dict(service_nonce)
        calls: list[tuple[str, str, int]] | None = None
        route: Route | None = None
        if live:
            assert self._live is not None
            updates["live"] = []  # filled by the sends; "not_sent" if interrupted before
            calls = (
                [self._live.exec_call(draft.safe_tx)]
                if draft.safe_tx is not None
                else [(t.to, t.data, t.value) for t in draft.transactions]
            )
        elif self._autonomous(outcome):
            assert self.executor is not None
            try:
                route = await self.executor.route(draft)
            except NotRouted as exc:
                # Stays a proposal for the signers; the record says why it was not sent.
                updates["autonomous"] = {"status": "not_sent", "why_not": str(exc)}
                log.warning("autonomous.not_routed", idempotency_key=key, reason=str(exc))
            else:
                blocked = await self.executor.blocked(route.sender, self.ledger)
                if blocked:
                    log.warning("autonomous.deferred", idempotency_key=key, reason=blocked)
                    return None  # not recorded: planned again next tick
                calls = list(route.calls)
                updates["live"] = []
                updates["autonomous"] = {"status": "intent", "mode": route.mode,
                                         "sender": route.sender.address}  # fmt: skip
        record = proposal.model_copy(update=updates).record()
        spend = (session_id, draft.spend_usd, at) if outcome.spends else None
        return await self._commit(record, spend, calls, route)

    def _autonomous(self, outcome: Outcome) -> bool:
        """This proposal is protection of a position with ``execution = "autonomous"``, and
        its simulation passed."""
        d, sim = outcome.draft, outcome.result
        return (
            self.executor is not None
            and sim is not None
            and sim.success
            and d.action in PROTECTIVE
            and d.header.account.lower() in self.autonomous_accounts
        )

    async def _commit(
        self,
        record: dict[str, Any],
        spend: tuple[str, Decimal, int] | None,
        live_calls: list[tuple[str, str, int]] | None = None,
        route: Route | None = None,
    ) -> dict[str, Any] | None:
        """The durable tail: record and spend in one store transaction, then the outside
        sinks (retried from the outbox if they fail), then the live sends (each journaled
        before it is broadcast), then the journal line (retried from the outbox if the journal
        cannot be written, or once the live sends have an outcome)."""
        delivered = not self._due(record)
        if not self.ledger.commit_proposal(record, spend, delivered=delivered):
            return None
        if not delivered:
            record, delivered = await self._deliver_logged(record)
        if live_calls is not None:
            sender = route.sender if route is not None else self._live
            assert sender is not None
            key = str(record["idempotency_key"])
            try:
                sent = await send_durably(sender, self.ledger, key, live_calls)
            except BaseException:
                # Nothing signed yet (nonce or fee reads failed): undo the commit so the
                # proposal is planned and sent next tick instead of journaled as not sent.
                if not self.ledger.live_sends(key):
                    self.ledger.retract_proposal(key)
                    # Planned again next tick under a new id: no file of this one stays
                    # behind (the service's queue entry is found again by its safeTxHash).
                    if "safe_tx_builder_file" in record:
                        remove_batch_file(str(record["safe_tx_builder_file"]))
                raise
            record = record | {"live": sent}
            if route is not None:
                record = record | {"autonomous": await self._executed(record, route, sent)}
            self.ledger.update_outbox(record)
        if delivered:
            if awaiting_live(self.ledger, record):
                log.warning(
                    "journal.awaiting_live",
                    idempotency_key=record["idempotency_key"],
                    note="the journal line is written once its live send has an outcome",
                )
            else:
                publish_from_outbox(self.ledger, self.journal, record)
        self._log(record)
        if self._on_published is not None:
            self._on_published(record)
        return record

    def publish_advisory(
        self, proposal: Proposal, *, session_id: str, spend_usd: Decimal, at: int
    ) -> dict[str, Any] | None:
        """Deliver an advisory ticket (a person places it; nothing is sent or simulated): the
        journal, its cost in the session's spend ledger, the ticket CSV and the log. Returns
        its journal record, or None if the journal already holds its idempotency key."""
        if self.seen(proposal.idempotency_key):
            return None
        csv_path = self.cfg.spx_ticket_csv
        if csv_path and proposal.ticket is not None:
            proposal = proposal.model_copy(update={"ticket": proposal.ticket | {"csv": csv_path}})
        record = proposal.record()
        # Record and spend commit together (the outbox), before the journal line and the CSV
        # copy: a failed journal is retried from the outbox, a failed copy frees no budget.
        if not self.ledger.commit_proposal(record, (session_id, spend_usd, at)):
            return None
        publish_from_outbox(self.ledger, self.journal, record)
        if csv_path:
            try:
                append_ticket_csv(record, csv_path)
            except StoreError as exc:
                # The ticket stands in the journal and the log; the CSV is a convenience copy.
                log.warning(
                    "spx_ticket.csv_failed",
                    error=str(exc),
                    idempotency_key=proposal.idempotency_key,
                )
        self._log(record)
        if self._on_published is not None:
            self._on_published(record)
        return record

    async def _executed(
        self, record: Mapping[str, Any], route: Route, sent: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The journal's view of an autonomous execution: HF before (the tick's read) and
        after (read on the chain once the transactions are mined)."""
        assert self.executor is not None
        sim = record.get("simulation") or {}
        explanation = record.get("explanation") or []
        policy = record.get("policy") or {}
        why = str(policy.get("reason") or (explanation[0] if explanation else record["action"]))
        after = await self.executor.health_factor(str(record["account"]))
        out = autonomous_record(route, sent, why, sim.get("health_factor_before"), after)
        log.warning("autonomous.executed", idempotency_key=record["idempotency_key"],
                    action=record["action"], **out)  # fmt: skip
        return out

    def _due(self, record: Mapping[str, Any]) -> list[str]:
        """The outside sinks ``record`` still has to go to, from what the record holds (so a
        retry after a crash does only what is missing)."""
        due: list[str] = []
        st = record.get("safe_tx")
        if st is None:
            return due
        ss = record.get("safe_service") or {}
        if (
            self._service is not None
            and record.get("status") == "simulated"
            and st.get("nonce") is not None
            and not ("safe_tx_hash" in ss or "error" in ss)
        ):
            due.append("safe_service")
        if self.cfg.safe_tx_builder_dir and "safe_tx_builder_file" not in record:
            due.append("safe_tx_builder")
        return due

    async def deliver(self, record: dict[str, Any]) -> dict[str, Any]:
        """Send a committed proposal to its outside sinks and write each answer into the
        outbox: the Safe Transaction Service first (idempotent: a transaction the service
        already holds is not posted again, see ``safe_service.propose``), then the Builder file
        (``<id>-<action>.json``, rewritten in place on a retry). Returns the updated record,
        marked delivered. Raises ``StoreError`` when the file or the outbox cannot be written;
        the proposal stays undelivered and is retried (``deliver_pending``)."""
        due = self._due(record)
        if "safe_service" in due:
            assert self._service is not None
            st = safe_tx_from_record(record)
            # Never raises for the service: a refused post leaves its reason in the record.
            sent = await self._service.submit(st, int(record["block_number"]))
            record = record | {"safe_service": dict(record.get("safe_service") or {}) | sent}
            self.ledger.update_outbox(record)
        if "safe_tx_builder" in due:
            assert self.cfg.safe_tx_builder_dir
            path = write_batch_file(record, self.cfg.safe_tx_builder_dir)
            record = record | {"safe_tx_builder_file": str(path)}
        self.ledger.update_outbox(record, delivered=True)
        return record

    async def _deliver_logged(self, record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        try:
            return await self.deliver(record), True
        except StoreError as exc:
            log.error(
                "sinks.deliver_failed",
                idempotency_key=record.get("idempotency_key"),
                error=str(exc),
                note="proposal committed; its Safe sinks and journal line are retried every tick",
            )
            return record, False

    async def deliver_pending(self) -> int:
        """Deliver every committed proposal of this chain whose outside sinks did not finish
        (a crash or a failed write after the commit); returns how many were delivered."""
        done = 0
        for record in self.ledger.outbox(delivered=False):
            if int(record.get("chain_id", -1)) != self.chain_id:
                continue
            key = record.get("idempotency_key")
            log.warning("sinks.redeliver", idempotency_key=key, id=record.get("id"))
            try:
                await self.deliver(record)
            except StoreError as exc:
                log.error("sinks.deliver_failed", idempotency_key=key, error=str(exc))
                break  # the disk is still full or read-only: next tick
            done += 1
        return done

    async def _live_blocked(self, outcome: Outcome) -> str | None:
        """Refuse (raise) when live sending is unsafe; a reason to wait when the signer still
        has a transaction without an outcome (its nonce would collide)."""
        live = self.cfg.live
        sim = outcome.result
        assert sim is not None
        check_live_allowed(
            live,
            await self.rpc.chain_id(),
            self.chain_id,
            [t.success for t in sim.transactions],
            live.signer_key is not None,
        )
        if self._live is None:
            if self.live_send is None:
                raise ConfigError(
                    "live submission refused: no client of sinks.live.private_rpc_url"
                )
            self._live = LiveSender(
                live, chain_id=self.chain_id, read_rpc=self.rpc, send_rpc=self.live_send
            )
        waiting = open_sends_of(self.ledger, self._live.address)
        if waiting:
            w = waiting[0]
            return f"transaction {w.tx_hash} (nonce {w.nonce}) is still {w.status}"
        return None

    def _log(self, record: dict[str, Any]) -> None:
        head = {k: record.get(k) for k in ("id", "status", "action", "account", "idempotency_key")}
        if self.console:
            # A terminal gets the readable block instead of one very long line.
            log.info("proposal", **head)
            print(CONSOLE.render(record), flush=True)  # a tick's decision once
            return
        log.info("proposal", **head, **{k: v for k, v in record.items() if k not in head})
