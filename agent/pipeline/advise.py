"""The S&P 500 side in the daemon: store → S9-S11 → the SPX layer rule → sinks, after the DeFi
proposals of the same tick.

The ticket is advisory (a person places it with their broker; the agent never trades equity
options): one journal record with status ``advisory`` (same :class:`Proposal` shape, no
transactions), one ``proposal`` log event, one row per leg in the ticket CSV, and its cost at
the limits in the session's spend ledger (the same 25% cap as the DeFi layer), all through the
proposals' sinks (:meth:`ProposalSinks.publish_advisory`), validated once. The journal's
idempotency key makes it once per session. This module reads the store, so it sits with the
orchestrators (like ``agent.pipeline.propose``), after the pipeline stages.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pandas as pd
import structlog

from agent.config import Settings
from agent.core.market import ChainSnapshot
from agent.core.units import AAVE_BASE_UNIT_USD
from agent.pipeline.evaluate import Evaluation, MarketRead
from agent.pipeline.parts import Chain, Position
from agent.policy.spx import ACTION, ACTION_KEY, SpxDecision, spx_explain_lines, spx_layer
from agent.signals.base import SignalResult
from agent.signals.spx import SpxInputs, evaluate_spx_signals, latest_close
from agent.sinks.proposal import Proposal
from agent.sinks.publish import ProposalSinks
from agent.store.sqlite import Store

log = structlog.get_logger("agent.pipeline.advise")

# S10 reads 90 closes and S11 250 (trading days): a year and a half of calendar is enough.
LOOKBACK_S = 550 * 86_400


def spx_inputs(store: Store, at: int) -> SpxInputs:
    """The VIX, VIX3M and S&P 500 closes known at ``at`` (missing keys stay None)."""
    keys = set(store.keys())

    def get(key: str) -> pd.Series | None:
        if key not in keys:
            return None
        s = store.series(key, since=at - LOOKBACK_S, until=at, known_by=at)
        latest = store.latest(key, known_by=at)
        if latest is not None:
            s.attrs["source"] = latest.source
        return s

    return SpxInputs(vix=get("close.vix"), vix3m=get("close.vix3m"), spx=get("close.spx"))


def _signal_log(r: SignalResult) -> dict[str, Any]:
    d = r.as_dict()
    if any(i["source"].startswith("scenario:") for i in d["inputs"]):
        d["data_origin"] = "scenario"
    return d


def decide_spx(
    store: Store,
    settings: Settings,
    snap: ChainSnapshot,
    evaluation: Evaluation,
    account: str,
    session_spent_usd: Decimal,
) -> SpxDecision:
    """At the tick's evaluation time (``evaluation.at``; the snapshot's time when unset); the
    exposure is every position's collateral with several (like the put ladder's), else
    ``account``'s in ``snap``; ``session_spent_usd`` is the ledger after this tick's DeFi
    proposals."""
    t = evaluation.at or snap.timestamp
    at = pd.Timestamp(t, unit="s", tz="UTC")
    inputs = spx_inputs(store, t)
    signals = evaluate_spx_signals(inputs, at, settings.signals)
    for r in signals:
        log.info("signal", **_signal_log(r))
    spot = latest_close(inputs.spx, at, settings.signals.s11.max_staleness_days)
    acct = snap.accounts.get(account)
    base = evaluation.collateral_base or (None if acct is None else acct.total_collateral_base)
    exposure = None if base is None else Decimal(base) / AAVE_BASE_UNIT_USD
    return spx_layer(
        signals,
        evaluation.decision,
        spot,
        at,
        settings.policy,
        # the ledger after this tick's DeFi proposals, not the decision's start-of-tick figure
        session_spent_usd=session_spent_usd,
        exposure_usd=exposure,
        # B's room after this evaluation's DeFi layers (the journal's open layers included)
        open_remaining_usd=evaluation.decision.budget_room_usd
        - evaluation.decision.proposed_spend_usd,
    )


def ticket_record(
    d: SpxDecision, chain: Chain, snap: ChainSnapshot, account: str
) -> dict[str, Any]:
    sev = next((r.value for r in d.signals if r.id == "S9"), None) or 0.0
    spend = float(d.spend_usd)
    return {
        "id": uuid.uuid4().hex[:12],
        "idempotency_key": d.idempotency_key,
        "created_at": datetime.fromtimestamp(snap.timestamp, UTC).isoformat(),
        "chain": chain.name,
        "chain_id": chain.chain_id,
        "block_number": snap.block_number,
        "account": account,
        "action": ACTION,
        "status": "advisory",
        "explanation": spx_explain_lines(d),
        "evidence": {
            "signals": [r.as_dict() for r in d.signals],
            "beta": d.beta,
            "defi_acted": d.defi_acted,
            "notes": list(d.notes),
        },
        # no "horizon": the DeFi ladder's horizons-bought memory must not count the SPX legs
        "policy": {
            "action_key": ACTION_KEY,
            "severity": sev,
            "at": d.at,
            "session_id": d.session_id,
            "horizon": None,
        },
        "transactions": [],
        "sizing": {
            "spend_usd": spend,
            "spend_basis": "cost if every leg fills at its limit",
            "session_id": d.session_id,
            "session_cap_usd": float(d.session_cap_usd),
            "session_spent_before_usd": float(d.session_spent_before_usd),
            "session_remaining_after_usd": max(
                0.0, float(d.session_cap_usd - d.session_spent_before_usd) - spend
            ),
            "budget_usd": str(d.budget_usd),
        },
        "ticket": d.as_dict(),
    }


def spx_advisory(
    store: Store,
    settings: Settings,
    chain: Chain,
    sinks: ProposalSinks,
    snap: ChainSnapshot,
    evaluation: Evaluation,
    account: str,
) -> list[dict[str, Any]]:
    """The tick's SPX ticket as a list of zero or one journal records."""
    spent = sinks.ledger.session_spent_usd(evaluation.session_id)
    d = decide_spx(store, settings, snap, evaluation, account, spent)
    log.info(
        "spx.decision",
        fired=d.fired,
        s9_firing=d.s9_firing,
        consensus=list(d.consensus),
        beta=d.beta,
        defi_acted=d.defi_acted,
        budget_usd=str(d.budget_usd),
        notes=list(d.notes),
    )
    if not d.fired:
        return []
    proposal = Proposal.model_validate(ticket_record(d, chain, snap, account))
    record = sinks.publish_advisory(
        proposal, session_id=d.session_id, spend_usd=d.spend_usd, at=snap.timestamp
    )
    return [] if record is None else [record]


def spx_ticket(
    store: Store,
    settings: Settings,
    ticket: Position | None,
    sinks: Mapping[str, ProposalSinks],
    markets: Mapping[str, MarketRead],
    evaluation: Evaluation,
) -> list[dict[str, Any]]:
    """The tick's SPX ticket, through the sinks of the chain of ``ticket`` (the position
    ``sinks.spx_ticket_position`` names, by default the put ladder's buyer): none without such
    a position or when its chain was not read this tick."""
    if ticket is None or ticket.chain.name not in markets:
        return []
    read = markets[ticket.chain.name]
    return spx_advisory(
        store,
        settings,
        ticket.chain,
        sinks[ticket.chain.name],
        read.snap,
        evaluation,
        ticket.account or read.layout.accounts[0],
    )
