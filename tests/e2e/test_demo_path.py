"""The demo path end to end, through the real CLI: devnet up → play the stress scenario → one
agent tick → a simulated top-up proposal in the journal. Everything runs on loopback anvils."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"hedge-agent {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    tmp = tmp_path_factory.mktemp("demo")
    deployment, feed = tmp / "deployment.json", tmp / "feed.json"
    cli("devnet", "up", "--deployment", str(deployment))
    try:
        cli("devnet", "play", "stress", "--deployment", str(deployment), "--feed", str(feed))
        config = tmp / "agent.toml"
        config.write_text(
            (ROOT / "config" / "devnet.toml")
            .read_text()
            .replace("out/devnet/deployment.json", str(deployment))
            .replace("out/devnet/scenario_feed.json", str(feed))
            .replace("var/demo/", f"{tmp}/")
        )
        yield {
            "tmp": tmp,
            "config": config,
            "deployment": deployment,
            "journal": tmp / "proposals.jsonl",
        }
    finally:
        cli("devnet", "down", "--deployment", str(deployment), check=False)


def test_stress_scenario_yields_a_simulated_top_up_reaching_the_target(
    devnet: dict[str, Path],
) -> None:
    run = cli(
        "run",
        "--config",
        str(devnet["config"]),
        "--once",
        env={"HEDGE_AGENT_AGENT__LOG_FORMAT": "json"},
    )
    rows = [json.loads(line) for line in devnet["journal"].read_text().splitlines() if line.strip()]
    protect = [r for r in rows if r["action"] in ("collateral_top_up", "repay_debt")]
    assert protect, f"no top-up or repay proposed; agent log:\n{run.stderr[-3000:]}"
    p = protect[0]
    assert p["status"] == "simulated", p.get("simulation")
    sim = p["simulation"]
    assert sim["success"] is True
    assert sim["health_factor_after"] >= sim["target_health_factor"] - 1e-9
    assert sim["health_factor_after"] > sim["health_factor_before"]
    # the transactions are the real Aave V3 calls, decoded from the calldata
    methods = [t["call"]["method"] for t in p["transactions"]]
    final = "supply" if p["action"] == "collateral_top_up" else "repay"
    assert methods[-1] == final and set(methods) <= {"approve", final}
    assert p["transactions"][-1]["call"]["args"]["onBehalfOf"] == p["account"]
    # both options were costed and the cheaper one that reaches the target was chosen
    costs = {o["action"]: o for o in p["comparison"]["options"]}
    assert p["comparison"]["chosen"] == p["action"] and costs[p["action"]]["reaches_target"]
    # the structured log carries the proposal and the trigger evidence
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "proposal" for e in events)
    assert any(e.get("data_origin") == "scenario" for e in events)


def test_puts_in_two_horizons_within_the_session_cap(devnet: dict[str, Path]) -> None:
    from agent.sinks.safe_tx_builder import validate_checksum

    rows = [json.loads(line) for line in devnet["journal"].read_text().splitlines() if line.strip()]
    puts = [r for r in rows if r["action"] == "option_put" and r["status"] == "simulated"]
    assert len({r["option"]["horizon"] for r in puts}) >= 2, [r.get("error") for r in rows]
    for r in puts:
        sim = r["simulation"]
        assert int(sim["option_long_after"]) == int(r["option"]["size"]) > 0
        assert int(sim["premium_paid"]) <= int(r["option"]["premium_limit"])
        # the session ledger counts what the pool actually charged (premium incl. fee)
        assert r["sizing"]["spend_usd"] == pytest.approx(
            sim["premium_paid_usd"], rel=0.01, abs=0.01
        )
        assert r["transactions"][-1]["call"]["method"] == "trade"
    # every executable proposal has a Safe Transaction Builder file with a valid checksum
    for r in rows:
        if r["status"] == "simulated":
            batch = json.loads(Path(r["safe_tx_builder_file"]).read_text())
            assert validate_checksum(batch) and len(batch["transactions"]) == len(r["transactions"])
    # the session's proposed spend stays within 25% of the budget (1,000,000 in devnet.toml)
    spent = sum(r["sizing"]["spend_usd"] for r in rows if r["status"] == "simulated")
    assert 0 < spent <= 250_000


def test_second_run_does_not_duplicate_the_proposal(devnet: dict[str, Path]) -> None:
    cli("run", "--config", str(devnet["config"]), "--once")
    before = devnet["journal"].read_text().splitlines()
    cli("run", "--config", str(devnet["config"]), "--once")
    after = devnet["journal"].read_text().splitlines()
    assert len(after) == len(before)
    keys = [json.loads(line)["idempotency_key"] for line in after if line.strip()]
    assert len(keys) == len(set(keys))


def test_devnet_not_up_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[chain]\ndeployment = "%s"\n' % (tmp_path / "missing.json"))
    proc = cli("run", "--config", str(config), "--once", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "devnet is not up" in proc.stderr


def test_wrong_rpc_url_is_a_one_line_error(tmp_path: Path) -> None:
    from agent.core.anvil import free_port

    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nstore_path = "{tmp_path}/s.sqlite"\njournal_path = "{tmp_path}/j.jsonl"\n'
        f'[chain]\nrpc_url = "http://127.0.0.1:{free_port()}"\n'
        'pool_addresses_provider = "0x2f39d218133AFaB8F2B819B1066c7E434Ad94E9e"\n'
    )
    proc = cli("run", "--config", str(config), "--once", check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.strip().count("\n") == 0
    assert "cannot connect" in proc.stderr


def test_malformed_config_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[agent]\ntick_intervall_s = 5\n")
    proc = cli("run", "--config", str(config), "--once", check=False)
    assert proc.returncode == 2
    assert "tick_intervall_s" in proc.stderr and proc.stderr.strip().count("\n") == 0
    config.write_text("[agent\n")
    proc = cli("run", "--config", str(config), "--once", check=False)
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr


def test_live_mode_refuses_to_start_without_a_signer(devnet: dict[str, Path]) -> None:
    proc = cli(
        "run",
        "--config",
        str(devnet["config"]),
        "--once",
        env={"HEDGE_AGENT_SINKS__LIVE__ENABLED": "true"},
        check=False,
    )
    assert proc.returncode == 2
    assert "no signer configured" in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_live_mode_refuses_a_wrong_chain_id(devnet: dict[str, Path]) -> None:
    key = "0x" + "ab" * 32
    proc = cli(
        "run",
        "--config",
        str(devnet["config"]),
        "--once",
        env={
            "HEDGE_AGENT_SINKS__LIVE__ENABLED": "true",
            "HEDGE_AGENT_SINKS__LIVE__SIGNER_KEY": key,
            "HEDGE_AGENT_SINKS__LIVE__PRIVATE_RPC_URL": "http://127.0.0.1:9",
            "HEDGE_AGENT_CHAIN__CHAIN_ID": "1",
        },
        check=False,
    )
    assert proc.returncode == 2
    # A chain_id beside `deployment =` that disagrees is refused before anything runs.
    assert "chain.chain_id = 1 but the deployment" in proc.stderr
    assert "is on chain 31337" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert key not in proc.stderr and key[2:] not in proc.stderr
