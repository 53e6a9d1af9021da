"""The open layers read back from the proposals journal (what counts against B)."""

from __future__ import annotations

from decimal import Decimal

from agent.pipeline.open_layers import open_layers_from_journal
from agent.policy import budget_state

DAY = 86_400
T = 1_720_000_000


def rec(action: str, status: str, spend: float | None, at: int, **kw: object) -> dict[str, object]:
    r: dict[str, object] = {
        "idempotency_key": f"{action}-{at}",
        "action": action,
        "status": status,
        "policy": {"at": at, "action_key": action, "severity": 1.0, "session_id": "s"},
    }
    if spend is not None:
        r["sizing"] = {"spend_usd": spend}
    return r | kw


def test_journal_records_become_open_layers() -> None:
    records = [
        rec("collateral_top_up", "simulated", 1234.561, T),  # rounded up to the cent
        rec("repay_debt", "planned", 100.0, T - 29 * DAY),
        rec("option_put", "simulated", 50.0, T, option={"maturity": T + 3 * DAY}),
        rec("option_put", "simulation_failed", 999.0, T, option={"maturity": T + 3 * DAY}),
        rec("collateral_top_up", "planning_failed", None, T),
        rec("collateral_top_up", "simulated", 7.0, T - 31 * DAY),  # held 30 days: expired
    ]
    layers = open_layers_from_journal(records, hold_days=30)
    assert [(la.kind, la.spend_usd, la.until - la.opened_at) for la in layers] == [
        ("protection", Decimal("1234.57"), 30 * DAY),
        ("protection", Decimal("100.00"), 30 * DAY),
        ("put", Decimal("50.00"), 3 * DAY),
        ("protection", Decimal("7.00"), 30 * DAY),
    ]
    st = budget_state(layers, Decimal(2000), T + DAY)
    # the repay proposed 29 days before T expires at T + 1 day (exclusive); the old top-up expired
    assert st.open_usd == Decimal("1284.57") and st.room_usd == Decimal("715.43")
    assert st.next_release_at == T + 3 * DAY and st.next_release_kind == "put"
