"""The DeFi layer rule, consensus gate, beta priority, sizing, hysteresis and idempotency."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest
from pydantic import ValidationError

from agent.core.units import WAD
from agent.policy import (
    Decision,
    OptionAction,
    PolicyConfig,
    PolicyMemory,
    PositionSnapshot,
    SessionState,
    TopUpAction,
    decide,
    health_factor_wad,
    idempotency_key,
    required_topup_base,
    session_id_for,
)
from agent.policy.explain import explain_lines
from agent.signals import SignalResult
from agent.signals.base import InputRef

E8 = 10**8
AT = pd.Timestamp("2024-08-05 12:00", tz="UTC")


def sig(
    sid: str,
    status: str = "firing",
    subject: str = "x",
    value: float | None = -0.1,
    severity: float | None = None,
) -> SignalResult:
    metrics = () if severity is None else (("severity", severity),)
    return SignalResult(
        sid,
        sid,
        subject,
        status,
        value,
        -0.08,
        f"{sid} test",
        (InputRef(f"k.{sid}", "test", 1, 1.0),),
        metrics,
    )  # type: ignore[arg-type]


def quiet(*ids: str) -> list[SignalResult]:
    return [sig(i, "quiet") for i in ids]


def position(c_usd: int = 20_000, d_usd: int = 12_000, lt: int = 8250) -> PositionSnapshot:
    return PositionSnapshot(
        "0xAbC0000000000000000000000000000000000001",
        c_usd * E8,
        d_usd * E8,
        lt,
        health_factor_wad(c_usd * E8, d_usd * E8, lt),
    )


def session(at: pd.Timestamp = AT, spent: str = "0") -> SessionState:
    return SessionState(session_id_for(int(at.timestamp())), Decimal(spent))


def run(
    signals: list[SignalResult],
    cfg: PolicyConfig | None = None,
    at: pd.Timestamp = AT,
    memory: PolicyMemory | None = None,
    spent: str = "0",
    pos: PositionSnapshot | None = None,
) -> Decision:
    return decide(
        signals,
        pos or position(),
        session(at, spent),
        cfg or PolicyConfig(budget_usd=Decimal(100_000), gate_mode="design"),
        at,
        memory,
    )


def test_topup_sizing_by_hand() -> None:
    h = int(Decimal("1.6") * WAD)
    # C=20000, D=10000, LT=82.5%: HF = 1.65 >= 1.6 -> D*H*/LT - C = 19393.94 - 20000 < 0 -> nothing
    assert required_topup_base(position(20_000, 10_000), h) == 0
    # D = 12000: 12000 * 1.6 / 0.825 - 20000 = 3272.7272... USD -> 327272727272.7 base, rounded up
    assert required_topup_base(position(20_000, 12_000), h) == 327_272_727_273
    assert required_topup_base(position(20_000, 0), h) == 0
    # and it reaches the target exactly (integer HF after adding it)
    added = required_topup_base(position(20_000, 12_000), h)
    assert health_factor_wad(20_000 * E8 + added, 12_000 * E8, 8250) >= h
    assert health_factor_wad(20_000 * E8 + added - 1, 12_000 * E8, 8250) < h


def test_gate_blocks_a_lone_tvl_drop() -> None:
    d = run([sig("S1"), *quiet("S2", "S3", "S4", "S5", "S6", "S7", "S8")])
    assert not d.trigger and not d.acted and d.actions == ()
    assert d.families_firing == ("onchain",) and not d.gate_passed
    # even with the gate off a lone TVL drop is no layer trigger (S2 must hold)
    d2 = run(
        [sig("S1"), *quiet("S2")], PolicyConfig(budget_usd=Decimal(100_000), consensus_gate=False)
    )
    assert not d2.acted


def test_independent_gate_is_the_default() -> None:
    cfg = PolicyConfig(budget_usd=Decimal(100_000))
    assert cfg.gate_mode == "independent"
    lone = run([sig("S1"), sig("S2"), *quiet("S3", "S4", "S5", "S6", "S7", "S8")], cfg)
    assert lone.trigger and not lone.gate_passed and not lone.acted and lone.actions == ()
    funded = run([sig("S1"), sig("S2"), sig("S3"), *quiet("S8")], cfg)  # S3 confirms S1+S2
    assert funded.acted and funded.confirming_signals == ("S3",)
    # S3+S4 with S2 firing: macro confirms the on-chain stress path
    stress = run([sig("S3"), sig("S4"), sig("S2")], cfg)
    assert stress.trigger_paths == ("S3+S4",) and stress.acted


def test_trigger_paths_and_gate_modes() -> None:
    a = run([sig("S1"), sig("S2"), *quiet("S8")])
    assert a.trigger_paths == ("S1+S2",) and a.gate_passed and a.acted
    b = run([sig("S3"), sig("S4")])
    assert (
        b.trigger_paths == ("S3+S4",)
        and b.acted
        and set(b.families_firing) == {"onchain", "market"}
    )
    # "independent" gate: the trigger's own signals don't count as confirmation
    ind = PolicyConfig(budget_usd=Decimal(100_000), gate_mode="independent")
    blocked = run([sig("S1"), sig("S2")], ind)
    assert (
        blocked.trigger and not blocked.gate_passed and not blocked.acted and blocked.actions == ()
    )
    assert any("consensus gate (independent)" in n for n in blocked.notes)
    confirmed = run([sig("S1"), sig("S2"), sig("S7")], ind)
    assert confirmed.acted and confirmed.confirming_signals == ("S7",)
    ungated = run([sig("S1"), sig("S2")], ind.model_copy(update={"consensus_gate": False}))
    assert ungated.acted and not ungated.gate_passed


def test_insufficient_never_counts_as_firing() -> None:
    d = run([sig("S1"), sig("S2", "insufficient_data", value=None)])
    assert not d.trigger and d.signal_status["S2"] == "insufficient_data"


def test_beta_priority_and_sizing() -> None:
    cfg = PolicyConfig(budget_usd=Decimal(100_000), gate_mode="design")  # cap 25,000
    full = run(
        [sig("S1"), sig("S2"), sig("S8", subject="eth"), sig("S8", "quiet", subject="btc")], cfg
    )
    assert (
        full.priority == "defi_first"
        and full.size_fraction == 1
        and full.layer_usd == Decimal("25000.00")
    )
    half = run([sig("S1"), sig("S2"), *quiet("S8")], cfg)
    assert half.priority == "sp500_first" and half.layer_usd == Decimal("12500.00")
    assert any("hedge the S&P 500 side first" in n for n in half.notes)
    # layer 12,500: options 40% = 5,000 split 40/35/25; top-up gets up to 7,500, needs 3,272.73
    top = half.topups()[0]
    assert top.required_collateral_base == 327_272_727_273 and top.max_spend_usd == Decimal(
        "3272.73"
    )
    assert top.target_health_factor_wad == 16 * WAD // 10
    opts = {o.horizon: o for o in half.options()}
    assert {k: o.spend_usd for k, o in opts.items()} == {
        "short": Decimal("2000.00"),
        "intermediate": Decimal("1750.00"),
        "structural": Decimal("1250.00"),
    }
    assert (opts["short"].dte_min, opts["short"].dte_max, opts["short"].otm_fraction) == (
        0,
        7,
        Decimal("0.10"),
    )
    assert (
        opts["intermediate"].dte_min,
        opts["intermediate"].dte_max,
        opts["intermediate"].otm_fraction,
    ) == (15, 45, Decimal("0.15"))
    assert opts["structural"].dte_min == 60 and opts["structural"].otm_fraction == Decimal("0.20")
    assert half.proposed_spend_usd == Decimal("8272.73") == half.session_spent_after_usd
    # a big shortfall is capped by the top-up share of the layer
    big = run([sig("S1"), sig("S2"), *quiet("S8")], cfg, pos=position(20_000, 19_000))
    assert big.topups()[0].max_spend_usd == Decimal("7500.00")
    # a healthy position gets no top-up, and its share is not moved to options
    healthy = run([sig("S1"), sig("S2")], cfg, pos=position(20_000, 5_000))
    assert healthy.topups() == () and healthy.proposed_spend_usd == Decimal("5000.00")


def test_session_cap_holds_across_triggers_in_one_day() -> None:
    cfg = PolicyConfig(budget_usd=Decimal(100_000), gate_mode="design")
    spent = Decimal(0)
    total = Decimal(0)
    for i in range(6):
        at = AT + pd.Timedelta(hours=i)
        # fresh memory each time (as if different positions/keys) so only the cap limits
        d = decide(
            [sig("S1"), sig("S2"), sig("S8")],
            position(20_000, 19_000),
            SessionState(session_id_for(int(at.timestamp())), spent),
            cfg,
            at,
            None,
        )
        assert d.session_spent_before_usd == spent
        assert d.proposed_spend_usd <= d.session_cap_usd - spent
        spent = d.session_spent_after_usd
        total += d.proposed_spend_usd
    assert total <= Decimal("25000.00") and spent == total
    assert d.actions == () and d.session_remaining_usd == 0
    assert any("session cap" in n for n in d.notes)


def test_hysteresis_and_cooldown() -> None:
    cfg = PolicyConfig(budget_usd=Decimal(100_000), gate_mode="design")  # step 0.25, cooldown 24h
    day1 = pd.Timestamp("2024-08-05 23:00", tz="UTC")
    first = run([sig("S1", severity=1.5), sig("S2")], cfg, at=day1)
    assert len(first.actions) == 4
    mem = first.memory
    # same session again: every key already proposed (idempotent)
    again = run(
        [sig("S1", severity=3.0), sig("S2")], cfg, at=day1 + pd.Timedelta(minutes=30), memory=mem
    )
    assert again.actions == () and all("already proposed" in s.reason for s in again.suppressed)
    # next session 2h later, trigger persists at the same severity: hysteresis holds
    day2 = day1 + pd.Timedelta(hours=2)
    held = run([sig("S1", severity=1.6), sig("S2")], cfg, at=day2, memory=mem)
    assert (
        held.trigger
        and held.actions == ()
        and all("hysteresis" in s.reason for s in held.suppressed)
    )
    assert held.memory == mem
    # worse by at least the step: re-proposed
    worse = run([sig("S1", severity=1.75), sig("S2")], cfg, at=day2, memory=mem)
    assert len(worse.actions) == 4
    # cooldown passed: re-proposed at the same severity
    later = day1 + pd.Timedelta(hours=24)
    cooled = run([sig("S1", severity=1.5), sig("S2")], cfg, at=later, memory=mem)
    assert len(cooled.actions) == 4
    assert cooled.memory.get(cooled.actions[0].action_key).at == int(later.timestamp())  # type: ignore[union-attr]
    # memory survives a JSON round trip
    assert PolicyMemory.from_dict(cooled.memory.as_dict()) == cooled.memory


def test_horizon_once_per_session() -> None:
    s = SessionState(session_id_for(int(AT.timestamp())), Decimal(0), frozenset({"short"}))
    d = decide(
        [sig("S1"), sig("S2")],
        position(),
        s,
        PolicyConfig(budget_usd=Decimal(100_000), gate_mode="design"),
        AT,
        None,
    )
    assert {o.horizon for o in d.options()} == {"intermediate", "structural"}
    assert any("already bought" in x.reason for x in d.suppressed)


def test_idempotency_keys_stable() -> None:
    a = run([sig("S1"), sig("S2")])
    b = run([sig("S1", value=-0.3), sig("S2")])
    assert [x.idempotency_key for x in a.actions] == [x.idempotency_key for x in b.actions]
    assert len({x.idempotency_key for x in a.actions}) == 4
    top = a.topups()[0]
    assert top.idempotency_key == idempotency_key("collateral_top_up", top.account, "2024-08-05")
    assert top.idempotency_key == idempotency_key(
        "collateral_top_up", top.account.lower(), "2024-08-05"
    )
    other_day = run([sig("S1"), sig("S2")], at=AT + pd.Timedelta(days=1))
    assert {x.idempotency_key for x in other_day.actions}.isdisjoint(
        {x.idempotency_key for x in a.actions}
    )
    assert idempotency_key("option_put", "WETH", "2024-08-05", "short") != idempotency_key(
        "option_put", "WETH", "2024-08-05", "structural"
    )


def test_explain_and_dict_carry_the_evidence() -> None:
    d = run([sig("S1"), sig("S2"), *quiet("S8")])
    lines = explain_lines(d)
    assert any(
        line.startswith("S1 S1 [x] firing: value=-0.1 threshold=-0.08") and "k.S1@" in line
        for line in lines
    )
    assert any("layer trigger: yes via S1+S2" in line for line in lines)
    assert any("hedge the S&P 500 side first" in line for line in lines)
    out = d.as_dict()
    assert out["proposed_spend_usd"] == str(d.proposed_spend_usd)
    assert out["signals"][0]["inputs"][0] == {
        "key": "k.S1",
        "source": "test",
        "ts": 1,
        "value": 1.0,
    }
    assert isinstance(d.actions[0], TopUpAction) and isinstance(d.actions[1], OptionAction)


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError):
        PolicyConfig.model_validate({"budget_usd": 1000, "sesion_cap_fraction": 0.1})
    with pytest.raises(ValidationError):
        PolicyConfig(target_health_factor=Decimal("0.9"))
    c = PolicyConfig()
    assert c.session_cap_usd == Decimal("250000.00") and c.target_health_factor == Decimal("1.6")
    assert [(h.weight, h.otm_fraction) for h in c.horizons] == [
        (Decimal("0.40"), Decimal("0.10")),
        (Decimal("0.35"), Decimal("0.15")),
        (Decimal("0.25"), Decimal("0.20")),
    ]


def test_open_layer_budget_bounds_every_open_layer() -> None:
    from agent.policy import budget_state, protection_layer, put_layer

    cfg = PolicyConfig(budget_usd=Decimal(100_000), gate_mode="design")  # cap 25,000
    t = int(AT.timestamp())
    day = 86_400
    layers = [
        protection_layer("a", Decimal("40000.00"), t - 29 * day, 30),  # open until t + 1 day
        put_layer("b", Decimal("45000.00"), t - 2 * day, t + 3 * day),
        protection_layer("c", Decimal("99999.00"), t - 31 * day, 30),  # expired a day ago
        put_layer("d", Decimal("5000.00"), t - day, t),  # matured at t: no longer open
    ]
    st = budget_state(layers, cfg.budget_usd, t)
    assert st.open_usd == Decimal("85000.00") and st.room_usd == Decimal("15000.00")
    assert st.next_release_at == t + day and st.next_release_usd == Decimal("40000.00")
    sigs = [sig("S1"), sig("S2"), sig("S8", subject="eth")]  # DeFi first: wants the full 25,000
    d = decide(sigs, position(), session(), cfg, AT, None, open_layers=layers)
    assert d.layer_usd == Decimal("15000.00") and d.budget_room_usd == Decimal("15000.00")
    assert d.open_layers_usd == Decimal("85000.00")
    assert d.proposed_spend_usd <= Decimal("15000.00")
    assert any("layer limited to the room $15,000.00" in n for n in d.notes)
    # used up: nothing proposed, and the decision says what frees room next and when
    full = [*layers, put_layer("e", Decimal("15000.00"), t - day, t + 10 * day)]
    d2 = decide(sigs, position(), session(), cfg, AT, None, open_layers=full)
    assert d2.acted and d2.actions == () and d2.layer_usd == 0
    note = next(n for n in d2.notes if "B used up" in n)
    assert "$40,000.00 (protection) frees on 2024-08-06T12:00:00Z" in note
    assert d2.summary()["budget_room_usd"] == "0"
    assert any("open-layer budget B $100000" in line for line in explain_lines(d2))


def test_options_off_means_all_protection() -> None:
    # B 1M, cap 250k, S&P first: layer 125k. The position needs 88,800 of collateral:
    # D = 1,000,000, C chosen so D * 1.6 / 0.825 - C = 88,800 -> C = 1,850,593.94
    cfg = PolicyConfig(gate_mode="design")
    c_base = 1_000_000 * E8 * 16 * 10_000 // (10 * 8250) - 88_800 * E8
    pos = PositionSnapshot(
        "0xAbC0000000000000000000000000000000000001",
        c_base,
        1_000_000 * E8,
        8250,
        health_factor_wad(c_base, 1_000_000 * E8, 8250),
    )
    sigs = [sig("S1"), sig("S2"), *quiet("S8")]
    on = decide(sigs, pos, session(), cfg, AT, None)
    assert on.layer_usd == Decimal("125000.00") and on.topups()[0].max_spend_usd == Decimal(
        "75000.00"
    )  # 60% of the layer: the put share stays reserved
    assert len(on.options()) == 3
    off = decide(sigs, pos, session(), cfg, AT, None, options_enabled=False)
    top = off.topups()[0]
    assert off.options() == () and not any("option:" in s.action_key for s in off.suppressed)
    # independent: D * H* / LT - C in exact fractions, rounded up to the cent
    from fractions import Fraction
    from math import ceil

    need = Fraction(1_000_000 * E8) * Fraction(16, 10) / Fraction(8250, 10_000) - c_base
    need_usd = Decimal(ceil(need / E8 * 100)) / 100
    assert need_usd == Decimal("88800.01")  # C was floored when built
    assert top.required_collateral_usd == need_usd
    assert top.max_spend_usd == need_usd  # all of what is needed, no more
    assert off.proposed_spend_usd == need_usd
    assert any(
        "options disabled: the whole layer $125,000.00 goes to protection" in n for n in off.notes
    )
    # a need above the layer is capped at the whole layer, not at 60% of it
    big = PositionSnapshot(pos.account, c_base - 100_000 * E8, pos.debt_base, 8250, 1)
    assert decide(sigs, big, session(), cfg, AT, None, options_enabled=False).topups()[
        0
    ].max_spend_usd == Decimal("125000.00")


def test_each_rung_is_its_weight_of_the_premium_budget_rounded_down_to_the_cent() -> None:
    """B = $100,001: cap $25,000.25, S&P first sizes at half: layer $12,500.12 (cents down),
    options 40% = $5,000.04; rungs 40/35/25% of that, each floored to the cent, so the ladder
    never spends a cent above its budget (mutation audit: rounding direction)."""
    cfg = PolicyConfig(budget_usd=Decimal(100_001), gate_mode="design")
    half = run([sig("S1"), sig("S2"), *quiet("S8")], cfg)
    assert half.layer_usd == Decimal("12500.12")
    spends = {o.horizon: o.spend_usd for o in half.options()}
    # 5000.04 x 0.40 = 2000.016, x 0.35 = 1750.014, x 0.25 = 1250.01: by hand, floored
    assert spends == {
        "short": Decimal("2000.01"),
        "intermediate": Decimal("1750.01"),
        "structural": Decimal("1250.01"),
    }
    assert sum(spends.values()) <= Decimal("5000.04")


def test_ladder_weights_may_sum_to_one_and_not_a_hair_more() -> None:
    """The rungs split the option spend: weights summing past 1 would spend more than the
    premium budget (mutation audit: a threshold relaxed)."""
    from agent.policy.ladder import HorizonConfig, check_ladder

    def rung(name: str, w: str) -> HorizonConfig:
        return HorizonConfig(name=name, dte_min=0, dte_max=7, weight=Decimal(w), otm_fraction=0)

    check_ladder([rung("a", "0.6"), rung("b", "0.4")])  # exactly 1
    with pytest.raises(ValueError, match=r"weights sum to 1\.01, must be <= 1"):
        check_ladder([rung("a", "0.6"), rung("b", "0.41")])
    with pytest.raises(ValueError, match="names must be unique"):
        check_ladder([rung("a", "0.5"), rung("a", "0.5")])
