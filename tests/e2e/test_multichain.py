"""Two positions on two devnet chains under one budget, through the real CLI: `devnet up
--chains 2` (two anvils, chain ids 31337 and 31338) → the stress scenario on both (the session's
stressed devnet, tests/e2e/conftest.py) → the daemon with config/devnet-multi.toml. The
allocation, the shared session cap and its survival across a restart are recomputed here from
the chains themselves (getUserAccountData read directly)."""

from __future__ import annotations

import json
import math
import sqlite3
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_demo_path import ROOT, cli  # the sibling module (pytest puts tests/e2e on sys.path)

if TYPE_CHECKING:
    from conftest import StressedDevnet  # tests/e2e/conftest.py (annotation only)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_chains(
    tmp_path_factory: pytest.TempPathFactory, stressed_devnet: StressedDevnet
) -> dict[str, Any]:
    """The session's stressed devnet (tests/e2e/conftest.py): two chains, the stress scenario
    played on both, reverted to this state when the module ends."""
    assert stressed_devnet.dep2 is not None  # the session asks for two chains for this fixture
    return {
        "tmp": tmp_path_factory.mktemp("multi"),
        "deployment": stressed_devnet.deployment,
        "feed": stressed_devnet.feed,
        "deps": {"devnet": stressed_devnet.dep, "devnet2": stressed_devnet.dep2},
    }


def config(env: dict[str, Any], name: str, *, budget: int, positions: str = "both") -> Path:
    tmp: Path = env["tmp"]
    text = (
        (ROOT / "config" / "devnet-multi.toml")
        .read_text()
        .replace("out/devnet/deployment.json", str(env["deployment"]))
        .replace(
            "out/devnet/deployment-2.json", str(env["deployment"].with_name("deployment-2.json"))
        )
        .replace("out/devnet/scenario_feed.json", str(env["feed"]))
        .replace("var/demo-multi/", f"{tmp}/{name}/")
        .replace("budget_usd = 1000000", f"budget_usd = {budget}")
    )
    if positions == "main":  # the second [[positions]] entry left out
        head, _, rest = text.partition('[[positions]]\nchain = "devnet2"')
        text = head + rest[rest.index("[options]") :]
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


def run_once(cfg: Path) -> list[dict[str, Any]]:
    proc = cli("run", "--config", str(cfg), "--once", env={"HEDGE_AGENT_AGENT__LOG_FORMAT": "json"})
    return [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]


def journal(cfg_dir: Path) -> list[dict[str, Any]]:
    path = cfg_dir / "proposals.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ledger_usd(cfg_dir: Path) -> Decimal:
    with sqlite3.connect(cfg_dir / "agent.sqlite") as c:
        return sum((Decimal(r[0]) for r in c.execute("SELECT amount_usd FROM spends")), Decimal(0))


def account_data(dep: dict[str, Any], account: str, block: int) -> tuple[int, ...]:
    """``getUserAccountData`` from the chain's Pool at ``block``, through the Aave package's
    own ABI (not the agent's reader)."""
    from agent.devnet.artifacts import npm_artifact
    from agent.devnet.chain import Chain

    chain = Chain(dep["rpc_url"])
    pool = chain.at(dep["aave"]["pool"], npm_artifact("Pool"))
    return tuple(int(x) for x in chain.call(pool, "getUserAccountData", account, block=block))


def oracle_price(dep: dict[str, Any], asset: str, block: int) -> int:
    from agent.devnet.artifacts import npm_artifact
    from agent.devnet.chain import Chain

    chain = Chain(dep["rpc_url"])
    oracle = chain.at(dep["aave"]["oracle"], npm_artifact("AaveOracle"))
    return int(chain.call(oracle, "getAssetPrice", asset, block=block))


def need_usd(dep: dict[str, Any], account: str, block: int, target: str) -> Decimal:
    """What the position needs to reach ``target``: D * H / LT - C, read from the chain's Pool
    at the tick's block (rounded up to the cent), independently of the agent."""
    c, d, _, lt, _, _ = account_data(dep, account, block)
    exact = Fraction(d, 10**8) * Fraction(target) / Fraction(lt, 10_000) - Fraction(c, 10**8)
    return Decimal(math.ceil(exact * 100)) / 100


def cents_down(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_DOWN)


def decision_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    (d,) = [e for e in events if e.get("event") == "decision"]
    return d


def test_two_positions_on_two_chains_in_one_budget(two_chains: dict[str, Any]) -> None:
    cfg = config(two_chains, "one", budget=1_000_000)
    events = run_once(cfg)
    deps = two_chains["deps"]
    rows = journal(cfg.parent / "one")
    d = decision_of(events)
    assert d["acted"] and d["size_fraction"] == "1"
    # one layer for both chains: cap 250,000 = layer; 40% to puts, 150,000 to protection
    layer = Decimal(d["layer_usd"])
    assert layer == Decimal("250000.00")
    share = layer - cents_down(layer * Decimal("0.4"))
    main, lean = deps["devnet"]["safe"]["address"], deps["devnet2"]["safe_lean"]["address"]
    blocks = {r["chain"]: r["block_number"] for r in rows if r.get("position")}
    need = {
        "lean-safe": need_usd(deps["devnet2"], lean, blocks["devnet2"], "1.6"),
        "main-safe": need_usd(deps["devnet"], main, blocks["devnet"], "1.6"),
    }
    # severity: the lower health factor first, served in full, the next one gets the rest
    alloc = d["allocation"]
    assert [a["position"] for a in alloc] == ["lean-safe", "main-safe"]
    assert alloc[0]["health_factor"] < alloc[1]["health_factor"]
    assert Decimal(alloc[0]["allocated_usd"]) == need["lean-safe"] < share
    assert Decimal(alloc[1]["allocated_usd"]) == min(need["main-safe"], share - need["lean-safe"])
    maxes = {a["position"]: Decimal(a["max_spend_usd"]) for a in d["actions"] if "position" in a}
    assert maxes == {a["position"]: Decimal(a["allocated_usd"]) for a in alloc}

    # each position proposed and simulated on its own chain's fork, named in its record
    protect = {r["position"]: r for r in rows if r["action"] != "option_put" and r.get("position")}
    assert set(protect) == {"lean-safe", "main-safe"}
    for name, chain_id, acct in (("main-safe", 31337, main), ("lean-safe", 31338, lean)):
        r = protect[name]
        assert r["status"] == "simulated", r.get("error")
        assert (r["chain_id"], r["account"]) == (chain_id, acct)
        sim = r["simulation"]
        assert sim["success"] and sim["health_factor_after"] >= 1.6 - 1e-9
        # the Safe file is for that chain: the owners of that chain's Safe sign it
        batch = json.loads(Path(r["safe_tx_builder_file"]).read_text())
        assert batch["chainId"] == str(chain_id)
    # the lean Safe holds nothing to top up with: a deleverage through devnet2's Uniswap
    assert protect["lean-safe"]["action"] == "deleverage"
    # the put ladder on the first chain's venue hedges both positions' collateral: a rung
    # capped by the exposure holds exactly both collaterals in WETH (lot 0.01), not one's
    puts = [r for r in rows if r["action"] == "option_put" and r["status"] == "simulated"]
    assert puts and {r["chain_id"] for r in puts} == {31337}
    capped = [r for r in puts if r["option"]["capped_by"] == "exposure"]
    assert capped, [r["option"] for r in puts]
    both = (
        account_data(deps["devnet"], main, blocks["devnet"])[0]
        + account_data(deps["devnet2"], lean, blocks["devnet2"])[0]
    )
    weth_price = oracle_price(
        deps["devnet"], deps["devnet"]["tokens"]["WETH"]["address"], blocks["devnet"]
    )
    lot = 10**16
    for r in capped:
        assert int(r["option"]["size"]) == both * 10**18 // weth_price // lot * lot
        assert int(r["simulation"]["option_long_after"]) == int(r["option"]["size"])
    # one ledger: everything proposed on both chains (and the advisory ticket) within one cap
    assert 0 < ledger_usd(cfg.parent / "one") <= Decimal(250_000)
    # proposals list names the chain and the position
    listing = cli("proposals", "list", "--config", str(cfg)).stdout
    assert "lean-safe" in listing and "main-safe" in listing


def test_the_cap_is_shared_across_chains_and_across_a_restart(two_chains: dict[str, Any]) -> None:
    """First the main Safe alone spends part of today's cap (chain devnet); then a NEW process
    with both positions: the lean Safe on devnet2 gets only what the cap still allows after
    the first run's spend, read from the persisted ledger."""
    deps = two_chains["deps"]
    budget = 200_000  # cap 50,000
    first = config(two_chains, "shared", budget=budget, positions="main")
    run_once(first)
    spent_before = ledger_usd(first.parent / "shared")
    assert 0 < spent_before < Decimal(50_000)
    both = config(two_chains, "shared", budget=budget)  # same store and journal
    events = run_once(both)
    d = decision_of(events)
    assert Decimal(d["session_spent_before_usd"]) == spent_before
    size = Decimal(d["size_fraction"])
    cap = Decimal(50_000)
    # the open-layer room (B less today's layers, still open) is not what binds here
    assert Decimal(d["budget_room_usd"]) > cap - spent_before
    layer = cents_down(min(cap - spent_before, cap * size))
    assert Decimal(d["layer_usd"]) == layer
    share = layer - cents_down(layer * Decimal("0.4"))
    rows = journal(both.parent / "shared")
    lean = deps["devnet2"]["safe_lean"]["address"]
    block = max(r["block_number"] for r in rows if r["chain"] == "devnet2")
    need = need_usd(deps["devnet2"], lean, block, "1.6")
    (action,) = [a for a in d["actions"] if a.get("position") == "lean-safe"]
    assert Decimal(action["max_spend_usd"]) == min(need, share) == share
    # the main Safe was proposed in the first process and is not proposed again
    assert not [a for a in d["actions"] if a.get("position") == "main-safe"]
    keys = [r["idempotency_key"] for r in rows]
    assert len(keys) == len(set(keys))
    assert ledger_usd(both.parent / "shared") <= cap
