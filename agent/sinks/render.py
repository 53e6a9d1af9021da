"""Readable rendering of a proposal record, for a terminal and for `hedge-agent proposals show`.

One tick's decision explains every proposal of that tick: the review shows it once (a
"decision" block, identified by a digest of its lines) and each proposal refers to it and says
what it is for (its policy entry's reason: ``guard: ...`` or ``layer rule: ...``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any


def _iso(ts: Any) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d %H:%M UTC")


def _hf(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4f}"


def decision_id(p: dict[str, Any]) -> str:
    """A short digest of the decision that explains ``p`` (the same for every proposal of
    one tick's decision)."""
    text = "\n".join(str(x) for x in p.get("explanation", []))
    return "d-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def render_decision(p: dict[str, Any]) -> str:
    """The decision behind ``p``, once per tick in a review."""
    lines = [f"Decision {decision_id(p)}  (block {p.get('block_number')}, {p['created_at']}): why"]
    lines += [f"    {line}" for line in p.get("explanation", [])]
    return "\n".join(lines)


class ReviewPrinter:
    """Renders proposals in order, each decision once (the first proposal of a tick carries
    it; the others refer to it)."""

    def __init__(self) -> None:
        self._shown: str | None = None

    def render(self, p: dict[str, Any]) -> str:
        d = decision_id(p)
        head = "" if d == self._shown else render_decision(p) + "\n\n"
        self._shown = d
        return head + render_proposal(p, decision_shown=True)


# The daemon's console: one printer for every chain's sinks, so a decision shared by the
# proposals of several chains is printed once.
CONSOLE = ReviewPrinter()


def render_proposals(records: Iterable[dict[str, Any]]) -> str:
    printer = ReviewPrinter()
    return "\n\n".join(printer.render(r) for r in records)


def render_proposal(p: dict[str, Any], *, decision_shown: bool = False) -> str:
    """One proposal; with ``decision_shown`` its decision is referred to, not repeated."""
    sim = p.get("simulation") or {}
    sizing = p.get("sizing") or {}
    policy = p.get("policy") or {}
    lines = [
        f"Proposal {p['id']}  [{p['status']}]  {p['action']}"
        + ("  (liquidation guard)" if policy.get("guard") else ""),
        f"  chain {p['chain']} (id {p['chain_id']}), account {p['account']}, created {p['created_at']}",
        f"  idempotency key {p['idempotency_key']}",
    ]
    if policy.get("reason"):
        lines.append(f"  for: {policy['reason']}")
    if decision_shown:
        lines.append(f"  why: decision {decision_id(p)} (above)")
    else:
        lines.append(f"  why (decision {decision_id(p)}):")
        lines += [f"    {line}" for line in p.get("explanation", [])]
    guard = policy.get("guard")
    if isinstance(guard, dict):
        lines.append(
            f"  sizing: spend ${sizing.get('spend_usd', 0):,.2f} from the guard's own budget "
            f"${sizing.get('session_cap_usd', 0):,.2f} per day (spent before "
            f"${sizing.get('session_spent_before_usd', 0):,.2f}, ledger {guard.get('ledger_session')})"
            + (f" (capped by {sizing['capped_by']})" if sizing.get("capped_by") else "")
        )
    else:
        lines.append(
            f"  sizing: spend ${sizing.get('spend_usd', 0):,.2f}; session spent before ${sizing.get('session_spent_before_usd', 0):,.2f}, "
            f"remaining after ${sizing.get('session_remaining_after_usd', 0):,.2f} of cap ${sizing.get('session_cap_usd', 0):,.2f}"
            + (f" (capped by {sizing['capped_by']})" if sizing.get("capped_by") else "")
        )
    if "defined_risk_budget_usd" in sizing:
        lines.append(
            f"  open-layer budget: B ${sizing['defined_risk_budget_usd']:,.2f}, open before ${sizing.get('open_layers_usd', 0):,.2f}, "
            f"room ${sizing.get('budget_room_usd', 0):,.2f}; {sizing.get('budget_frees_next', '')}"
        )
    if p.get("ticket"):  # the S&P 500 side: an advisory ticket, nothing to sign
        from agent.sinks.spx_ticket import render_ticket

        return "\n".join(lines + render_ticket(p))
    lines.append("  transactions (as signed):")
    for i, tx in enumerate(p.get("transactions", []), 1):
        call = tx["call"]
        args = ", ".join(f"{k}={v}" for k, v in call["args"].items())
        lines += [
            f"    {i}. {tx['human']}",
            f"       to {tx['to']}  value {tx['value']}",
            f"       {call['contract']}.{call['method']}({args})",
            f"       data {tx['data'][:74]}{'…' if len(tx['data']) > 74 else ''}",
        ]
    if p.get("safe_tx"):
        st = p["safe_tx"]
        lines.append(
            f"  Safe transaction: to {st['to']} operation {st['operation']} ({'MultiSendCallOnly batch' if st['operation'] == 1 else 'call'})"
            + (f" at Safe nonce {st['nonce']}" if st.get("nonce") is not None else "")
        )
    cmp = p.get("comparison")
    if cmp:
        lines.append(f"  options (chosen: {cmp.get('chosen')}; {cmp.get('reason', '')}):")
        for o in cmp.get("options", []):
            lines.append(
                f"    - {o['action']}: {o['asset']} cost ${o['cost_usd']:,.2f}, expected HF {_hf(o.get('health_factor_expected'))}"
                + (", reaches target" if o.get("reaches_target") else ", misses target")
                + (f" (capped by {o['capped_by']})" if o.get("capped_by") else "")
                + (f"; lost: {o['why_not']}" if o.get("why_not") else "")
            )
        for why in cmp.get("not_planned", []):
            lines.append(f"    - not possible: {why}")
    dl = p.get("deleverage")
    if dl:
        lines.append(
            f"  deleverage swap ({dl['venue']} {dl['pair']}, fee tier {dl['fee_tier']}, {dl['steps']} step(s),"
            f" HF floor {dl['hf_floor']}): sell {dl['amount_in_human']:,.8f}, quoted price {dl['quoted_price']:,.2f}"
            f" vs oracle {dl['oracle_price']:,.2f} ({dl['price_vs_oracle_bps']:.1f} bps below)"
        )
        lines.append(
            f"    minimum out {dl['amount_out_minimum_human']:,.6f} (slippage {dl['slippage_bps']} bps);"
            f" cost ${dl['cost_usd']:,.2f} = fee ${dl['fee_usd']:,.2f} + price impact ${dl['price_impact_usd']:,.2f}"
            f" ({dl['price_impact_bps']:.1f} bps) + slippage bound ${dl['slippage_bound_usd']:,.2f}"
        )
        if dl.get("slippage_bound") is not None:
            lines.append(
                f"    slippage bound for {dl.get('execution', 'signers')} execution:"
                f" {dl['slippage_bound_human']:,.6f} {dl['pair'].split('/')[-1]} of the quote"
                f" ({dl['slippage_bound_bps'] or 0:.2f} bps) repaid less, kept in the wallet"
            )
        if dl.get("wallet_first"):
            w = dl["wallet_first"]
            lines.append(
                f"    wallet first ({dl['plan']}): repay {w['repay_human']:,.6f}"
                f" (${w['repay_usd']:,.2f}), supply {w['supply_human']:,.8f}"
                f" (${w['supply_usd']:,.2f}), then sell only what the rest needs"
            )
    if p.get("safe_tx_builder_file"):
        lines.append(f"  Safe Transaction Builder file: {p['safe_tx_builder_file']}")
    if p.get("safe_service"):
        ss = p["safe_service"]
        if ss.get("error"):
            what = "error: " + str(ss["error"])
        elif ss.get("safe_tx_hash"):
            what = f"proposed safeTxHash {ss['safe_tx_hash']} at nonce {ss.get('nonce')}" + (
                " (queued)" if ss.get("queued") else f" ({ss.get('read_back_error')})"
            )
        else:
            what = f"not posted (nonce {ss.get('nonce')} was planned)"
        if ss.get("queued_nonces"):
            what += (
                f"; queue had nonces {ss['queued_nonces']} above on-chain {ss.get('onchain_nonce')}"
            )
        lines.append(f"  Safe Transaction Service: {what}")
    for lv in (
        p["live"] if isinstance(p.get("live"), list) else [p["live"]] if p.get("live") else []
    ):
        lines.append(
            f"  LIVE: sent {lv.get('tx_hash')} from {lv.get('from')} (nonce {lv.get('nonce')})"
        )
    if p.get("option"):
        o = p["option"]
        lines.append(
            f"  put ({o['horizon']} horizon, {o['venue']}): pool {o['pool']} strike {float(o['strike']):,.2f}"
            f" maturity {_iso(o['maturity'])}, spot {float(o['spot']):,.2f}"
        )
        lines.append(
            f"    size {int(o['size']) / 1e18:,.4f} contracts; premium quote {int(o['premium_quote']) / 1e6:,.2f}"
            f" USDC (fee {int(o['taker_fee']) / 1e6:,.2f} included), limit {int(o['premium_limit']) / 1e6:,.2f}"
            f" (budget ${o['spend_usd']})"
            + (f", capped by {o['capped_by']}" if o.get("capped_by") else "")
        )
    if sim:
        lines.append(
            f"  simulation on fork at block {sim.get('fork_block')}: {'OK' if sim.get('success') else 'FAILED'}"
            + (f" — {sim['error']}" if sim.get("error") else "")
        )
        if sim.get("swap_amount_out") is not None:
            lines.append(
                f"    swap received {sim['swap_amount_out_human']:,.6f} (minimum {sim['swap_amount_out_minimum_human']:,.6f}),"
                f" price {sim['swap_price']:,.2f}, {sim['swap_price_vs_oracle_bps']:.1f} bps below the oracle"
            )
        if sim.get("premium_paid") is not None:
            lines.append(
                f"    bought {int(sim['option_long_after'] or 0) / 1e18:,.4f} long puts for "
                f"{sim['premium_paid_usd']:,.2f} USDC (premium + fee, from the pool's Trade event)"
            )
        lines.append(
            f"    health factor {_hf(sim.get('health_factor_before'))} -> {_hf(sim.get('health_factor_after'))}"
            + (
                f" (target {_hf(sim.get('target_health_factor'))})"
                if sim.get("target_health_factor") is not None
                else ""
            )
        )
        if sim.get("collateral_usd_before") is not None:
            lines.append(
                f"    collateral ${sim['collateral_usd_before']:,.2f} -> "
                + (
                    f"${sim['collateral_usd_after']:,.2f}"
                    if sim.get("collateral_usd_after") is not None
                    else "n/a"
                )
                + f", debt ${sim['debt_usd_before']:,.2f} -> "
                + (
                    f"${sim['debt_usd_after']:,.2f}"
                    if sim.get("debt_usd_after") is not None
                    else "n/a"
                )
            )
        for t in sim.get("transactions", []):
            lines.append(
                f"    - {t['description']}: {'ok' if t['success'] else 'REVERTED'}"
                + (f", gas {t['gas_used']}" if t.get("gas_used") else "")
                + (f", reason {t['revert_reason']}" if t.get("revert_reason") else "")
            )
            for ev in t.get("events", [])[:8]:
                lines.append(f"        event {ev}")
    return "\n".join(lines)
