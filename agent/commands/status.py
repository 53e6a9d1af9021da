"""``hedge-agent status --config PATH``: one screen of every position and its liquidation guard.

Reads each chain once (the same single Multicall3 batch as a tick), evaluates as the daemon's
tick would from the store and the journal (signals, the layer rule's budgets, the guard with
its stress-aware trigger and its state), and prints per position: HF, the guard's trigger,
the collateral price, the liquidation price (HF = 1) and the guard price (HF = trigger), the
distance to each in %, the guard's state and its budget used; then the layer rule's session cap
and open-layer budget B. Nothing is written and nothing is proposed.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from agent.core.units import AAVE_BASE_UNIT_USD, WAD

if TYPE_CHECKING:
    from agent.app import App
    from agent.config import Settings


def _usd(base: int | None) -> str:
    return "n/a" if base is None else f"${base / AAVE_BASE_UNIT_USD:,.2f}"


def _pct(bps: int | None) -> str:
    return "n/a" if bps is None else f"{bps / 100:.2f}%"


def _label(label: str) -> str:
    return f"{label[:6]}..{label[-4:]}" if label.startswith("0x") else label[:22]


def _cents(x: object) -> str:
    return f"${Decimal(str(x)).quantize(Decimal('0.01')):,}"


def render_status(evaluation: object, block: int, at: int) -> str:
    from agent.pipeline.evaluate import Evaluation

    assert isinstance(evaluation, Evaluation)
    d = evaluation.decision
    when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = (
        f"{'position':<22} {'chain':<10} {'HF':>7} {'trigger':>8} {'asset':<6} {'price':>12} "
        f"{'liq. price':>12} {'to liq.':>8} {'guard price':>12} {'to guard':>9} "
        f"{'guard':<8} {'spent / budget':>22}"
    )
    lines = [f"positions at block {block} ({when}), session {evaluation.session_id}", "", head]
    stressed = None
    for v in evaluation.guard.views:
        verdict, g = v.verdict, v.prices
        hf = verdict.health_factor_wad
        t = verdict.trigger
        if t.stressed:
            stressed = t
        state = (
            "CRITICAL"
            if verdict.critical
            else {"protect": "PROTECT", "hold": "pending"}.get(
                verdict.kind, "pending" if verdict.state.pending else "armed"
            )
        )
        lines.append(
            f"{_label(v.label):<22} {(v.position.chain or '-')[:10]:<10} "
            f"{'n/a' if hf >= 2**255 else f'{hf / WAD:.4f}':>7} "
            f"{f'{t.trigger_hf_wad / WAD:g}' + ('*' if t.stressed else ''):>8} {v.asset[:6]:<6} "
            f"{_usd(None if g is None else g.price):>12} "
            f"{_usd(None if g is None else g.liquidation_price):>12} "
            f"{_pct(None if g is None else g.liquidation_distance_bps):>8} "
            f"{_usd(None if g is None else g.guard_price):>12} "
            f"{_pct(None if g is None else g.guard_distance_bps):>9} "
            f"{state:<8} {f'${v.spent_usd:,.2f} / ${v.cfg.budget_usd:,.0f}':>22}"
        )
    if not evaluation.guard.views:
        lines.append("(no position read)")
    lines.append("")
    if stressed is not None:
        lines.append(f"* raised: market stress ({', '.join(stressed.firing)} firing)")
    lines.append(
        "prices: the collateral's oracle price at which HF = 1 (liquidation) and HF = the "
        "trigger (guard), the debt's value held; distance below the current price"
    )
    lines.append(
        f"layer rule: session cap {_cents(d.session_cap_usd)}, spent "
        f"{_cents(d.session_spent_before_usd)} (remaining {_cents(max(d.session_cap_usd - d.session_spent_before_usd, 0))}); "
        f"open-layer budget B {_cents(d.budget_usd)}: open {_cents(d.open_layers_usd)}, "
        f"room {_cents(d.budget_room_usd)}"
    )
    for v in evaluation.guard.views:
        lines.append(f"{_label(v.label)}: {v.verdict.reason}")
    return "\n".join(lines)


async def _status(config: str) -> str:
    from agent.app import App
    from agent.collectors.onchain import discover, read_snapshot
    from agent.config import load_settings
    from agent.pipeline.evaluate import MarketRead, evaluate
    from agent.pipeline.parts import Chain
    from agent.sinks.outbox import pending_records

    settings = load_settings(config)
    async with App(settings) as app:
        chains = list(app.chains.values())

        async def read(chain: Chain) -> MarketRead:
            rpc = app.rpc(chain)
            await rpc.ensure_chain(chain.chain_id)
            layout = await discover(rpc, chain.config)
            return MarketRead(layout, await read_snapshot(rpc, layout))

        reads = await asyncio.gather(*(read(c) for c in chains))
        markets = {c.name: r for c, r in zip(chains, reads, strict=True)}
        history = app.journal.records() + pending_records(app.ledger)
        evaluation = evaluate(
            app.store,
            settings,
            app.positions,
            markets,
            history,
            ledger=app.ledger,
            options_enabled=app.parts.puts is not None,
        )
        from agent.sinks.autonomous import status_lines

        auto = [p.name or str(p.account) for p in app.positions if p.execution == "autonomous"]
        sends = {s.tx_hash: s.status for s in app.ledger.live_sends()}
        newest = max(reads, key=lambda r: r.snap.timestamp).snap
        return "\n".join(
            [
                render_status(evaluation, newest.block_number, evaluation.at),
                *status_lines(auto, history, sends),
                *await _guardian_lines(app, settings),
            ]
        )


async def _guardian_lines(app: App, settings: Settings) -> list[str]:
    """Each guardian's balances on the chain of each position it protects, and the guard
    actions they still cover there (an unreadable one says why; status still prints)."""
    from agent.core.errors import AgentError
    from agent.ops.guardian import guarded_positions, read_guardian

    out: list[str] = []
    for p in guarded_positions(app.positions):
        try:
            out += (await read_guardian(app.rpc(p.chain), settings, p)).lines()
        except AgentError as exc:
            g = p.guardian_config
            assert g is not None
            out.append(f"{g.label} {g.account} on {p.chain.name}: unreadable ({exc})")
    return out


def _cmd_status(args: argparse.Namespace) -> int:
    from agent.sinks.logging import configure_logging

    configure_logging("console", "WARNING")
    print(asyncio.run(_status(args.config)))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="every position: HF, liquidation and guard price, distance, budgets used",
    )
    p.add_argument("--config", required=True, help="TOML configuration file")
    p.set_defaults(handler=_cmd_status)
