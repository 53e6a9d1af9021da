"""The session gauges after a tick that proposes: ``session_spent_usd`` and
``session_remaining_usd`` are the ledger after the tick's proposals, not the figure the decision
saw before them. In process, on the session's stressed devnet (tests/e2e/conftest.py)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent.app import App
from agent.config import load_settings
from agent.pipeline.runner import Agent

if TYPE_CHECKING:
    from conftest import StressedDevnet  # tests/e2e/conftest.py (annotation only)

pytestmark = pytest.mark.e2e


def _gauge(text: str, name: str) -> float:
    (value,) = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)


async def test_the_session_gauges_count_the_ticks_own_proposals(
    tmp_path: Path, stressed_devnet: StressedDevnet
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(stressed_devnet.config(tmp_path))
    settings = load_settings(config)
    async with App(settings) as app:
        agent = Agent(app.daemon_parts())
        await agent.setup()
        report = await agent.tick(1)
        text = app.ops.telemetry.render().decode()
    rows = [json.loads(x) for x in (tmp_path / "proposals.jsonl").read_text().splitlines()]
    assert report.proposals >= 1
    # by hand: what the tick's proposals spent (the session started empty): the simulated
    # DeFi proposals and the advisory S&P 500 ticket, which shares the session cap
    assert {r["status"] for r in rows} <= {"simulated", "advisory"}, rows
    assert any(r["status"] == "advisory" for r in rows)
    spent = sum((Decimal(str(r["sizing"]["spend_usd"])) for r in rows), Decimal(0))
    cap = Decimal(settings.policy.budget_usd) * Decimal(settings.policy.session_cap_fraction)
    assert spent > 0
    assert _gauge(text, "hedge_agent_session_spent_usd") == pytest.approx(float(spent), abs=0.01)
    assert _gauge(text, "hedge_agent_session_remaining_usd") == pytest.approx(
        float(cap - spent), abs=0.01
    )
