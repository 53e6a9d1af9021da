"""The simulate stage of a proposal: a ``Draft`` executed on the fork exactly as it will be
signed (one Safe ``execTransaction``, or the EOA's transactions in order) becomes an
``Outcome``: the draft with the simulation result, the status the proposal will carry, and the
JSON the record shows."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from agent.core.units import AAVE_BASE_UNIT_USD, WAD
from agent.planner.draft import Draft, PutCheck, SwapCheck, hf_float
from agent.simulator.fork import ForkSimulator, SimulationResult

Status = Literal["simulated", "simulation_failed", "planned", "planning_failed"]


@dataclass(frozen=True)
class Outcome:
    draft: Draft
    result: SimulationResult | None = None  # None: not simulated (no simulator, or not planned)

    @property
    def status(self) -> Status:
        if not self.draft.planned:
            return "planning_failed"
        if self.result is None:
            return "planned"
        return "simulated" if self.result.success else "simulation_failed"

    @property
    def spends(self) -> bool:
        """Whether the ledger counts it: only proposals that could be executed."""
        return self.status in ("simulated", "planned")

    def simulation_record(self) -> dict[str, Any] | None:
        sim = self.result
        if sim is None:
            return None
        out = simulation_record(sim, self.draft.target_hf_wad)
        if sim.success and self.draft.put is not None:
            out |= put_outcome(sim, self.draft.put)
        if sim.success and self.draft.swap is not None:
            out |= swap_outcome(sim, self.draft.swap)
        return out


async def simulate(draft: Draft, simulator: ForkSimulator | None, head_block: int) -> Outcome:
    if simulator is None or not draft.planned:
        return Outcome(draft)
    account = draft.header.account
    if draft.safe_tx is not None:
        result = await simulator.simulate_safe(
            head_block,
            draft.safe_tx,
            account,
            f"Safe.execTransaction ({draft.label})",
            inner=draft.transactions,
            reads=draft.reads,
        )
    else:
        # a guardian's calls run from the guardian (its wallet pays, onBehalfOf the account)
        result = await simulator.simulate_eoa(
            head_block, draft.sender or account, draft.transactions, account, reads=draft.reads
        )
    return Outcome(draft, result)


def put_outcome(sim: SimulationResult, put: PutCheck) -> dict[str, Any]:
    """What the put purchase did on the fork: the position held and the premium actually paid,
    from the pool's own ``Trade`` event (Premia reports amounts as 18-decimal UD60x18; they are
    converted to quote-token units, rounded up, to compare with the premium limit)."""
    trades = [e for t in sim.transactions for e in t.events if e.method == "Trade"]
    paid_wad = sum(int(e.args["premium"]) + int(e.args["takerFee"]) for e in trades)
    unit = 10 ** (18 - put.quote_decimals)
    paid = -(-paid_wad // unit)
    long_after = int(sim.reads["long"][0]) if "long" in sim.reads else None
    return {
        "option_long_after": str(long_after) if long_after is not None else None,
        "option_size_planned": str(put.planned_size),
        "premium_paid": str(paid),
        "premium_paid_usd": float(Decimal(paid) / Decimal(10) ** put.quote_decimals),
    }


def swap_outcome(sim: SimulationResult, swap: SwapCheck) -> dict[str, Any]:
    """What a deleverage's swaps did on the fork, from the pools' own ``Swap`` events: the
    amount received against amountOutMinimum, and the realised price against the oracle."""
    received = 0
    for t in sim.transactions:
        for e in t.events:
            if e.contract == "UniswapV3Pool" and e.method == "Swap":
                a0, a1 = int(e.args["amount0"]), int(e.args["amount1"])
                received += -min(a0, a1)  # the pool pays out its negative side
    if received == 0 or swap.amount_in == 0:
        return {}
    dc, dd = swap.collateral_decimals, swap.debt_decimals
    price = received * 10**dc / (swap.amount_in * 10**dd)
    oracle = swap.oracle_price_wad / WAD
    return {
        "swap_amount_out": str(received),
        "swap_amount_out_human": received / 10**dd,
        "swap_amount_out_minimum": str(swap.min_out),
        "swap_amount_out_minimum_human": swap.min_out / 10**dd,
        "swap_price": price,
        "swap_price_vs_oracle_bps": (1 - price / oracle) * 10_000 if oracle else None,
        "left_in_wallet": str(received - swap.min_out),
    }


def simulation_record(sim: SimulationResult, target_hf_wad: int | None = None) -> dict[str, Any]:
    def usd(v: int | None) -> float | None:
        return None if v is None else v / AAVE_BASE_UNIT_USD

    before, after = sim.before, sim.after
    return {
        "success": sim.success,
        "fork_block": sim.fork_block,
        "error": sim.error,
        "target_health_factor": hf_float(target_hf_wad),
        "health_factor_before": hf_float(before.health_factor_wad) if before else None,
        "health_factor_after": hf_float(after.health_factor_wad) if after else None,
        "collateral_usd_before": usd(before.total_collateral_base if before else None),
        "collateral_usd_after": usd(after.total_collateral_base if after else None),
        "debt_usd_before": usd(before.total_debt_base if before else None),
        "debt_usd_after": usd(after.total_debt_base if after else None),
        "transactions": [
            {
                "description": t.description,
                "success": t.success,
                "gas_used": t.gas_used,
                "tx_hash": t.tx_hash,
                "revert_reason": t.revert_reason,
                "events": [e.signature() for e in t.events],
            }
            for t in sim.transactions
        ],
    }
