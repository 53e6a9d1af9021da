"""The liquidation guard: each position's own health factor, every tick (issue 22 items 1, 2, 7).

Pure (no I/O, no clock: time is the ``at`` argument). The daemon calls it on the snapshot the
tick already read; the outcome backtest calls the same functions hour by hour.

- :func:`effective_trigger`: the guard's trigger HF. It rises from ``trigger_hf_wad`` to
  ``stress_trigger_hf_wad`` while at least ``stress_min_firing`` of the market-stress signals
  (the layer rule's S1-S7 by default) fire, and relaxes when they go quiet, so the guard acts
  before the crash hour rather than during it.
- :func:`guard_verdict`: none / protect / hold / critical, with the reason and the next state.
  When HF <= trigger and the guard is armed it protects at once, to ``target_hf_wad``,
  whatever the layer rule and its gate say. After a proposal it is *pending* (disarmed): no
  second proposal unless HF fell a further ``step_wad`` below the HF of the last proposal, or
  the pending one is ``repropose_after_s`` old (never signed). It re-arms when HF rises above
  trigger + ``rearm_margin_wad``. At or below ``critical_hf_wad`` the verdict is ``critical``
  (the highest-priority notification), proposing on the same hysteresis.
- :func:`guard_topup`: the protection action, sized to reach the target (never cut by the layer
  rule's protection share); the guard's own budget (``budget_usd`` per session, a UTC day)
  bounds what a top-up or repay may spend. A deleverage sells the position's own collateral
  and spends none of it (the planner decides which of the three is proposed).
- :func:`price_at_hf` / :func:`guard_prices`: the collateral price at which HF = 1 (liquidation
  price) and HF = trigger (guard price), exact from the account data.

Health factors are wad ints (1e18) at the interface; money is ``Decimal`` USD.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

from agent.core.units import BPS, WAD
from agent.policy.decide import required_topup_base
from agent.policy.models import PositionSnapshot, TopUpAction, idempotency_key

STRESS_SIGNALS: tuple[str, ...] = ("S1", "S2", "S3", "S4", "S5", "S6", "S7")
NO_DEBT_HF = 2**255  # Aave reports uint256.max without debt; anything this large means "no debt"
CENT = Decimal("0.01")

GuardKind = Literal["none", "protect", "hold", "critical"]


def _wad(x: str) -> int:
    return int(Decimal(x) * WAD)


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """The guard of one position (``[guard]`` merged with the ``[[positions]]`` entry's
    overrides). HFs in wad; ``budget_usd`` is the guard's money per session (UTC day) for
    top-ups and repays, apart from the layer rule's session cap and B."""

    trigger_hf_wad: int = _wad("1.30")
    target_hf_wad: int = _wad("1.60")
    critical_hf_wad: int = _wad("1.10")
    budget_usd: Decimal = Decimal(100_000)
    step_wad: int = _wad("0.05")  # while pending: propose again only this far below the last
    rearm_margin_wad: int = _wad("0.05")  # re-armed above trigger + margin
    repropose_after_s: int | None = 86_400  # a pending proposal this old counts as lapsed
    stress_trigger_hf_wad: int | None = _wad("1.45")  # None: the trigger never rises
    stress_signals: tuple[str, ...] = STRESS_SIGNALS
    stress_min_firing: int = 1  # distinct stress signal ids firing that make the market stressed
    enabled: bool = True

    def __post_init__(self) -> None:
        if not WAD < self.critical_hf_wad < self.trigger_hf_wad < self.target_hf_wad:
            raise ValueError(
                "guard: need 1 < critical_hf < trigger_hf < target_hf, got "
                f"{self.critical_hf_wad / WAD:g}, {self.trigger_hf_wad / WAD:g}, "
                f"{self.target_hf_wad / WAD:g}"
            )
        st = self.stress_trigger_hf_wad
        if st is not None and not self.trigger_hf_wad <= st < self.target_hf_wad:
            raise ValueError(
                f"guard: need trigger_hf <= stress_trigger_hf < target_hf, got {st / WAD:g}"
            )
        if self.step_wad <= 0 or self.rearm_margin_wad < 0:
            raise ValueError("guard: step_hf must be > 0 and rearm_margin_hf >= 0")
        if self.budget_usd < 0 or not self.budget_usd.is_finite():
            raise ValueError(f"guard: budget_usd must be >= 0, got {self.budget_usd}")
        if self.stress_min_firing < 1:
            raise ValueError("guard: stress_min_firing must be >= 1")
        if self.repropose_after_s is not None and self.repropose_after_s <= 0:
            raise ValueError("guard: repropose_after_s must be > 0 (or None: never)")


@dataclass(frozen=True, slots=True)
class GuardState:
    """One position's guard between ticks: ``armed`` (the next HF <= trigger proposes) or
    pending (a proposal was made at ``last_hf_wad``, time ``last_at``; no second one unless
    HF falls a step further, the pending one lapses, or HF recovers above the re-arm level)."""

    armed: bool = True
    last_hf_wad: int | None = None
    last_at: int | None = None

    @property
    def pending(self) -> bool:
        return not self.armed


@dataclass(frozen=True, slots=True)
class GuardTrigger:
    """The trigger in force and why (stressed: which stress signals fire)."""

    trigger_hf_wad: int
    stressed: bool
    firing: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    kind: GuardKind
    propose: bool  # a protection proposal is made now (kinds protect, and critical when allowed)
    critical: bool  # HF <= critical_hf: the highest-priority notification
    reason: str  # starts with "guard:"
    state: GuardState  # the state after this evaluation
    trigger: GuardTrigger
    health_factor_wad: int


def _hf(v: int | None) -> str:
    return "none (no debt)" if v is None or v >= NO_DEBT_HF else f"{v / WAD:.4f}"


def effective_trigger(cfg: GuardConfig, firing: Collection[str]) -> GuardTrigger:
    """The trigger HF given the ids of the signals firing now (``SignalResult.id`` of every
    firing result; duplicates and signals outside ``stress_signals`` are ignored)."""
    stress = tuple(sorted({s for s in firing if s in cfg.stress_signals}))
    base = f"{cfg.trigger_hf_wad / WAD:g}"
    if cfg.stress_trigger_hf_wad is None:
        return GuardTrigger(cfg.trigger_hf_wad, False, stress, f"trigger HF {base}")
    if len(stress) >= cfg.stress_min_firing:
        t = cfg.stress_trigger_hf_wad
        raised = f"raised from {base}" if t > cfg.trigger_hf_wad else "its stressed level too"
        return GuardTrigger(
            t,
            True,
            stress,
            f"trigger HF {t / WAD:g} ({raised}: market stress, {', '.join(stress)} firing)",
        )
    return GuardTrigger(
        cfg.trigger_hf_wad,
        False,
        stress,
        f"trigger HF {base} (quiet market: {len(stress)} of the stress signals firing, "
        f"{cfg.stress_min_firing} raise it to {cfg.stress_trigger_hf_wad / WAD:g})",
    )


def guard_verdict(
    cfg: GuardConfig,
    state: GuardState,
    health_factor_wad: int,
    trigger: GuardTrigger,
    at: int,
) -> GuardVerdict:
    """What the guard does at ``at`` for a position at ``health_factor_wad``."""
    hf, t = health_factor_wad, trigger.trigger_hf_wad
    rearm = t + cfg.rearm_margin_wad
    where = f"HF {_hf(hf)}, {trigger.reason}"

    def verdict(kind: GuardKind, propose: bool, reason: str, new: GuardState) -> GuardVerdict:
        critical = hf <= cfg.critical_hf_wad
        if critical:
            kind = "critical"
            reason = f"CRITICAL: HF {_hf(hf)} <= critical {cfg.critical_hf_wad / WAD:g}; " + reason
        return GuardVerdict(kind, propose, critical, f"guard: {reason}", new, trigger, hf)

    if not cfg.enabled:
        return verdict("none", False, f"disabled ({where})", state)
    if hf >= NO_DEBT_HF:
        return verdict("none", False, "no debt", GuardState())
    protect = GuardState(False, hf, at)
    to = f"protect to target HF {cfg.target_hf_wad / WAD:g}"
    if state.armed:
        if hf <= t:
            return verdict("protect", True, f"{where}: HF <= trigger; {to}", protect)
        return verdict("none", False, f"{where}: above trigger, armed", state)
    if hf > rearm:
        return verdict(
            "none",
            False,
            f"{where}: re-armed (HF > trigger + margin {rearm / WAD:g})",
            GuardState(),
        )
    last_hf = state.last_hf_wad if state.last_hf_wad is not None else hf
    since = f"a proposal is pending since HF {_hf(last_hf)}" + (
        "" if state.last_at is None else f" ({(at - state.last_at) / 3600:.1f}h ago)"
    )
    if hf > t:
        return verdict(
            "none", False, f"{where}: above trigger; {since}; re-arms above {rearm / WAD:g}", state
        )
    further = last_hf - cfg.step_wad
    if hf <= further:
        return verdict(
            "protect",
            True,
            f"{where}: {since}, HF fell a step ({cfg.step_wad / WAD:g}) further; {to}",
            protect,
        )
    if (
        cfg.repropose_after_s is not None
        and state.last_at is not None
        and at - state.last_at >= cfg.repropose_after_s
    ):
        return verdict(
            "protect",
            True,
            f"{where}: the pending proposal lapsed (older than "
            f"{cfg.repropose_after_s / 3600:g}h); {to}",
            protect,
        )
    return verdict(
        "hold",
        False,
        f"{where}: HF <= trigger but {since}; proposes again at HF <= {further / WAD:.4f} "
        f"or above {rearm / WAD:g} re-armed",
        state,
    )


def guard_room_usd(cfg: GuardConfig, spent_usd: Decimal) -> Decimal:
    """What the guard may still spend on top-ups and repays this session."""
    return max(Decimal(0), cfg.budget_usd - spent_usd)


def guard_topup(
    position: PositionSnapshot,
    cfg: GuardConfig,
    verdict: GuardVerdict,
    room_usd: Decimal,
    session_id: str,
) -> TopUpAction | None:
    """The guard's protection for a proposing verdict: a top-up action to ``target_hf_wad``
    (``required_collateral_base`` = ``D * H* / LT - C`` rounded up, the whole of it), with
    ``max_spend_usd`` = min(required, the guard's room). The planner compares it with a repay
    and a deleverage to the same target, as for the layer rule. None when no proposal is due
    or the position is already at the target. Keys: action key ``guard:<scope><account>``;
    idempotency key over (guard, position, session, the evaluation time), so a replayed tick
    never proposes twice and a later proposal gets its own key."""
    if not verdict.propose:
        return None
    req_base = required_topup_base(position, cfg.target_hf_wad)
    if req_base == 0:
        return None
    scope = f"{position.key_scope}:" if position.key_scope else ""
    req_usd = (Decimal(req_base) / Decimal(position.base_unit)).quantize(
        CENT, rounding=ROUND_CEILING
    )
    spend = min(req_usd, room_usd.quantize(CENT, rounding=ROUND_FLOOR))
    at = verdict.state.last_at
    return TopUpAction(
        position.account,
        cfg.target_hf_wad,
        spend,
        req_base,
        req_usd,
        idempotency_key("guard_protection", f"{scope}{position.account}", session_id, f"at{at}"),
        f"guard:{scope}{position.account.lower()}",
        chain=position.chain,
        position=position.name,
    )


def price_at_hf(
    collateral_base: int, debt_base: int, lt_bps: int, price: int, hf_wad: int
) -> int | None:
    """The collateral price (same unit as ``price``) at which the health factor is ``hf_wad``,
    the debt's value held: ``price * H * D / (C * LT)`` (with LT in bps), rounded up, so the
    reported level is never below the true one (the guard errs early). Exact when the position
    holds one collateral asset; with several it assumes they all move together (the level of
    any single one is then at or below this). None without debt or collateral."""
    if debt_base <= 0 or collateral_base <= 0 or lt_bps <= 0:
        return None
    num = price * hf_wad * debt_base * BPS
    den = collateral_base * lt_bps * WAD
    return -(-num // den)


@dataclass(frozen=True, slots=True)
class GuardPrices:
    """Where the position stands against its collateral price (``price`` units as given)."""

    price: int
    liquidation_price: int  # HF = 1
    guard_price: int  # HF = the trigger in force
    liquidation_distance_bps: int  # (price - liquidation) / price, floored
    guard_distance_bps: int  # (price - guard) / price, floored; <= 0: at or past the trigger


def guard_prices(position: PositionSnapshot, price: int, trigger_hf_wad: int) -> GuardPrices | None:
    """Liquidation and guard price of the position's collateral at ``price``."""
    c, d, lt = position.collateral_base, position.debt_base, position.liquidation_threshold_bps
    liq = price_at_hf(c, d, lt, price, WAD)
    grd = price_at_hf(c, d, lt, price, trigger_hf_wad)
    if liq is None or grd is None or price <= 0:
        return None
    return GuardPrices(
        price,
        liq,
        grd,
        (price - liq) * BPS // price,
        (price - grd) * BPS // price,
    )


def with_last(state: GuardState, hf_wad: int, at: int) -> GuardState:
    """A pending state as a proposal journaled at ``at`` with ``hf_wad`` leaves it (how a
    restart rebuilds the state from the journal)."""
    return replace(state, armed=False, last_hf_wad=hf_wad, last_at=at)


def state_since(
    cfg: GuardConfig,
    last_hf_wad: int,
    last_at: int,
    highest_hf_since_wad: int | None,
    trigger_hf_wad: int,
) -> GuardState:
    """The state the last proposal (at ``last_hf_wad``, time ``last_at``) left, given the
    highest HF seen after it (None: none seen): re-armed if HF rose above the trigger in force
    plus the margin meanwhile, else still pending. How the daemon rebuilds the state each tick
    from durable records (the journal and the stored health factors), restart or not."""
    if highest_hf_since_wad is not None and (
        highest_hf_since_wad > trigger_hf_wad + cfg.rearm_margin_wad
    ):
        return GuardState()
    return GuardState(False, last_hf_wad, last_at)
