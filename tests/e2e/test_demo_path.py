"""The demo path end to end, through the real CLI: devnet up → play the stress scenario → one
agent tick → a simulated top-up proposal in the journal. Everything runs on loopback anvils."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import StressedDevnet  # tests/e2e/conftest.py (annotation only)

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
def devnet(
    tmp_path_factory: pytest.TempPathFactory, stressed_devnet: StressedDevnet
) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("demo")
    config = tmp / "agent.toml"
    config.write_text(stressed_devnet.config(tmp))
    lean = tmp / "lean.toml"
    lean.write_text(stressed_devnet.config(tmp, "devnet-lean.toml"))
    return {
        "tmp": tmp,
        "config": config,
        "lean": lean,
        "deployment": stressed_devnet.deployment,
        "journal": tmp / "proposals.jsonl",
    }


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


def test_empty_wallet_safe_gets_a_simulated_deleverage(devnet: dict[str, Path]) -> None:
    """The second position (config/devnet-lean.toml): a Safe holding no WBTC and no USDC. Its
    only protection is a deleverage through Uniswap V3, simulated through the Safe."""
    from agent.sinks.safe_tx_builder import validate_checksum

    dep = json.loads(devnet["deployment"].read_text())
    run = cli("run", "--config", str(devnet["lean"]), "--once")
    rows = [json.loads(line) for line in devnet["journal"].read_text().splitlines() if line.strip()]
    mine = [r for r in rows if r["account"] == dep["safe_lean"]["address"]]
    assert len(mine) == 1, run.stderr[-3000:]
    p = mine[0]
    assert p["action"] == "deleverage" and p["status"] == "simulated", p.get("error")
    cmp = p["comparison"]
    assert [o["action"] for o in cmp["options"]] == ["deleverage"]
    assert any("top-up" in e for e in cmp["not_planned"])
    assert any("repay" in e for e in cmp["not_planned"])
    methods = [t["call"]["method"] for t in p["transactions"]]
    assert methods == ["withdraw", "approve", "exactInputSingle", "approve", "repay"]
    swap = p["transactions"][2]["call"]["args"]["params"]
    dl = p["deleverage"]
    assert swap["amountOutMinimum"] == dl["amount_out_minimum"]
    assert p["transactions"][4]["call"]["args"]["amount"] == dl["amount_out_minimum"]
    sim = p["simulation"]
    target = sim["target_health_factor"]
    assert target <= sim["health_factor_after"] <= target * 1.001
    assert sim["debt_usd_after"] < sim["debt_usd_before"]
    assert sim["collateral_usd_after"] < sim["collateral_usd_before"]
    assert int(sim["swap_amount_out"]) >= int(dl["amount_out_minimum"])
    assert sim["swap_amount_out"] == dl["quote_out"]  # nothing moved the pool in between
    assert 0 < dl["price_impact_bps"] < dl["price_vs_oracle_bps"]
    # The ledger counts the deleverage's cost, not the collateral sold.
    assert p["sizing"]["spend_usd"] == pytest.approx(dl["cost_usd"], abs=0.01)
    batch = json.loads(Path(p["safe_tx_builder_file"]).read_text())
    assert validate_checksum(batch) and len(batch["transactions"]) == 5
    # What the Transaction Builder app will encode from the file is the calldata signed here.
    for built, signed in zip(batch["transactions"], p["transactions"], strict=True):
        assert built["to"] == signed["to"]
        assert _builder_calldata(built) == signed["data"]


def _builder_calldata(tx: dict[str, Any]) -> str:
    from eth_abi.abi import encode
    from eth_utils.abi import collapse_if_tuple, function_abi_to_4byte_selector

    def parse(v: Any, p: dict[str, Any]) -> Any:
        if p["type"] == "tuple":
            items = json.loads(v) if isinstance(v, str) else v
            return tuple(parse(x, c) for x, c in zip(items, p["components"], strict=True))
        return int(v) if p["type"].startswith(("uint", "int")) else v

    m = tx["contractMethod"]
    args = [parse(tx["contractInputsValues"][i["name"]], i) for i in m["inputs"]]
    selector = function_abi_to_4byte_selector({"type": "function", **m})
    return "0x" + (selector + encode([collapse_if_tuple(i) for i in m["inputs"]], args)).hex()


def test_second_run_does_not_duplicate_the_proposal(devnet: dict[str, Path]) -> None:
    cli("run", "--config", str(devnet["config"]), "--once")
    before = devnet["journal"].read_text().splitlines()
    cli("run", "--config", str(devnet["config"]), "--once")
    after = devnet["journal"].read_text().splitlines()
    assert len(after) == len(before)
    keys = [json.loads(line)["idempotency_key"] for line in after if line.strip()]
    assert len(keys) == len(set(keys))


def test_options_off_puts_the_whole_layer_into_protection(devnet: dict[str, Path]) -> None:
    """[options] disabled (as on mainnet): no put is planned or journaled and the protection
    gets the whole layer. B = 600,000 -> cap and layer 150,000 (S8 rising, DeFi first); the
    position needs more than the 60% (90,000) a top-up would get with options on."""
    sub = devnet["tmp"] / "no-options"
    sub.mkdir()
    config = sub / "agent.toml"
    config.write_text(
        devnet["config"]
        .read_text()
        .replace(f"{devnet['tmp']}/agent.sqlite", f"{sub}/agent.sqlite")
        .replace(f"{devnet['tmp']}/proposals.jsonl", f"{sub}/proposals.jsonl")
        .replace(f"{devnet['tmp']}/safe-tx-builder", f"{sub}/safe-tx-builder")
        .replace("budget_usd = 1000000", "budget_usd = 600000")
        + "\n[options]\nenabled = false\n"
    )
    run = cli(
        "run", "--config", str(config), "--once", env={"HEDGE_AGENT_AGENT__LOG_FORMAT": "json"}
    )
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    (dec,) = [e for e in events if e.get("event") == "decision"]
    assert dec["options_enabled"] is False and dec["layer_usd"] == "150000.00"
    (top,) = dec["actions"]
    assert top["kind"] == "collateral_top_up"
    need = float(top["required_collateral_usd"])
    assert 90_000 < need < 150_000  # more than the 60% share, within the layer
    assert top["max_spend_usd"] == top["required_collateral_usd"]  # all of the need
    assert any(
        "options disabled: the whole layer $150,000.00 goes to protection" in n
        for n in dec["notes"]
    )
    rows = [json.loads(x) for x in (sub / "proposals.jsonl").read_text().splitlines() if x.strip()]
    assert rows and not [r for r in rows if r["action"] == "option_put"]
    # the S&P 500 side's advisory ticket (nothing to sign) may sit beside it
    (p,) = [r for r in rows if r["action"] != "spx_put_ticket"]
    assert p["status"] == "simulated" and p["simulation"]["health_factor_after"] >= 1.6 - 1e-9


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


def test_proposals_queue_on_a_v2_service_at_the_next_free_nonce(
    devnet: dict[str, Path], tmp_path: Path
) -> None:
    """The agent's proposals land in a local v2-shaped Safe Transaction Service (two transactions
    already queued), each at the next free nonce, under the safeTxHash the service computes itself,
    with the API key sent; the fork simulated each at that nonce. The service refuses the second
    proposal (sender not a delegate): it stays in the journal and the Builder file, with the reason,
    and the next one takes the nonce it left free."""
    from eth_account import Account
    from fake_safe_service import FakeSafeService, safe_tx_hash_reference, serve_in_thread

    from agent.core.rpc import RpcClient
    from agent.sinks.safe_service import read_safe_nonce

    dep = json.loads(devnet["deployment"].read_text())
    safe, url = dep["safe"]["address"], dep["rpc_url"]

    async def read_nonce() -> int:
        async with RpcClient(url) as rpc:
            return await read_safe_nonce(rpc, safe)

    onchain = asyncio.run(read_nonce())
    key, api_key = "0x" + "4c" * 32, "sk_e2e_0123456789abcdef"
    svc = FakeSafeService(chain_id=31337, owners=list(dep["safe"]["owners"]),
                          delegates={Account.from_key(key).address}, api_key=api_key,
                          refuse_posts={1})  # fmt: skip
    svc.add_pending(safe, onchain)
    svc.add_pending(safe, onchain + 1, data="0x01")
    journal = tmp_path / "proposals.jsonl"
    with serve_in_thread(svc) as base:
        run = cli("run", "--config", str(devnet["config"]), "--once", env={
            "HEDGE_AGENT_AGENT__LOG_FORMAT": "json",
            "HEDGE_AGENT_AGENT__JOURNAL_PATH": str(journal),
            "HEDGE_AGENT_AGENT__STORE_PATH": str(tmp_path / "agent.sqlite"),
            "HEDGE_AGENT_SINKS__SAFE_TX_BUILDER_DIR": str(tmp_path / "builder"),
            "HEDGE_AGENT_SINKS__SAFE_SERVICE__ENABLED": "true",
            "HEDGE_AGENT_SINKS__SAFE_SERVICE__BASE_URL": base,
            "HEDGE_AGENT_SINKS__SAFE_SERVICE__API_KEY": api_key,
            "HEDGE_AGENT_SINKS__SAFE_SERVICE__DELEGATE_KEY": key,
        })  # fmt: skip
    rows = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    simulated = [r for r in rows if r["status"] == "simulated"]
    # a top-up or repay and puts (see the tests above): several Safe transactions in one tick
    assert len(simulated) >= 2, [(r["action"], r["status"], r.get("error")) for r in rows]
    refused, queued = simulated[1], [r for i, r in enumerate(simulated) if i != 1]
    # Queued ones: one after the other, after the two that were already queued.
    assert [r["safe_service"]["nonce"] for r in queued] == list(
        range(onchain + 2, onchain + 2 + len(queued))
    )
    queue = {t["nonce"]: t for t in svc.queue(safe)}
    assert sorted(queue) == list(range(onchain, onchain + 2 + len(queued)))
    for r in queued:
        ss, st = r["safe_service"], r["safe_tx"]
        assert ss["queued"] and ss["api"] == "v2" and st["nonce"] == ss["nonce"]
        assert ss["queued_nonces"][:2] == [onchain, onchain + 1]
        body = {**st, "nonce": str(st["nonce"])}
        assert ss["safe_tx_hash"] == safe_tx_hash_reference(body, 31337)
        assert queue[ss["nonce"]]["safeTxHash"] == ss["safe_tx_hash"]
        # the fork executed exactly this Safe transaction: same hash, same nonce
        events = r["simulation"]["transactions"][-1]["events"]
        assert f"Safe.ExecutionSuccess(txHash={ss['safe_tx_hash']}, payment=0)" in events
    # The refused one: kept, with the service's reason on one line naming the field.
    err = refused["safe_service"]["error"]
    assert refused["safe_tx"]["nonce"] == onchain + 3 and "\n" not in err
    assert f"nonce {onchain + 3}" in err and "HTTP 422: sender: Sender=0x" in err
    assert "is not an owner or delegate" in err and "hint: register" in err
    for r in simulated:
        batch = json.loads(Path(r["safe_tx_builder_file"]).read_text())
        assert len(batch["transactions"]) == len(r["transactions"])
    assert all(h.get("Authorization") == f"Bearer {api_key}" for _, h, _ in svc.posts())
    assert len(svc.posts()) == len(simulated)
    assert api_key not in run.stderr and api_key not in journal.read_text()
