"""The DeFi layer rule, consensus gate, beta priority and sizing (DESIGN.md section 2).

``decide(signals, positions, session, cfg, at, memory) -> Decision`` is pure: same inputs, same
decision; time is the ``at`` argument; hysteresis state comes in as ``memory`` and goes out as
``Decision.memory``. Each step below is its own pure function (:func:`layer_trigger`,
:func:`consensus_gate`, :func:`beta_priority`, :func:`layer_size`, :func:`hysteresis_block`,
:func:`allocate_topups`, :func:`allocate_options`; the sizing itself is
:func:`required_topup_base`), which the backtest calls too instead of restating them.

1. **Layer trigger**: S1 fires on any watched protocol **and** S2 holds (path ``S1+S2``), or S3
   and S4 fire together (path ``S3+S4``). A signal id fires when any of its subjects fires.
2. **Consensus gate**: families on-chain {S1, S4, S5}, market {S3, S6, S7}, macro {S2}; the
   trigger acts only if ``gate_min_families`` (2) families have a firing member (or the gate is
   disabled, ``cfg.consensus_gate=False``, which the backtest uses for the ungated rule).
3. **Beta priority**: S8 rising for BTC or ETH -> ``defi_first``, size 1; otherwise
   ``sp500_first`` at ``non_defi_first_fraction`` with the note "hedge the S&P 500 side first"
   (S8 insufficient counts as not rising, and says so).
4. **Sizing** (``Decimal`` USD, cents): session cap = B x 25%; layer = min(session remaining,
   cap x size, open-layer room) where the room is B minus the layers still open (``open_layers``,
   :mod:`agent.policy.budget`); options get ``option_spend_fraction`` of the layer split by horizon
   weight (each horizon at most once per session), the top-up gets up to the rest, sized
   ``D * H* / LT - C`` in base units. With options disabled (``options_enabled=False``) no put is
   sized and the whole layer is the top-up's ceiling. With several positions (one budget for
   every chain), the top-up share is allocated by severity: the lowest health factor first, each
   position up to what its target needs (``Decision.allocations`` shows the split).
5. **Hysteresis**: an action key proposed before is proposed again only in a new session and
   only if its trigger severity rose by ``hysteresis_step`` or ``cooldown_hours`` passed.
   Severity = how far past threshold the triggering signal is, in threshold units (S1 at -12%
   vs -8% is 1.5; S3 is max(|rate|/50%, z/3)). Memory does not reset when a trigger clears, so a
   flapping trigger cannot bypass the cooldown.
6. **Idempotency**: every action carries ``sha256(action|target|session|horizon)[:32]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import pandas as pd

from agent.core.units import BPS, WAD
from agent.policy.budget import BudgetState, OpenLayer, budget_state
from agent.policy.config import PolicyConfig
from agent.policy.models import (
    Action,
    Allocation,
    Decision,
    MemoryEntry,
    OptionAction,
    PolicyMemory,
    PositionSnapshot,
    Priority,
    SessionState,
    Suppressed,
    TopUpAction,
    idempotency_key,
    session_id_for,
)
from agent.signals.base import SIGNAL_IDS, SignalResult, aggregate_status, to_utc, unix

FAMILIES: dict[str, tuple[str, ...]] = {
    "onchain": ("S1", "S4", "S5"),
    "market": ("S3", "S6", "S7"),
    "macro": ("S2",),
}
CENT = Decimal("0.01")
SP500_FIRST_NOTE = "hedge the S&P 500 side first"


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def health_factor_wad(collateral_base: int, debt_base: int, lt_bps: int) -> int:
    """``HF = C * LT / D`` in wad (max uint when there is no debt)."""
    if debt_base == 0:
        return 2**256 - 1
    return collateral_base * lt_bps * WAD // (debt_base * BPS)


def required_topup_base(position: PositionSnapshot, target_hf_wad: int) -> int:
    """``D * H* / LT - C`` in base units, rounded up (0 when HF >= H* or there is no debt).
    Exact integer math: ``ceil((ceil(H* * D * BPS / WAD) - C * LT) / LT)``."""
    d, c, lt = position.debt_base, position.collateral_base, position.liquidation_threshold_bps
    if d <= 0:
        return 0
    if lt <= 0:
        raise ValueError(f"{position.account}: liquidation threshold {lt} bps is not positive")
    needed_weighted = _ceil_div(target_hf_wad * d * BPS, WAD)
    have_weighted = c * lt
    if have_weighted >= needed_weighted:
        return 0
    return _ceil_div(needed_weighted - have_weighted, lt)


def required_repay_base(
    collateral_base: int, debt_base: int, lt_bps: int, target_hf_wad: int
) -> int:
    """Debt to repay (base units, rounded up) so that ``C * LT / D' >= H*``:
    ``D - floor(C * LT * WAD / (H* * BPS))``; 0 when HF >= H* already."""
    if debt_base <= 0:
        return 0
    if target_hf_wad <= 0:
        raise ValueError(f"target health factor {target_hf_wad} wad is not positive")
    return max(0, debt_base - collateral_base * lt_bps * WAD // (target_hf_wad * BPS))


def required_deleverage_base(
    collateral_base: int, debt_base: int, lt_bps: int, target_hf_wad: int, cost_bps: int
) -> int | None:
    """Collateral value to sell (base units, rounded up) when the proceeds less ``cost_bps`` repay
    debt, so that ``(C - x) * LT / (D - x (1 - cost)) = H*``:
    ``x = (H* D BPS - C LT WAD) / (H* (BPS - cost) - LT WAD)``. None when no sale reaches the
    target (a cost so high that selling lowers HF); 0 when HF >= H* already."""
    if debt_base <= 0:
        return 0
    num = target_hf_wad * debt_base * BPS - collateral_base * lt_bps * WAD
    if num <= 0:
        return 0
    den = target_hf_wad * (BPS - cost_bps) - lt_bps * WAD
    if den <= 0:
        return None
    return _ceil_div(num, den)


def _cents_down(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_FLOOR)


def _cents_up(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_CEILING)


def _severity(r: SignalResult) -> float:
    s = r.metric("severity")
    return 1.0 if s is None else float(s)


def _by_id(signals: Sequence[SignalResult]) -> dict[str, list[SignalResult]]:
    out: dict[str, list[SignalResult]] = {sid: [] for sid in SIGNAL_IDS}
    for r in signals:
        out.setdefault(r.id, []).append(r)
    return out


@dataclass(frozen=True)
class LayerTrigger:
    """Step 1: which trigger paths fire and the trigger severity (the larger path's)."""

    paths: tuple[str, ...]
    severity: float | None

    @property
    def fired(self) -> bool:
        return bool(self.paths)


def firing_ids(signals: Sequence[SignalResult]) -> tuple[dict[str, list[SignalResult]], set[str]]:
    """Results grouped by signal id, and the ids that fire (a signal id fires when any of its
    subjects fires)."""
    groups = _by_id(signals)
    status = {sid: aggregate_status(rs) for sid, rs in groups.items()}
    return groups, {sid for sid, st in status.items() if st == "firing"}


def layer_trigger(signals: Sequence[SignalResult]) -> LayerTrigger:
    """S1 and S2 (``S1+S2``), or S3 and S4 (``S3+S4``); severity of the firing S1 or S3 subjects."""
    groups, firing = firing_ids(signals)
    paths: list[str] = []
    severity: float | None = None
    if "S1" in firing and "S2" in firing:
        paths.append("S1+S2")
        severity = max(_severity(r) for r in groups["S1"] if r.firing)
    if "S3" in firing and "S4" in firing:
        paths.append("S3+S4")
        sev_b = max(_severity(r) for r in groups["S3"] if r.firing)
        severity = sev_b if severity is None else max(severity, sev_b)
    return LayerTrigger(tuple(paths), severity)


@dataclass(frozen=True)
class Gate:
    """Step 2: the consensus gate's verdict and its reasons."""

    passed: bool
    families: tuple[str, ...]  # families with a firing member
    confirming: tuple[str, ...]  # firing signals outside the trigger's own
    why: str


def consensus_gate(firing: set[str], paths: Sequence[str], cfg: PolicyConfig) -> Gate:
    fams = tuple(f for f, members in FAMILIES.items() if any(m in firing for m in members))
    own = {m for p in paths for m in p.split("+")}
    confirming = tuple(
        sorted(m for members in FAMILIES.values() for m in members if m in firing and m not in own)
    )
    if cfg.gate_mode == "design":
        passed = len(fams) >= cfg.gate_min_families
        why = f"{len(fams)} of 3 families firing ({', '.join(fams) or 'none'}), need {cfg.gate_min_families}"
    else:
        conf_fams = tuple(
            f for f, members in FAMILIES.items() if any(m in confirming for m in members)
        )
        passed = len(conf_fams) >= cfg.gate_min_independent_families
        why = (
            f"{len(conf_fams)} families with a firing signal outside the trigger "
            f"({', '.join(confirming) or 'none'}), need {cfg.gate_min_independent_families}"
        )
    return Gate(passed, fams, confirming, why)


def gate_note(gate: Gate, cfg: PolicyConfig) -> str:
    return f"consensus gate ({cfg.gate_mode}): {gate.why}: " + (
        "passed"
        if gate.passed
        else "not passed"
        + ("; gate disabled, acting anyway" if not cfg.consensus_gate else "; no action")
    )


def beta_priority(
    groups: dict[str, list[SignalResult]], s8_status: str | None, cfg: PolicyConfig
) -> tuple[Priority, Decimal, str]:
    """Step 3: S8 rising for BTC or ETH -> DeFi first at full size, else the S&P 500 side first
    at ``non_defi_first_fraction``; with the note that says why."""
    rising = [r.subject for r in groups.get("S8", []) if r.firing]
    if rising:
        return (
            "defi_first",
            Decimal(1),
            f"S8 beta rising for {', '.join(rising)}: DeFi protection first, full size",
        )
    size = cfg.non_defi_first_fraction
    why = (
        "S8 insufficient data, treated as not rising"
        if s8_status == "insufficient_data"
        else "S8 beta not rising"
    )
    return "sp500_first", size, f"{why}: {SP500_FIRST_NOTE}; sized at {size * 100:g}%"


@dataclass(frozen=True)
class LayerSize:
    """Step 4: the layer in USD and its split between puts and protection."""

    cap_usd: Decimal
    remaining_usd: Decimal  # session cap left
    room_usd: Decimal  # B less the open layers
    layer_usd: Decimal
    option_budget_usd: Decimal
    topup_budget_usd: Decimal
    budget: BudgetState
    notes: tuple[str, ...]


def layer_size(
    cfg: PolicyConfig,
    session: SessionState,
    size: Decimal,
    acted: bool,
    open_layers: Sequence[OpenLayer],
    at_unix: int,
    options_enabled: bool,
) -> LayerSize:
    """min(session cap left, cap x size, B's room), cents down; puts get
    ``option_spend_fraction`` of it (none with options disabled), protection the rest."""
    cap = cfg.session_cap_usd
    remaining = max(Decimal(0), cap - session.spent_usd)
    budget = budget_state(open_layers, cfg.budget_usd, at_unix)
    room = budget.room_usd
    wanted = min(remaining, cap * size)
    layer = _cents_down(min(wanted, room)) if acted else Decimal(0)
    notes: list[str] = []
    if acted and remaining <= 0:
        notes.append(f"session cap ${cap} reached (spent ${session.spent_usd}); nothing proposed")
    elif acted and room <= 0:
        notes.append(f"{budget.describe()}: B used up; nothing proposed; {budget.frees_next()}")
    elif acted and room < wanted:
        notes.append(
            f"{budget.describe()}: layer limited to the room ${_cents_down(room):,}; "
            f"{budget.frees_next()}"
        )
    if options_enabled:
        option_budget = _cents_down(layer * cfg.option_spend_fraction)
    else:
        option_budget = Decimal(0)
        if acted and layer > 0:
            notes.append(f"options disabled: the whole layer ${layer:,} goes to protection")
    return LayerSize(
        cap, remaining, room, layer, option_budget, layer - option_budget, budget, tuple(notes)
    )


def hysteresis_block(
    memory: PolicyMemory,
    action_key: str,
    session: SessionState,
    at_unix: int,
    severity: float,
    cfg: PolicyConfig,
) -> str | None:
    """Step 5: None if the action may be proposed now, else the reason it may not."""
    e = memory.get(action_key)
    if e is None:
        return None
    if e.session_id == session.session_id:
        return f"already proposed in session {e.session_id} (key {e.idempotency_key})"
    elapsed_h = (at_unix - e.at) / 3600
    if elapsed_h >= cfg.cooldown_hours:
        return None
    if severity >= e.severity + cfg.hysteresis_step:
        return None
    return (
        f"hysteresis: severity {severity:.3f} < last {e.severity:.3f} + step {cfg.hysteresis_step:g}, "
        f"cooldown {cfg.cooldown_hours:g}h not passed ({elapsed_h:.1f}h since last)"
    )


@dataclass(frozen=True)
class Allocated:
    """What an allocation step proposes, suppresses and says."""

    actions: tuple[Action, ...] = ()
    suppressed: tuple[Suppressed, ...] = ()
    allocations: tuple[Allocation, ...] = ()
    notes: tuple[str, ...] = ()
    memory: tuple[tuple[str, MemoryEntry], ...] = ()


def allocate_topups(
    positions: Sequence[PositionSnapshot],
    topup_budget: Decimal,
    cfg: PolicyConfig,
    session: SessionState,
    at_unix: int,
    severity: float,
    memory: PolicyMemory,
) -> Allocated:
    """Protection position by position: the lowest health factor (closest to liquidation) first,
    each up to what its target needs (:func:`required_topup_base`), from what the ones before it
    left."""
    actions: list[Action] = []
    suppressed: list[Suppressed] = []
    allocations: list[Allocation] = []
    notes: list[str] = []
    entries: list[tuple[str, MemoryEntry]] = []
    left = topup_budget
    for position in sorted(positions, key=lambda p: (p.health_factor_wad, -p.debt_base)):
        target_wad = position.target_health_factor_wad or int(cfg.target_health_factor * WAD)
        req_base = required_topup_base(position, target_wad)
        scope = f"{position.key_scope}:" if position.key_scope else ""
        akey = f"topup:{scope}{position.account.lower()}"
        req_usd = _cents_up(Decimal(req_base) / Decimal(position.base_unit))
        given = Decimal(0)
        if req_base == 0:
            why = (
                f"{position.label}: health factor {position.health_factor_wad / WAD:.4f} >= "
                f"target {target_wad / WAD:g}; no top-up"
            )
            notes.append(why)
        elif (
            blocked := hysteresis_block(memory, akey, session, at_unix, severity, cfg)
        ) is not None:
            suppressed.append(Suppressed(akey, blocked))
            why = f"not proposed: {blocked}"
        else:
            spend = min(req_usd, left)
            if spend < cfg.min_action_usd or spend <= 0:
                why = f"top-up budget ${spend} below minimum ${cfg.min_action_usd}"
                if left < topup_budget:
                    why += " (the rest went to positions closer to liquidation)"
                suppressed.append(Suppressed(akey, why))
            else:
                ikey = idempotency_key(
                    "collateral_top_up", f"{scope}{position.account}", session.session_id
                )
                actions.append(
                    TopUpAction(
                        position.account,
                        target_wad,
                        spend,
                        req_base,
                        req_usd,
                        ikey,
                        akey,
                        chain=position.chain,
                        position=position.name,
                    )
                )
                entries.append((akey, MemoryEntry(severity, at_unix, session.session_id, ikey)))
                given = spend
                left -= spend
                why = "needs all of it" if spend == req_usd else "limited by the budget left"
        allocations.append(
            Allocation(
                position.label,
                position.chain,
                position.account,
                position.health_factor_wad,
                req_usd,
                given,
                why,
            )
        )
    return Allocated(
        tuple(actions), tuple(suppressed), tuple(allocations), tuple(notes), tuple(entries)
    )


def allocate_options(
    option_budget: Decimal,
    cfg: PolicyConfig,
    session: SessionState,
    at_unix: int,
    severity: float,
    memory: PolicyMemory,
) -> Allocated:
    """The put ladder: each horizon its weight of the premium budget, at most once a session."""
    actions: list[Action] = []
    suppressed: list[Suppressed] = []
    entries: list[tuple[str, MemoryEntry]] = []
    for h in cfg.horizons:
        akey = f"option:{cfg.option_underlying.lower()}:{h.name}"
        if h.name in session.horizons_bought:
            suppressed.append(
                Suppressed(akey, f"horizon {h.name} already bought in session {session.session_id}")
            )
            continue
        if (blocked := hysteresis_block(memory, akey, session, at_unix, severity, cfg)) is not None:
            suppressed.append(Suppressed(akey, blocked))
            continue
        spend = _cents_down(option_budget * h.weight)
        if spend < cfg.min_action_usd or spend <= 0:
            suppressed.append(
                Suppressed(akey, f"premium budget ${spend} below minimum ${cfg.min_action_usd}")
            )
            continue
        ikey = idempotency_key("option_put", cfg.option_underlying, session.session_id, h.name)
        actions.append(
            OptionAction(
                h.name,
                cfg.option_underlying,
                h.dte_min,
                h.dte_max,
                h.otm_fraction,
                spend,
                ikey,
                akey,
            )
        )
        entries.append((akey, MemoryEntry(severity, at_unix, session.session_id, ikey)))
    return Allocated(tuple(actions), tuple(suppressed), memory=tuple(entries))


def decide(
    signals: Sequence[SignalResult],
    position: PositionSnapshot | Sequence[PositionSnapshot] | None,
    session: SessionState,
    cfg: PolicyConfig,
    at: pd.Timestamp,
    memory: PolicyMemory | None = None,
    open_layers: Sequence[OpenLayer] = (),
    options_enabled: bool = True,
) -> Decision:
    """Steps 1-6 in order (the module doc), each one of the pure functions above."""
    at = to_utc(at)
    at_unix = unix(at)
    memory = memory or PolicyMemory()
    positions: tuple[PositionSnapshot, ...] = (
        ()
        if position is None
        else (position,)
        if isinstance(position, PositionSnapshot)
        else tuple(position)
    )
    notes: list[str] = []
    if session.session_id != session_id_for(at_unix):
        notes.append(
            f"session id {session.session_id} is not the UTC day of the evaluation ({session_id_for(at_unix)})"
        )
    groups, firing = firing_ids(signals)
    status = {sid: aggregate_status(rs) for sid, rs in groups.items()}
    trig = layer_trigger(signals)
    gate = consensus_gate(firing, trig.paths, cfg)
    acted = trig.fired and (gate.passed or not cfg.consensus_gate)
    if trig.fired:
        notes.append(gate_note(gate, cfg))
    priority, size, why_priority = beta_priority(groups, status.get("S8"), cfg)
    if acted:
        notes.append(why_priority)
    else:
        priority, size = "none", Decimal(0)
    sized = layer_size(cfg, session, size, acted, open_layers, at_unix, options_enabled)
    notes += sized.notes
    sev = trig.severity if trig.severity is not None else 0.0
    steps: list[Allocated] = []
    if acted and sized.layer_usd > 0:
        steps.append(
            allocate_topups(positions, sized.topup_budget_usd, cfg, session, at_unix, sev, memory)
        )
        if options_enabled:  # no put is planned or journaled when options are disabled
            steps.append(
                allocate_options(sized.option_budget_usd, cfg, session, at_unix, sev, memory)
            )
    actions = tuple(a for st in steps for a in st.actions)
    notes += [n for st in steps for n in st.notes]
    allocations = tuple(a for st in steps for a in st.allocations)
    proposed = sum((a.spend_usd for a in actions), Decimal(0))
    return Decision(
        at=at_unix,
        session_id=session.session_id,
        trigger=trig.fired,
        trigger_paths=trig.paths,
        gate_enabled=cfg.consensus_gate,
        gate_passed=gate.passed,
        families_firing=gate.families,
        confirming_signals=gate.confirming,
        acted=acted,
        priority=priority,
        size_fraction=size,
        severity=trig.severity,
        session_cap_usd=sized.cap_usd,
        session_spent_before_usd=session.spent_usd,
        session_spent_after_usd=session.spent_usd + proposed,
        layer_usd=sized.layer_usd,
        actions=actions,
        suppressed=tuple(x for st in steps for x in st.suppressed),
        notes=tuple(notes),
        signals=tuple(signals),
        signal_status=status,
        memory=memory.updated(dict(e for st in steps for e in st.memory)),
        budget_usd=cfg.budget_usd,
        open_layers_usd=sized.budget.open_usd,
        budget_room_usd=sized.room_usd,
        budget_frees_next=sized.budget.frees_next(),
        options_enabled=options_enabled,
        allocations=allocations if len(positions) > 1 else (),
    )
