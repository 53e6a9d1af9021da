"""What each guardian account still covers (issue 23 item 1), for ``hedge-agent check``,
``status`` and the ``hedge_agent_guardian_*`` gauges (labelled by guardian, chain and position:
each position has its own guardian, a daemon several): its balances of its ``assets`` at the
oracle price, its gas, and how many guard actions they pay for at the position's current debt
(one action lifts HF from the guard's trigger to its target: a repay when the asset is the
position's debt asset, a top-up otherwise; ``agent.planner.guardian.guard_action_base``). Reads
only; never the key."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import structlog

from agent.collectors.onchain import discover, read_snapshot
from agent.config import Settings
from agent.core.errors import AgentError
from agent.core.rpc import RpcClient
from agent.core.units import AAVE_BASE_UNIT_USD, WAD
from agent.ops.telemetry import Telemetry
from agent.pipeline.parts import Position
from agent.planner.guardian import actions_covered, guard_action_base

log = structlog.get_logger("agent.ops")


@dataclass(frozen=True)
class Holding:
    symbol: str
    amount: int  # token units
    decimals: int
    value_base: int  # oracle base units (1e8 = 1 USD)
    action: str  # "repay" | "top_up"
    action_base: int  # what one guard action takes, base units
    covers: int | None  # whole guard actions this holding pays for (None: no debt)

    def render(self) -> str:
        amt = Decimal(self.amount) / Decimal(10**self.decimals)
        value = self.value_base / AAVE_BASE_UNIT_USD
        each = self.action_base / AAVE_BASE_UNIT_USD
        covers = "no debt to protect" if self.covers is None else f"covers {self.covers}"
        return (
            f"{amt:,.6f} {self.symbol} (${value:,.2f}): {covers} {self.action}(s) of ${each:,.2f}"
        )


@dataclass(frozen=True)
class GuardianReport:
    account: str
    safe: str
    gas_wei: int
    holdings: tuple[Holding, ...]
    chain: str = ""
    name: str | None = None  # its [[guardians]] name

    @property
    def covers(self) -> int | None:
        counted = [h.covers for h in self.holdings if h.covers is not None]
        return sum(counted) if counted else None

    def lines(self) -> list[str]:
        total = "n/a (no debt)" if self.covers is None else str(self.covers)
        who = f"guardian {self.name} ({self.account})" if self.name else f"guardian {self.account}"
        on = f" on {self.chain}" if self.chain and self.name else ""
        out = [
            f"{who} for {self.safe}{on}: {total} guard action(s) covered, "
            f"gas {Decimal(self.gas_wei) / Decimal(WAD):.4f} ETH"
        ]
        out += [f"  {h.render()}" for h in self.holdings]
        return out


def guarded_positions(positions: Sequence[Position]) -> list[Position]:
    """The positions a guardian protects (each its own: ``positions[i].guardian``, or
    ``[guardian]`` where that is the position's), in configuration order."""
    return [p for p in positions if p.guardian_config is not None and p.account is not None]


class GuardianWatch:
    """The daemon's guardian gauges, one set per guarded position (the guardian, its chain and
    the position as labels), each re-read between ticks at most once per its guardian's
    ``refresh_s``; a failed read is logged and leaves the last figures (it never fails a tick)."""

    def __init__(self, telemetry: Telemetry, clock: Callable[[], float] = time.monotonic) -> None:
        self.telemetry = telemetry
        self.clock = clock
        self._next: dict[str, float] = {}
        self.last: dict[str, GuardianReport] = {}

    async def refresh(
        self, rpc: RpcClient, s: Settings, position: Position
    ) -> GuardianReport | None:
        g = position.guardian_config
        assert g is not None and g.account is not None
        now = self.clock()
        key = f"{position.chain.name}/{position.name}/{g.account}"
        if now < self._next.get(key, 0.0):
            return None
        self._next[key] = now + g.refresh_s
        try:
            report = await read_guardian(rpc, s, position)
        except AgentError as exc:
            log.warning(
                "guardian.unreadable", guardian=g.account, chain=position.chain.name, error=str(exc)
            )
            return None
        t, who, chain = self.telemetry, str(g.name or g.account), position.chain.name
        for h in report.holdings:
            t.guardian_balance.labels(who, chain, h.symbol).set(h.value_base / AAVE_BASE_UNIT_USD)
        t.guardian_gas.labels(who, chain).set(report.gas_wei / WAD)
        t.guardian_covers.labels(who, chain, position.name).set(
            -1 if report.covers is None else report.covers
        )
        self.last[key] = report
        return report


async def read_guardian(rpc: RpcClient, s: Settings, pos: Position) -> GuardianReport:
    """The position's guardian and the position it protects, on its chain's ``rpc``."""
    g = pos.guardian_config
    assert g is not None and g.account is not None and pos.account is not None
    chain = pos.chain.config.model_copy(update={"accounts": (pos.account, g.account)})
    layout = await discover(rpc, chain)
    snap = await read_snapshot(rpc, layout)
    safe, mine = snap.accounts[pos.account], snap.accounts[g.account]
    guard = pos.guard or s.guard.record(None)
    gas = int(await rpc.request("eth_getBalance", [g.account, "latest"]), 16)
    holdings = []
    for sym in g.assets:
        meta, state = layout.reserve(sym), snap.reserves[sym]
        amount = mine.wallet_balances.get(sym, 0)
        action = "repay" if sym == pos.repay_asset else "top_up"
        each = guard_action_base(
            safe.total_debt_base,
            guard.trigger_hf_wad,
            guard.target_hf_wad,
            "repay" if action == "repay" else "top_up",
            meta.liquidation_threshold_bps,
        )
        value = amount * state.price_base // 10**meta.decimals
        holdings.append(
            Holding(sym, amount, meta.decimals, value, action, each, actions_covered(value, each))
        )
    return GuardianReport(g.account, pos.account, gas, tuple(holdings), pos.chain.name, g.name)
