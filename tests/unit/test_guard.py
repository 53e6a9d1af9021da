"""The liquidation guard (agent/policy/guard.py): trigger, stress, hysteresis, sizing, prices.

Every number is computed by hand in the comments: a position of $20,000 collateral and
$12,000 debt at LT 82.5% has HF 20,000 x 0.825 / 12,000 = 1.375.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from agent.core.units import WAD
from agent.policy import PositionSnapshot
from agent.policy.guard import (
    GuardConfig,
    GuardState,
    effective_trigger,
    guard_prices,
    guard_room_usd,
    guard_topup,
    guard_verdict,
    price_at_hf,
)

E8 = 10**8
AT = 1_700_000_000


def w(x: str) -> int:
    return int(Decimal(x) * WAD)


def pos(c_usd: int = 20_000, d_usd: int = 12_000, lt: int = 8250) -> PositionSnapshot:
    hf = c_usd * lt * WAD // (d_usd * 10_000)
    return PositionSnapshot("0xSafe", c_usd * E8, d_usd * E8, lt, hf, name="main", chain="c1")


CFG = GuardConfig()
QUIET = effective_trigger(CFG, ())


def test_defaults_are_the_issue_s() -> None:
    assert (CFG.trigger_hf_wad, CFG.target_hf_wad, CFG.critical_hf_wad) == (
        13 * 10**17,
        16 * 10**17,
        11 * 10**17,
    )
    assert pos().health_factor_wad == w("1.375")


def test_triggers_at_and_below_the_trigger_only() -> None:
    above = guard_verdict(CFG, GuardState(), w("1.3") + 1, QUIET, AT)
    assert (above.kind, above.propose) == ("none", False)
    assert above.state.armed
    at = guard_verdict(CFG, GuardState(), w("1.3"), QUIET, AT)
    assert (at.kind, at.propose, at.critical) == ("protect", True, False)
    assert at.state == GuardState(False, w("1.3"), AT)
    assert at.reason.startswith("guard: ") and "target HF 1.6" in at.reason


def test_sizes_to_the_target_whole_not_a_share() -> None:
    # target 1.6: collateral needed = 12,000 x 1.6 / 0.825 = 23,272.7272..., so the top-up is
    # 3,272.7272...$ = 327,272,727,272.7 base units -> 327,272,727,273 rounded up.
    p = pos()
    v = guard_verdict(CFG, GuardState(), p.health_factor_wad, effective_trigger(CFG, ["S3"]), AT)
    a = guard_topup(p, CFG, v, Decimal(100_000), "2023-11-14")
    assert a is not None
    assert a.required_collateral_base == 327_272_727_273
    assert a.required_collateral_usd == Decimal("3272.73")
    assert a.max_spend_usd == Decimal("3272.73")  # the whole requirement: room is $100k
    assert a.target_health_factor_wad == w("1.6")
    assert a.action_key == "guard:0xsafe" and (a.chain, a.position) == ("c1", "main")
    # both sides: with it HF >= 1.6, one base unit less stays below 1.6
    c, d = p.collateral_base, p.debt_base
    assert (c + 327_272_727_273) * 8250 * WAD // (d * 10_000) >= w("1.6")
    assert (c + 327_272_727_272) * 8250 * WAD // (d * 10_000) < w("1.6")


def test_spends_from_its_own_budget() -> None:
    cfg = GuardConfig(budget_usd=Decimal(5_000))
    # $4,000 already spent by the guard this session: $1,000 left, less than the $3,272.73 needed
    room = guard_room_usd(cfg, Decimal(4_000))
    assert room == Decimal(1_000)
    p = pos()
    v = guard_verdict(cfg, GuardState(), p.health_factor_wad, effective_trigger(cfg, ["S1"]), AT)
    a = guard_topup(p, cfg, v, room, "2023-11-14")
    assert a is not None and a.max_spend_usd == Decimal("1000.00")
    assert a.required_collateral_usd == Decimal("3272.73")
    assert guard_room_usd(cfg, Decimal(6_000)) == 0
    # no proposal due: no action
    none = guard_verdict(cfg, GuardState(), p.health_factor_wad, effective_trigger(cfg, ()), AT)
    assert guard_topup(p, cfg, none, room, "2023-11-14") is None


def test_idempotency_key_per_evaluation_time() -> None:
    p = pos(d_usd=13_000)  # HF 1.2692
    v1 = guard_verdict(CFG, GuardState(), p.health_factor_wad, QUIET, AT)
    v2 = guard_verdict(CFG, GuardState(), p.health_factor_wad, QUIET, AT + 60)
    k1 = guard_topup(p, CFG, v1, Decimal(10**6), "s")
    k1b = guard_topup(p, CFG, v1, Decimal(10**6), "s")
    k2 = guard_topup(p, CFG, v2, Decimal(10**6), "s")
    assert k1 and k1b and k2
    assert k1.idempotency_key == k1b.idempotency_key != k2.idempotency_key


def test_holds_while_pending_then_proposes_a_step_further() -> None:
    pending = GuardState(False, w("1.29"), AT)
    hold = guard_verdict(CFG, pending, w("1.24") + 1, QUIET, AT + 3600)
    assert (hold.kind, hold.propose) == ("hold", False)
    assert hold.state == pending
    assert "1.2400" in hold.reason  # where it proposes again: 1.29 - 0.05
    again = guard_verdict(CFG, pending, w("1.24"), QUIET, AT + 3600)
    assert (again.kind, again.propose) == ("protect", True)
    assert again.state == GuardState(False, w("1.24"), AT + 3600)


def test_rearms_above_trigger_plus_margin_only() -> None:
    pending = GuardState(False, w("1.29"), AT)
    mid = guard_verdict(CFG, pending, w("1.35"), QUIET, AT + 60)  # 1.30 + 0.05, not above
    assert mid.kind == "none" and mid.state.pending
    back = guard_verdict(CFG, mid.state, w("1.29"), QUIET, AT + 120)
    assert back.kind == "hold"  # never re-armed: the dip back is not a new proposal
    up = guard_verdict(CFG, pending, w("1.35") + 1, QUIET, AT + 60)
    assert up.kind == "none" and up.state == GuardState()
    down = guard_verdict(CFG, up.state, w("1.29"), QUIET, AT + 120)
    assert (down.kind, down.propose) == ("protect", True)


def test_pending_lapses_after_repropose_after() -> None:
    pending = GuardState(False, w("1.29"), AT)
    assert guard_verdict(CFG, pending, w("1.28"), QUIET, AT + 86_399).kind == "hold"
    lapsed = guard_verdict(CFG, pending, w("1.28"), QUIET, AT + 86_400)
    assert lapsed.propose and "lapsed" in lapsed.reason
    never = GuardConfig(repropose_after_s=None)
    assert guard_verdict(never, pending, w("1.28"), QUIET, AT + 10**7).kind == "hold"


def test_rises_under_stress_and_relaxes_when_quiet() -> None:
    p = pos()  # HF 1.375: above 1.30, below the stressed 1.45
    stressed = effective_trigger(CFG, ["S8", "S3", "S3", "S5"])
    assert stressed.trigger_hf_wad == w("1.45") and stressed.stressed
    assert stressed.firing == ("S3", "S5")  # S8 (beta) is not a stress signal
    assert "raised from 1.3" in stressed.reason and "S3, S5" in stressed.reason
    v = guard_verdict(CFG, GuardState(), p.health_factor_wad, stressed, AT)
    assert v.propose and "1.45" in v.reason
    only_beta = effective_trigger(CFG, ["S8"])
    assert only_beta.trigger_hf_wad == w("1.3") and not only_beta.stressed
    assert guard_verdict(CFG, GuardState(), p.health_factor_wad, only_beta, AT).kind == "none"
    # two signals needed: one is quiet
    two = GuardConfig(stress_min_firing=2)
    assert effective_trigger(two, ["S1"]).trigger_hf_wad == w("1.3")
    assert effective_trigger(two, ["S1", "S2"]).trigger_hf_wad == w("1.45")
    fixed = GuardConfig(stress_trigger_hf_wad=None)
    assert effective_trigger(fixed, ["S1", "S2", "S3"]).trigger_hf_wad == w("1.3")


def test_critical_is_flagged_and_follows_the_hysteresis() -> None:
    armed = guard_verdict(CFG, GuardState(), w("1.1"), QUIET, AT)
    assert (armed.kind, armed.propose, armed.critical) == ("critical", True, True)
    assert armed.reason.startswith("guard: CRITICAL")
    pending = GuardState(False, w("1.12"), AT)
    held = guard_verdict(CFG, pending, w("1.09"), QUIET, AT + 60)  # 1.09 > 1.12 - 0.05
    assert (held.kind, held.propose, held.critical) == ("critical", False, True)
    assert not guard_verdict(CFG, GuardState(), w("1.1") + 1, QUIET, AT).critical


def test_no_debt_and_disabled() -> None:
    v = guard_verdict(CFG, GuardState(False, w("1.2"), AT), 2**256 - 1, QUIET, AT)
    assert v.kind == "none" and v.state == GuardState()
    off = GuardConfig(enabled=False)
    assert guard_verdict(off, GuardState(), w("1.01"), QUIET, AT).propose is False


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="critical_hf < trigger_hf < target_hf"):
        GuardConfig(trigger_hf_wad=w("1.7"))
    with pytest.raises(ValueError, match="stress_trigger_hf"):
        GuardConfig(stress_trigger_hf_wad=w("1.65"))
    with pytest.raises(ValueError, match="budget_usd"):
        GuardConfig(budget_usd=Decimal(-1))


def test_liquidation_and_guard_prices_by_hand() -> None:
    # ETH at $2,000: HF 1.375 -> HF 1 at 2,000 / 1.375 = 1,454.5454...; HF 1.30 at
    # 2,000 x 1.30 / 1.375 = 1,890.9090...; both rounded up in 1e-8 dollars
    p = pos()
    g = guard_prices(p, 2_000 * E8, w("1.3"))
    assert g is not None
    assert g.liquidation_price == 145_454_545_455
    assert g.guard_price == 189_090_909_091
    assert g.liquidation_distance_bps == 2727  # 545.4545 / 2000 = 27.27%
    assert g.guard_distance_bps == 545  # 109.0909 / 2000 = 5.45%
    # both sides: at the liquidation price HF >= 1, one unit below it < 1
    # (collateral moves with the price: HF(P') = C x P'/P x LT / D)
    c, d, p0 = p.collateral_base, p.debt_base, 2_000 * E8
    assert c * g.liquidation_price * 8250 >= d * 10_000 * p0
    assert c * (g.liquidation_price - 1) * 8250 < d * 10_000 * p0
    assert c * g.guard_price * 8250 * WAD >= w("1.3") * d * 10_000 * p0
    assert c * (g.guard_price - 1) * 8250 * WAD < w("1.3") * d * 10_000 * p0
    assert price_at_hf(0, 1, 8250, 1, WAD) is None
    assert price_at_hf(1, 0, 8250, 1, WAD) is None


def test_state_since_rebuilds_pending_or_rearmed() -> None:
    from agent.policy.guard import state_since

    # last proposal at HF 1.29; the highest HF since decides (trigger 1.30 + margin 0.05)
    assert state_since(CFG, w("1.29"), AT, None, w("1.3")) == GuardState(False, w("1.29"), AT)
    assert state_since(CFG, w("1.29"), AT, w("1.35"), w("1.3")).pending
    assert state_since(CFG, w("1.29"), AT, w("1.35") + 1, w("1.3")) == GuardState()
    # under the stressed trigger 1.45 a recovery to 1.42 does not re-arm
    assert state_since(CFG, w("1.40"), AT, w("1.42"), w("1.45")).pending
