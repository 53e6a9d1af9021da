"""Readable rendering of a proposal record, for a terminal and for `hedge-agent proposals show`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def _iso(ts: Any) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d %H:%M UTC")


def _hf(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4f}"


def render_proposal(p: dict[str, Any]) -> str:
    sim = p.get("simulation") or {}
    sizing = p.get("sizing") or {}
    lines = [
        f"Proposal {p['id']}  [{p['status']}]  {p['action']}",
        f"  chain {p['chain']} (id {p['chain_id']}), account {p['account']}, created {p['created_at']}",
        f"  idempotency key {p['idempotency_key']}",
        "  why:",
    ]
    lines += [f"    {line}" for line in p.get("explanation", [])]
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
        )
    cmp = p.get("comparison")
    if cmp:
        lines.append(f"  options (chosen: {cmp.get('chosen')}; {cmp.get('reason', '')}):")
        for o in cmp.get("options", []):
            lines.append(
                f"    - {o['action']}: {o['asset']} cost ${o['cost_usd']:,.2f}, expected HF {_hf(o.get('health_factor_expected'))}"
                + (", reaches target" if o.get("reaches_target") else ", misses target")
                + (f" (capped by {o['capped_by']})" if o.get("capped_by") else "")
            )
    if p.get("safe_tx_builder_file"):
        lines.append(f"  Safe Transaction Builder file: {p['safe_tx_builder_file']}")
    if p.get("safe_service"):
        ss = p["safe_service"]
        lines.append(
            f"  Safe Transaction Service: {'error: ' + ss['error'] if ss.get('error') else 'proposed safeTxHash ' + str(ss.get('safe_tx_hash'))}"
        )
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
                + f", debt ${sim['debt_usd_before']:,.2f}"
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
