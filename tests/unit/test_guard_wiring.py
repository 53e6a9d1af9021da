"""The guard in the tick (agent/pipeline/guarding.py), its configuration, its notice, its gauges, and the
review that shows a tick's decision once. The pure rules are tests/unit/test_guard.py; the
devnet run is tests/e2e/test_liquidation_guard.py."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.config import Settings
from agent.core.models import Observation
from agent.core.units import WAD
from agent.ops.telemetry import Telemetry
from agent.pipeline.guarding import GuardReport, evaluate_guard, last_guard_proposals
from agent.pipeline.parts import build_parts
from agent.policy import PositionSnapshot
from agent.signals.base import InputRef, SignalResult
from agent.sinks.config import NotifyConfig
from agent.sinks.notify import Notice, Notifier, guard_critical_notice
from agent.sinks.render import render_proposals
from agent.store.ledger import ProposalLedger
from agent.store.sqlite import Store

E8 = 10**8
AT = 1_700_000_000
ACCT = "0x00000000000000000000000000000000000000A1"


def w(x: str) -> int:
    return int(Decimal(x) * WAD)


def pos(d_usd: int = 12_000) -> PositionSnapshot:
    # $20,000 collateral at LT 82.5%: HF = 16,500 / D
    hf = 20_000 * 8250 * WAD // (d_usd * 10_000)
    return PositionSnapshot(ACCT, 20_000 * E8, d_usd * E8, 8250, hf)


def firing(*ids: str) -> list[SignalResult]:
    return [
        SignalResult(i, i, "x", "firing", 1.0, 0.5, "t", (InputRef("k", "t", 1, 1.0),)) for i in ids
    ]


def guard_record(hf_wad: int, at: int) -> dict[str, Any]:
    return {
        "status": "simulated",
        "policy": {
            "action_key": f"guard:{ACCT.lower()}",
            "at": at,
            "severity": 0.0,
            "session_id": "s",
            "guard": {"health_factor_wad": str(hf_wad)},
        },
    }


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(str(tmp_path / "s.sqlite"))
    yield s
    s.close()


def run(store: Store, p: PositionSnapshot, records: list[dict[str, Any]], signals=()) -> Any:  # type: ignore[no-untyped-def]
    settings = Settings()
    (position,) = build_parts(settings).positions
    ledger = ProposalLedger(store.db)  # the spends, in the store's file
    return evaluate_guard(
        settings,
        store,
        [(position, p)],
        {},
        list(signals),
        records,
        ledger=ledger,
        at=AT,
        session_id="s",
    )


def test_the_tick_proposes_then_holds_then_rearms_from_the_stored_hf(store: Store) -> None:
    p = pos(13_000)  # HF 16,500 / 13,000 = 1.2692 <= 1.30
    first = run(store, p, []).views[0]
    assert first.verdict.kind == "protect" and first.action is not None
    assert first.ledger_session == f"guard:{ACCT.lower()}:s"
    # its proposal is in the journal at HF 1.2692: the next tick holds
    rec = [guard_record(p.health_factor_wad, AT - 600)]
    assert last_guard_proposals(rec) == {f"guard:{ACCT.lower()}": (p.health_factor_wad, AT - 600)}
    held = run(store, p, rec).views[0]
    assert held.verdict.kind == "hold" and held.action is None
    # the stored HF rose to 1.36 > 1.30 + 0.05 since: re-armed, so 1.2692 proposes again
    store.upsert([Observation(f"position.{ACCT}.health_factor", AT - 300, 1.36, "ratio", "t")])
    again = run(store, p, rec).views[0]
    assert again.verdict.kind == "protect" and again.action is not None
    # ... but 1.35 would not have re-armed it
    store.upsert([Observation(f"position.{ACCT}.health_factor", AT - 300, 1.35, "ratio", "t")])
    assert run(store, p, rec).views[0].verdict.kind == "hold"


def test_the_guard_spends_its_own_ledger_session(store: Store) -> None:
    p = pos(13_000)  # needs 13,000 x 1.6 / 0.825 - 20,000 = $5,212.12 (rounded up to cents)
    ledger = ProposalLedger(store.db)
    ledger.record_spend("guard:" + ACCT.lower() + ":s", "k1", Decimal("99000"), AT)
    ledger.record_spend("s", "k2", Decimal("5"), AT)  # the layer's: not the guard's
    v = run(store, p, []).views[0]
    assert v.spent_usd == Decimal(99000)
    assert v.action is not None
    assert v.action.required_collateral_usd == Decimal("5212.13")
    assert v.action.max_spend_usd == Decimal("1000.00")  # $100,000 - $99,000
    assert "below what a top-up or repay to the target needs" in v.note


def test_stress_raises_the_trigger_in_the_tick(store: Store) -> None:
    p = pos(12_000)  # HF 1.375: quiet -> none; S3 firing -> trigger 1.45 -> protect
    assert run(store, p, []).views[0].verdict.kind == "none"
    v = run(store, p, [], firing("S3")).views[0]
    assert v.verdict.kind == "protect" and v.verdict.trigger.trigger_hf_wad == w("1.45")
    assert any("market stress, S3 firing" in line for line in v.lines())


def test_position_overrides_and_their_errors() -> None:
    s = Settings(
        guard={"stress_trigger_hf": "1.40"},
        position={"guard": {"trigger_hf": "1.40", "budget_usd": "5"}},
    )
    cfg = s.guard.record(s.position.guard)
    assert cfg.trigger_hf_wad == w("1.4") and cfg.stress_trigger_hf_wad == w("1.4")
    assert cfg.budget_usd == Decimal(5) and cfg.target_hf_wad == w("1.6")
    with pytest.raises(ValidationError, match=r"position\.guard: guard: need 1 < critical_hf"):
        Settings(position={"guard": {"target_hf": "1.2"}})
    with pytest.raises(ValidationError, match="extra"):
        Settings(guard={"trigger": "1.2"})


def test_a_critical_notice_goes_out_first_even_from_a_full_queue() -> None:
    n = Notifier(NotifyConfig(queue_size=2), send=lambda t, b, lvl: True)
    assert n.submit(Notice("proposal", "p1", "t", "b"))
    assert n.submit(Notice("proposal", "p2", "t", "b"))
    crit = guard_critical_notice("lean-safe", ["HF 1.09"])
    assert crit.level == "failure" and crit.kind == "guard_critical"
    assert n.submit(crit)  # evicts a proposal: nothing outranks a critical health factor
    assert [x.key for x in n._queue] == ["guard_critical:lean-safe", "p2"]


def test_gauges_carry_hf_and_prices(store: Store) -> None:
    from agent.core.market import ChainSnapshot, MarketLayout, ReserveMeta, ReserveState

    p = PositionSnapshot(ACCT, 20_000 * E8, 12_000 * E8, 8250, w("1.375"), name="main", chain="c")
    layout = MarketLayout(
        "c", "aave-v3", "0xp", "0xo", "0xd",
        (ReserveMeta("0xw", "WETH", 18, "0xa", "0xv", 8250, 8000),), (ACCT,), {}, {}, {},
    )  # fmt: skip
    snap = ChainSnapshot("c", 1, AT, {"WETH": ReserveState(0, 0, 0, 0, 2_000 * E8)}, {}, {}, {})
    settings = Settings(
        chains=[{"name": "c", "rpc_url": "http://127.0.0.1:1", "chain_id": 1}],
        positions=[{"chain": "c", "name": "main", "account": ACCT, "topup_asset": "WETH"}],
    )
    (position,) = build_parts(settings).positions
    report = evaluate_guard(
        settings,
        store,
        [(position, p)],
        {"c": (layout, snap)},
        [],
        [],
        ledger=ProposalLedger(store.db),
        at=AT,
        session_id="s",
    )
    v = report.views[0]
    assert v.prices is not None and v.prices.liquidation_price == 145_454_545_455
    t = Telemetry(tick_interval_s=5, error_budget=3)
    t.guard(report.views)
    text = t.render().decode()
    assert 'hedge_agent_position_health_factor{chain="c",position="main"} 1.375' in text
    assert (
        'hedge_agent_liquidation_price_usd{asset="WETH",chain="c",position="main"} 1454.54545455'
        in text
    )
    assert (
        'hedge_agent_guard_price_usd{asset="WETH",chain="c",position="main"} 1890.90909091' in text
    )
    assert 'hedge_agent_guard_trigger_health_factor{chain="c",position="main"} 1.3' in text
    t.close()


def _record(i: str, explanation: list[str], policy: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": i,
        "status": "simulated",
        "action": "deleverage",
        "chain": "devnet",
        "chain_id": 1,
        "account": ACCT,
        "created_at": "2026-01-01T00:00:00+00:00",
        "block_number": 7,
        "idempotency_key": "k" + i,
        "explanation": explanation,
        "policy": policy,
        "sizing": {"spend_usd": 1.0, "session_cap_usd": 100000.0},
    }


def test_the_review_shows_a_decision_once() -> None:
    why = ["evaluation at X", "S1 firing", "liquidation guard ..."]
    guard = {"reason": "guard: HF 1.3595 ...", "guard": {"ledger_session": "guard:x:s"}}
    layer = {"reason": "layer rule: S1+S2"}
    text = render_proposals(
        [_record("a", why, guard), _record("b", why, layer), _record("c", ["other"], layer)]
    )
    assert text.count("S1 firing") == 1  # one decision block for a and b
    assert text.count("Decision d-") == 2  # and one for c's decision
    assert "Proposal a  [simulated]  deleverage  (liquidation guard)" in text
    assert "for: guard: HF 1.3595" in text and "from the guard's own budget" in text
    assert text.count("(above)") == 3


def test_an_empty_report_changes_nothing() -> None:
    assert GuardReport().lines() == [] and not GuardReport().protects(ACCT, "")
