"""``explain_lines(decision)``: one line per fact, enough to recompute the decision by hand."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.policy.models import Decision, OptionAction, TopUpAction
from agent.signals.base import SignalResult


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.6g}"


def signal_line(r: SignalResult) -> str:
    inputs = "; ".join(f"{i.key}@{_iso(i.ts)}={i.value:.6g} ({i.source})" for i in r.inputs)
    return (
        f"{r.id} {r.name} [{r.subject}] {r.status}: value={_num(r.value)} threshold={_num(r.threshold)}"
        f" | {r.detail}" + (f" | inputs: {inputs}" if inputs else "")
    )


def explain_lines(d: Decision) -> list[str]:
    lines = [f"evaluation at {_iso(d.at)}, session {d.session_id}"]
    lines += [signal_line(r) for r in d.signals]
    lines.append(
        "signal status: " + ", ".join(f"{k}={v}" for k, v in sorted(d.signal_status.items()))
    )
    if d.trigger:
        lines.append(
            f"layer trigger: yes via {' and '.join(d.trigger_paths)} (severity {_num(d.severity)})"
        )
    else:
        lines.append("layer trigger: no (needs S1 and S2, or S3 and S4, firing)")
    gate = "passed" if d.gate_passed else "not passed"
    lines.append(
        f"consensus gate ({'on' if d.gate_enabled else 'off'}): families firing "
        f"{', '.join(d.families_firing) or 'none'} -> {gate}"
    )
    lines.append(f"acted: {d.acted}; priority {d.priority}, size fraction {d.size_fraction}")
    lines.append(
        f"session cap ${d.session_cap_usd}: spent before ${d.session_spent_before_usd}, layer ${d.layer_usd}, "
        f"proposed ${d.proposed_spend_usd}, after ${d.session_spent_after_usd}, remaining ${d.session_remaining_usd}"
    )
    lines.append(
        f"open-layer budget B ${d.budget_usd}: open ${d.open_layers_usd}, room ${d.budget_room_usd}; "
        f"{d.budget_frees_next}"
    )
    if not d.options_enabled:
        lines.append("options disabled: no put is sized; the layer goes to protection")
    if d.allocations:
        lines.append("protection budget by severity (lowest health factor first):")
        lines += [
            f"  {a.position} on {a.chain}: HF {_num(a.health_factor_wad / 10**18 if a.health_factor_wad < 2**255 else None)}, "
            f"needs ${a.required_usd}, allocated ${a.allocated_usd} ({a.note})"
            for a in d.allocations
        ]
    for a in d.actions:
        if isinstance(a, TopUpAction):
            who = f"{a.position} ({a.account} on {a.chain})" if a.position else a.account
            lines.append(
                f"action top-up {who}: to HF {a.target_health_factor_wad / 10**18:g}, required "
                f"{a.required_collateral_base} base (${a.required_collateral_usd}), max spend ${a.max_spend_usd} "
                f"[key {a.idempotency_key}]"
            )
        elif isinstance(a, OptionAction):
            lines.append(
                f"action put {a.underlying} {a.horizon}: DTE {a.dte_min}-{a.dte_max}, {a.otm_fraction * 100:g}% OTM, "
                f"premium ${a.spend_usd} [key {a.idempotency_key}]"
            )
    lines += [f"not proposed {s.action_key}: {s.reason}" for s in d.suppressed]
    lines += [f"note: {n}" for n in d.notes]
    return lines
