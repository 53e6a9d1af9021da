"""Several devnet chains (``hedge-agent devnet up --chains 2``) against real anvils: two detached
anvils with their own chain ids, distinct deployments, a scenario that moves both, ``down`` that
stops both, and a failed second chain that leaves nothing behind. The ``devnet2`` fixture too.

The CLI round trip is one test: a two-chain deploy costs seconds."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from devnet_rpc import rpc_call_sync

from agent.cli import main
from agent.core.anvil import find_tool, kill_process_group
from agent.devnet.artifacts import npm_artifact
from agent.devnet.chain import Chain
from agent.devnet.deploy import (
    ASSETS,
    MULTICALL3_ADDRESS,
    SINGLETON_FACTORY_ADDRESS,
    health_factor,
)

pytestmark = pytest.mark.integration

LT = {s.symbol: Decimal(s.lt) / 10_000 for s in ASSETS}

# Three hours: ETH -20%, BTC -10%, USDC unchanged; no events, no keeper.
SHORT = """
name = "short"
duration_hours = 3
[prices]
"ETH/USD" = [[0, 3000], [3, 2400]]
"BTC/USD" = [[0, 62000], [3, 55800]]
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _addresses(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return {a for v in obj.values() for a in _addresses(v)}
    if isinstance(obj, list):
        return {a for v in obj for a in _addresses(v)}
    if isinstance(obj, str) and re.fullmatch(r"0x[0-9a-fA-F]{40}", obj):
        return {obj.lower()}
    return set()


@pytest.fixture
def devnet_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "devnet"
    yield d
    for f in d.glob("deployment*.json"):  # the test failed before `down`: do not leak anvils
        pid = json.loads(f.read_text()).get("anvil_pid")
        if isinstance(pid, int):
            kill_process_group(pid)


def _balance(chain: Chain, token: str, who: str) -> int:
    return int(chain.call(chain.at(token, npm_artifact("MintableERC20")), "balanceOf", who))


def _expected_hf(
    chain: Chain, dep: dict[str, Any], who: str, collateral: str, price_usd: int
) -> Decimal:
    """Aave's health factor computed here from the balances and the scenario's prices:
    collateral x price x liquidation threshold / debt (USDC at $1: the scenario keeps it)."""
    t = dep["tokens"]
    coll = Decimal(_balance(chain, t[collateral]["a_token"], who)) / 10 ** t[collateral]["decimals"]
    debt = Decimal(_balance(chain, t["USDC"]["variable_debt_token"], who)) / 10**6
    return coll * price_usd * LT[collateral] / debt


def test_two_chains_up_status_play_down(
    devnet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = devnet_dir / "deployment.json"
    second = devnet_dir / "deployment-2.json"
    devnet_dir.mkdir()
    stale = devnet_dir / "deployment-3.json"  # a chain 3 whose anvil is long gone
    stale.write_text(json.dumps({"version": 1, "rpc_url": "http://127.0.0.1:9", "anvil_pid": 1}))
    dep = str(first)

    assert main(["devnet", "up", "--chains", "2", "--deployment", dep]) == 0
    out = capsys.readouterr().out
    assert "devnet chain 1 (chain id 31337) up at" in out
    assert "devnet chain 2 (chain id 31338) up at" in out
    assert out.count("Safe health factor: 1.9000; empty-wallet Safe: 1.5000") == 2
    assert not stale.exists()  # stale: not counted as an up chain by status/play/down
    assert (devnet_dir / "anvil.log").exists() and (devnet_dir / "anvil-2.log").exists()

    r1, r2 = json.loads(first.read_text()), json.loads(second.read_text())
    assert (r1["chain_id"], r2["chain_id"]) == (31337, 31338)
    assert rpc_call_sync(r1["rpc_url"], "eth_chainId") == "0x7a69"
    assert rpc_call_sync(r2["rpc_url"], "eth_chainId") == "0x7a6a"
    assert r1["rpc_url"] != r2["rpc_url"] and r1["anvil_pid"] != r2["anvil_pid"]
    pids = [r1["anvil_pid"], r2["anvil_pid"]]
    for pid in pids:
        assert _alive(pid) and os.getpgid(pid) == pid  # detached, own group for `down`
    # Same market, disjoint addresses: only Multicall3 and ERC-2470's singleton factory
    # (canonical) and anvil's accounts repeat, and chain 2 has no code where chain 1's pool and
    # Safe are.
    accounts = {a.lower() for a in rpc_call_sync(r1["rpc_url"], "eth_accounts")}  # type: ignore[attr-defined]
    canonical = {MULTICALL3_ADDRESS.lower(), SINGLETON_FACTORY_ADDRESS.lower()}
    assert _addresses(r1) & _addresses(r2) == canonical | (accounts & _addresses(r1))
    for record, other in ((r1, r2), (r2, r1)):
        for addr in (record["aave"]["pool"], record["safe"]["address"]):
            assert rpc_call_sync(record["rpc_url"], "eth_getCode", [addr, "latest"]) != "0x"
            assert rpc_call_sync(other["rpc_url"], "eth_getCode", [addr, "latest"]) == "0x"

    assert main(["devnet", "up", "--chains", "2", "--deployment", dep]) == 2
    assert "already up" in capsys.readouterr().err

    assert main(["devnet", "status", "--deployment", dep]) == 0
    out = capsys.readouterr().out
    assert "chain 1 (chain id 31337) up at" in out and "chain 2 (chain id 31338) up at" in out

    # `play` on every chain that is up; the feed file written once, anchored at chain 1's time.
    scenario = tmp_path / "short.toml"
    scenario.write_text(SHORT)
    feed = tmp_path / "feed.json"
    chains = [Chain(r1["rpc_url"]), Chain(r2["rpc_url"])]
    start_block = [c.block_number() for c in chains]
    hf_before = [
        health_factor(c, r, r["safe"]["address"]) for c, r in zip(chains, (r1, r2), strict=True)
    ]
    assert main(["devnet", "play", str(scenario), "--deployment", dep, "--feed", str(feed)]) == 0
    out = capsys.readouterr().out
    assert json.loads(feed.read_text())["started_at"] == chains[0].timestamp(start_block[0])
    for c, r, b0, hf0 in zip(chains, (r1, r2), start_block, hf_before, strict=True):
        assert c.block_number() >= b0 + 3  # at least one block per simulated hour
        safe, lean = r["safe"]["address"], r["safe_lean"]["address"]
        hf, lean_hf = health_factor(c, r, safe), health_factor(c, r, lean)
        # Independent of Aave: from the balances and the scenario's end prices, and bounded on
        # both sides by the price move alone (interest only lowers it further, by little).
        assert abs(hf - _expected_hf(c, r, safe, "WETH", 2400)) < Decimal("1e-6")
        assert abs(lean_hf - _expected_hf(c, r, lean, "WBTC", 55800)) < Decimal("1e-6")
        assert hf0 * Decimal("0.8") * Decimal("0.999") < hf < hf0 * Decimal("0.8")
        assert Decimal("1.35") * Decimal("0.999") < lean_hf < Decimal("1.35")
        block = out[out.index(f"(chain id {r['chain_id']}) at {r['rpc_url']}") :]
        assert f"Safe health factor: {hf0:.4f} -> {hf:.4f}" in block
        assert f"empty-wallet Safe health factor: 1.5000 -> {lean_hf:.4f}" in block

    # `--chain 2` plays on chain 2 only.
    blocks = [c.block_number() for c in chains]
    assert main(["devnet", "play", str(scenario), "--chain", "2", "--deployment", dep]) == 0
    out = capsys.readouterr().out
    assert "on 1 chain" in out and "chain id 31338" in out and "chain id 31337" not in out
    assert chains[0].block_number() == blocks[0]
    assert chains[1].block_number() >= blocks[1] + 3
    assert main(["devnet", "play", str(scenario), "--chain", "3", "--deployment", dep]) == 2
    assert "devnet chain 3 is not up" in capsys.readouterr().err

    assert main(["devnet", "down", "--deployment", dep]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"chain 1 (chain id 31337): stopped anvil pid {pids[0]}")
    assert lines[1].startswith(f"chain 2 (chain id 31338): stopped anvil pid {pids[1]}")
    assert not first.exists() and not second.exists()
    assert not any(_alive(pid) for pid in pids)
    assert main(["devnet", "status", "--deployment", dep]) == 2
    assert "devnet is not up: no deployment file" in capsys.readouterr().err


def test_failed_second_chain_leaves_nothing(
    devnet_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A real fault: chain 2's anvil starts with 5 accounts (the deploy needs 10), through a
    wrapper the command finds like any anvil (``HEDGE_AGENT_ANVIL``). It records the pid of
    every anvil it starts (``exec`` keeps it)."""
    real = find_tool("anvil")
    pids = tmp_path / "pids"
    wrapper = tmp_path / "anvil"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'echo $$ >> "{pids}"\n'
        f'case " $* " in *" --chain-id 31338 "*) exec "{real}" "$@" --accounts 5 ;; esac\n'
        f'exec "{real}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("HEDGE_AGENT_ANVIL", str(wrapper))
    devnet_dir.mkdir()
    first = devnet_dir / "deployment.json"
    first.write_text(json.dumps({"version": 1, "rpc_url": "http://127.0.0.1:9"}))  # stale

    assert main(["devnet", "up", "--chains", "2", "--deployment", str(first)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: devnet chain 2 (chain id 31338) failed to deploy: "
        "devnet needs 10 unlocked accounts, anvil has 5"
    )
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2
    assert not any(_alive(pid) for pid in started)  # chain 1's anvil stopped mid-deploy too
    assert sorted(p.name for p in devnet_dir.iterdir()) == ["anvil-2.log", "anvil.log"]


def test_devnet2_fixture_is_a_second_chain(
    devnet: dict[str, Any], devnet2: dict[str, Any], devnet2_chain: Chain
) -> None:
    assert (devnet["chain_id"], devnet2["chain_id"]) == (31337, 31338)
    assert devnet2_chain.chain_id() == 31338 and devnet2["rpc_url"] != devnet["rpc_url"]
    assert devnet2["aave"]["pool"] != devnet["aave"]["pool"]
    assert devnet2["safe"]["address"] != devnet["safe"]["address"]
    safe = devnet2["safe"]["address"]
    hf = health_factor(devnet2_chain, devnet2, safe)
    assert abs(hf - _expected_hf(devnet2_chain, devnet2, safe, "WETH", 3000)) < Decimal("1e-6")
    assert abs(hf - Decimal("1.9")) < Decimal("1e-4")  # the position `deploy` opens
    assert devnet2["premia"]["pools_listed"] > 0
