"""Several positions (on several chains) under one budget: the policy allocates the layer's
protection share by severity, the lowest health factor first. Every figure is recomputed here
by hand (``Fraction``, not the policy's code)."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pandas as pd

from agent.core.units import WAD
from agent.policy import (
    Decision,
    PolicyConfig,
    PositionSnapshot,
    SessionState,
    decide,
    health_factor_wad,
    idempotency_key,
    session_id_for,
)
from agent.policy.explain import explain_lines
from agent.signals import SignalResult
from agent.signals.base import InputRef

E8 = 10**8
AT = pd.Timestamp("2024-08-05 12:00", tz="UTC")
SID = session_id_for(int(AT.timestamp()))
SAFE = "0xAbC0000000000000000000000000000000000001"
OTHER = "0xdEF0000000000000000000000000000000000002"


def sig(sid: str, status: str = "firing", subject: str = "x") -> SignalResult:
    return SignalResult(
        sid, sid, subject, status, -0.1, -0.08, f"{sid} test", (InputRef(f"k.{sid}", "t", 1, 1.0),)
    )  # type: ignore[arg-type]


# S1+S2 trigger, S7 confirms (independent gate), S8 rising: DeFi first, full size.
FIRING = [sig("S1"), sig("S2"), sig("S7"), sig("S8", subject="eth")]


def pos(
    account: str,
    c_usd: int,
    d_usd: int,
    *,
    chain: str,
    scope: str,
    lt: int = 8250,
    target: str | None = None,
) -> PositionSnapshot:
    return PositionSnapshot(
        account,
        c_usd * E8,
        d_usd * E8,
        lt,
        health_factor_wad(c_usd * E8, d_usd * E8, lt),
        name=f"{chain}:{account[:6]}",
        chain=chain,
        target_health_factor_wad=None if target is None else int(Decimal(target) * WAD),
        key_scope=scope,
    )


def needed_usd(c_usd: int, d_usd: int, lt_bps: int, target: str) -> Decimal:
    """D * H / LT - C in USD, rounded up to the cent (the policy's sizing, by hand)."""
    exact = Fraction(d_usd) * Fraction(target) / Fraction(lt_bps, 10_000) - c_usd
    return Decimal(math.ceil(exact * 100)) / 100


def decide_for(positions: list[PositionSnapshot], budget: int, spent: str = "0") -> Decision:
    cfg = PolicyConfig(budget_usd=Decimal(budget))
    return decide(FIRING, positions, SessionState(SID, Decimal(spent)), cfg, AT)


def test_each_position_gets_what_it_needs_when_the_budget_allows() -> None:
    # B = 1,000,000: cap 250,000, options 40% -> protection share 150,000, far more than needed.
    a = pos(SAFE, 20_000, 12_000, chain="eth", scope="1")  # HF 1.375
    b = pos(OTHER, 50_000, 30_000, chain="arb", scope="42161", target="1.8")  # HF 1.375
    d = decide_for([a, b], 1_000_000)
    assert d.acted and d.layer_usd == Decimal("250000.00")
    tops = {t.account: t for t in d.topups()}
    assert tops[SAFE].max_spend_usd == needed_usd(20_000, 12_000, 8250, "1.6") == Decimal("3272.73")
    # the per-position target (1.8) is the one sized for, and carried on the action
    assert tops[OTHER].max_spend_usd == needed_usd(50_000, 30_000, 8250, "1.8")
    assert tops[OTHER].max_spend_usd == Decimal("15454.55")
    assert tops[OTHER].target_health_factor_wad == 18 * WAD // 10
    assert tops[SAFE].chain == "eth" and tops[OTHER].position == "arb:0xdEF0"
    # every position's allocation is shown, and nothing is left unallocated that was needed
    assert [x.allocated_usd for x in d.allocations] == [
        tops[x.account].max_spend_usd for x in d.allocations
    ]
    assert (
        d.proposed_spend_usd == sum((a.spend_usd for a in d.actions), Decimal(0))
        and d.proposed_spend_usd <= d.layer_usd
    )


def test_the_position_closest_to_liquidation_is_served_first() -> None:
    # B = 20,000: cap 5,000; options 40% = 2,000; the protection share is 3,000.
    near = pos(OTHER, 10_000, 7_600, chain="arb", scope="42161")  # HF 1.0855
    far = pos(SAFE, 20_000, 12_000, chain="eth", scope="1")  # HF 1.375
    d = decide_for([far, near], 20_000)  # config order must not matter
    assert d.layer_usd == Decimal("5000.00")
    share = d.layer_usd - Decimal("2000.00")
    need_near = needed_usd(10_000, 7_600, 8250, "1.6")  # 4,739.40 > the share
    assert need_near == Decimal("4739.40")
    assert [x.account for x in d.allocations] == [OTHER, SAFE]
    assert [x.allocated_usd for x in d.allocations] == [share, Decimal(0)]
    (top,) = d.topups()
    assert top.account == OTHER and top.max_spend_usd == share == Decimal("3000.00")
    # the healthier position is not proposed, and the record says why
    (why,) = [s for s in d.suppressed if SAFE.lower() in s.action_key]
    assert "closer to liquidation" in why.reason
    lines = "\n".join(explain_lines(d))
    assert "protection budget by severity" in lines and "allocated $3000.00" in lines


def test_the_remainder_goes_to_the_next_position() -> None:
    # B = 60,000: cap 15,000, protection share 9,000: the nearer needs 4,739.40, the rest is
    # 4,260.60 and the farther needs 3,272.73: both served, in full.
    near = pos(OTHER, 10_000, 7_600, chain="arb", scope="42161")
    far = pos(SAFE, 20_000, 12_000, chain="eth", scope="1")
    d = decide_for([far, near], 60_000)
    got = {t.account: t.max_spend_usd for t in d.topups()}
    assert got == {OTHER: Decimal("4739.40"), SAFE: Decimal("3272.73")}
    # B = 30,000: share 4,500 < 4,739.40: all of it to the nearer, none to the farther
    d2 = decide_for([far, near], 30_000)
    assert {t.account: t.max_spend_usd for t in d2.topups()} == {OTHER: Decimal("4500.00")}
    # B = 48,000: share 7,200: 4,739.40 then the rest 2,460.60 (< 3,272.73 needed)
    d3 = decide_for([far, near], 48_000)
    assert {t.account: t.max_spend_usd for t in d3.topups()} == {
        OTHER: Decimal("4739.40"),
        SAFE: Decimal("2460.60"),
    }
    assert sum((t.max_spend_usd for t in d3.topups()), Decimal(0)) == Decimal("7200.00")


def test_the_session_already_spent_elsewhere_shrinks_the_shared_layer() -> None:
    # One cap for every chain: 4,000 spent today (on any chain) leaves 1,000 of a 5,000 cap.
    near = pos(OTHER, 10_000, 7_600, chain="arb", scope="42161")
    far = pos(SAFE, 20_000, 12_000, chain="eth", scope="1")
    d = decide_for([far, near], 20_000, spent="4000")
    assert d.layer_usd == Decimal("1000.00")
    assert {t.account: t.max_spend_usd for t in d.topups()} == {OTHER: Decimal("600.00")}
    assert d.session_spent_after_usd <= d.session_cap_usd


def test_the_same_account_on_two_chains_is_two_positions_with_two_keys() -> None:
    a = pos(SAFE, 20_000, 12_000, chain="eth", scope="1")
    b = pos(SAFE, 20_000, 13_000, chain="arb", scope="42161")
    d = decide_for([a, b], 1_000_000)
    keys = {t.chain: t.idempotency_key for t in d.topups()}
    assert keys == {
        "eth": idempotency_key("collateral_top_up", f"1:{SAFE}", SID),
        "arb": idempotency_key("collateral_top_up", f"42161:{SAFE}", SID),
    }
    assert len({t.action_key for t in d.topups()}) == 2


def test_one_position_decides_as_before() -> None:
    # A single position, as an object or in a list, without chain scope: the single-chain
    # keys (an upgraded daemon's journal keeps deduplicating) and no allocation table.
    lone = PositionSnapshot(
        SAFE, 20_000 * E8, 12_000 * E8, 8250, health_factor_wad(20_000 * E8, 12_000 * E8, 8250)
    )
    cfg = PolicyConfig(budget_usd=Decimal(1_000_000))
    s = SessionState(SID, Decimal(0))
    one = decide(FIRING, lone, s, cfg, AT)
    many = decide(FIRING, [lone], s, cfg, AT)
    assert one == many and one.allocations == ()
    (top,) = one.topups()
    assert top.idempotency_key == idempotency_key("collateral_top_up", SAFE, SID)
    assert top.action_key == f"topup:{SAFE.lower()}" and top.max_spend_usd == Decimal("3272.73")
