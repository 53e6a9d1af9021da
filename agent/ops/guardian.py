"""What the guardian account still covers (issue 23 item 1), for ``hedge-agent check`` and the
``hedge_agent_guardian_*`` gauges: its balances of ``[guardian] assets`` at the oracle price, its
gas, and how many guard actions they pay for at the position's current debt (one action lifts HF
from the guard's trigger to its target: a repay when the asset is the position's debt asset, a
top-up otherwise; ``agent.planner.guardian.guard_action_base``). Reads only; never the key."""

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

    @property
    def covers(self) -> int | None:
        counted = [h.covers for h in self.holdings if h.covers is not None]
        return sum(counted) if counted else None

    def lines(self) -> list[str]:
        total = "n/a (no debt)" if self.covers is None else str(self.covers)
        out = [
            f"guardian {self.account} for {self.safe}: {total} guard action(s) covered, "
            f"gas {Decimal(self.gas_wei) / Decimal(WAD):.4f} ETH"
        ]
        out += [f"  {h.render()}" for h in self.holdings]
        return out


def guardian_position(s: Settings, positions: Sequence[Position]) -> Position | None:
    """The position the guardian protects: the one position, or with ``[[positions]]`` the
    one ``guardian.position`` names (None when it names none)."""
    if not s.multi_chain:
        return positions[0]
    mine = [p for p in positions if p.name == s.guardian.position]
    return mine[0] if len(mine) == 1 else None


class GuardianWatch:
    """The daemon's guardian gauges, re-read between ticks at most every ``refresh_s``; a
    failed read is logged and leaves the last figures (it never fails a tick)."""

    def __init__(self, telemetry: Telemetry, clock: Callable[[], float] = time.monotonic) -> None:
        self.telemetry = telemetry
        self.clock = clock
        self._next = 0.0
        self.last: GuardianReport | None = None

    async def refresh(
        self, rpc: RpcClient, s: Settings, position: Position
    ) -> GuardianReport | None:
        now = self.clock()
        if now < self._next:
            return None
        self._next = now + s.guardian.refresh_s
        try:
            report = await read_guardian(rpc, s, position)
        except AgentError as exc:
            log.warning("guardian.unreadable", error=str(exc))
            return None
        t = self.telemetry
        for h in report.holdings:
            t.guardian_balance.labels(h.symbol).set(h.value_base / AAVE_BASE_UNIT_USD)
        t.guardian_gas.set(report.gas_wei / WAD)
        t.guardian_covers.set(-1 if report.covers is None else report.covers)
        self.last = report
        return report


async def read_guardian(rpc: RpcClient, s: Settings, pos: Position) -> GuardianReport:
    """The guardian (``s.guardian``) and the position it protects, on its chain's ``rpc``."""
    g = s.guardian
    assert g.account is not None and pos.account is not None
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
    return GuardianReport(g.account, pos.account, gas, tuple(holdings))
