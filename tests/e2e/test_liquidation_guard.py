"""The liquidation guard on the stressed devnet (issue 22): config/devnet-lean.toml gives the
empty-wallet Safe (HF about 1.36 after `devnet play stress`) a trigger of 1.40. One tick must
propose its protection to HF 1.60 at once, sized to the whole target (a deleverage: the wallet
is empty), from the guard's own budget; a second tick holds (the proposal is pending); and
`hedge-agent status` shows the liquidation and guard prices. Every number is recomputed here
from the chain with Fractions, independently of the agent's integer helpers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agent.devnet.artifacts import npm_artifact
from agent.devnet.chain import Chain
from agent.store.ledger import ProposalLedger

if TYPE_CHECKING:
    from conftest import StressedDevnet

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=ROOT,
        env={**os.environ, "HEDGE_AGENT_AGENT__LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def rows(journal: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]


PROTECTION = ("collateral_top_up", "repay_debt", "deleverage")


def protections(journal: Path, account: str) -> list[dict[str, Any]]:
    return [r for r in rows(journal) if r["account"] == account and r["action"] in PROTECTION]


def test_guard_proposes_the_whole_target_then_holds(
    stressed_devnet: StressedDevnet, tmp_path: Path
) -> None:
    dep = stressed_devnet.dep
    config = tmp_path / "lean.toml"
    config.write_text(stressed_devnet.config(tmp_path, "devnet-lean.toml"))
    chain = Chain(str(dep["rpc_url"]))
    pool = chain.at(dep["aave"]["pool"], npm_artifact("Pool"))
    oracle = chain.at(dep["aave"]["oracle"], npm_artifact("AaveOracle"))
    safe = dep["safe_lean"]["address"]
    c, d, _, lt, _, hf = (int(x) for x in chain.call(pool, "getUserAccountData", safe))
    price = int(chain.call(oracle, "getAssetPrice", dep["tokens"]["WBTC"]["address"]))
    # by hand: the HF Aave reports is C x LT / D (rounded half up), below the 1.40 trigger
    assert abs(Fraction(c * lt * 10**18, d * 10_000) - hf) <= 1
    assert Fraction(13, 10) < Fraction(hf, 10**18) <= Fraction(14, 10)
    # the whole top-up to HF 1.6 (base units): the smallest n with (C + n) x LT >= 1.6 x D
    need = math.ceil(Fraction(16 * d * 10_000, 10) / lt - c)
    assert (c + need) * lt * 10 >= 16 * d * 10_000 > (c + need - 1) * lt * 10
    need_usd = (Decimal(need) / Decimal(10**8)).quantize(Decimal("0.01"), rounding="ROUND_CEILING")

    cli("run", "--config", str(config), "--once")
    journal = tmp_path / "proposals.jsonl"
    mine = protections(journal, safe)
    assert len(mine) == 1, [r["policy"] for r in mine]  # the layer's top-up was not added
    p = mine[0]
    pol = p["policy"]
    assert pol["action_key"] == f"guard:31337:{safe.lower()}"  # the chain is in every key
    assert pol["reason"].startswith("guard: ") and "HF <= trigger" in pol["reason"]
    assert pol["guard"]["health_factor_wad"] == str(hf)
    assert pol["guard"]["trigger_hf_wad"] == str(14 * 10**17)
    assert pol["guard"]["target_hf_wad"] == str(16 * 10**17)
    # sized to the whole target, not a share: the explanation carries the exact requirement
    assert any(f"needs {need} base (${need_usd:,})" in line for line in p["explanation"])
    # an empty wallet: the protection is a deleverage that reaches the target (and not more)
    assert p["action"] == "deleverage" and p["status"] == "simulated", p.get("error")
    sim = p["simulation"]
    assert sim["target_health_factor"] == pytest.approx(1.6)
    assert 1.6 <= sim["health_factor_after"] <= 1.6 * 1.001
    # its own budget: the guard's ledger session holds the spend, the layer's session does not
    assert p["sizing"]["session_cap_usd"] == 100_000
    ledger = pol["guard"]["ledger_session"]
    assert ledger == f"guard:31337:{safe.lower()}:{pol['session_id']}"
    store = ProposalLedger(str(tmp_path / "agent.sqlite"))
    try:
        assert float(store.session_spent_usd(ledger)) == pytest.approx(
            p["sizing"]["spend_usd"], abs=0.01
        )
        layer = [
            r
            for r in rows(journal)
            if not r["policy"]["action_key"].startswith("guard:") and r.get("sizing")
        ]
        assert float(store.session_spent_usd(pol["session_id"])) == pytest.approx(
            sum(r["sizing"]["spend_usd"] for r in layer), abs=0.05
        )
    finally:
        store.close()

    # a second tick: the proposal is pending and HF did not fall a step further -> hold
    run = cli("run", "--config", str(config), "--once")
    assert len(protections(journal, safe)) == 1
    guards = [
        json.loads(line)
        for line in run.stderr.splitlines()
        if line.startswith("{") and '"event": "guard"' in line
    ]
    assert [g["verdict"] for g in guards] == ["hold"], guards

    # the listing marks the guard's proposal
    listing = cli("proposals", "list", "--config", str(config)).stdout
    assert any(p["id"] in x and "deleverage (guard)" in x for x in listing.splitlines())

    # status: HF, the prices at HF 1 and HF 1.40 (rounded up to the oracle's 1e-8 dollars)
    out = cli("status", "--config", str(config)).stdout
    liq = math.ceil(Fraction(price * d * 10_000, c * lt))
    grd = math.ceil(Fraction(price * 14 * d * 10_000, 10 * c * lt))
    line = next(x for x in out.splitlines() if x.startswith(safe[:6]))
    assert f"{hf / 10**18:.4f}" in line and "pending" in line
    assert f"${liq / 10**8:,.2f}" in line and f"${grd / 10**8:,.2f}" in line
    assert f"{(price - liq) * 10_000 // price / 100:.2f}%" in line
