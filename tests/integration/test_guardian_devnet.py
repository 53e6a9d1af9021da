"""The guardian account on the devnet (issue 23 item 1): a separately funded EOA, its key read the
way the daemon reads it (an environment variable), supplies WETH and repays USDC on behalf of the
devnet Safe with the transactions the planner drafts, signed with that key and sent raw; the
Safe's health factor moves by the hand-computed amount, and neither the Safe's wallet nor any Safe
signature is involved."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from agent.collectors.onchain import discover, read_snapshot
from agent.config import chain_config_from_deployment
from agent.core.abi import load_abi
from agent.core.rpc import RpcClient
from agent.core.units import BPS, WAD
from agent.devnet.chain import Chain
from agent.planner.guardian import with_guardian_wallet
from agent.planner.repay import plan_repay
from agent.planner.topup import plan_topup
from agent.sinks.guardian import GuardianConfig, load_guardian_key

pytestmark = pytest.mark.integration

# A fresh account no part of the devnet uses: it holds only what the test funds it with.
GUARDIAN_KEY = "0x" + "6a" * 32
GUARDIAN = "0xB763F1270693c8586184A5BEb6f3249640273fFE"
MINT_ABI = [
    {
        "name": "mint",
        "type": "function",
        "inputs": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "outputs": [],
        "stateMutability": "nonpayable",
    }
]


def _send_raw(chain: Chain, key: str, to: str, data: str) -> None:
    """Sign with the guardian's key and send, as an EOA does: no Safe, no impersonation."""
    nonce = int(chain.rpc("eth_getTransactionCount", [GUARDIAN, "pending"]), 16)
    tx = {
        "to": to,
        "data": data,
        "value": 0,
        "gas": 600_000,
        "gasPrice": 2 * int(chain.rpc("eth_gasPrice"), 16),
        "nonce": nonce,
        "chainId": chain.chain_id(),
    }
    signed = Account.sign_transaction(tx, key)
    h = chain.rpc("eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()])
    deadline = time.monotonic() + 30
    while (receipt := chain.rpc("eth_getTransactionReceipt", [h])) is None:
        assert time.monotonic() < deadline, f"{h} not mined"
        time.sleep(0.05)
    assert receipt is not None and int(receipt["status"], 16) == 1, receipt


def _fund(devnet: dict[str, Any], chain: Chain, tokens: dict[str, str]) -> None:
    chain.set_balance(GUARDIAN, 10**18)  # gas
    minter = devnet["accounts"]["deployer"]
    for sym, amount in (("WETH", 200 * 10**18), ("USDC", 500_000 * 10**6)):
        chain.send(chain.contract(tokens[sym], MINT_ABI), "mint", GUARDIAN, amount, sender=minter)


async def test_guardian_supply_and_repay_on_behalf_of_the_safe(
    devnet: dict[str, Any], devnet_chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVNET_GUARDIAN_KEY", GUARDIAN_KEY)
    key = load_guardian_key(GuardianConfig(account=GUARDIAN, key_env="DEVNET_GUARDIAN_KEY"))
    safe = devnet["safe"]["address"]
    tokens = {s: t["address"] for s, t in devnet["tokens"].items()}
    _fund(devnet, devnet_chain, tokens)
    cfg = chain_config_from_deployment(devnet, accounts=(safe, GUARDIAN))
    async with RpcClient(devnet["rpc_url"], source="rpc:devnet") as rpc:
        layout = await discover(rpc, cfg)
        snap = await read_snapshot(rpc, layout)
        before, g = snap.accounts[safe], snap.accounts[GUARDIAN]
        weth, usdc = layout.reserve("WETH"), layout.reserve("USDC")

        # -- top-up: approve + Pool.supply(WETH, amount, onBehalfOf=Safe, 0) ----------------
        target = before.health_factor_wad + WAD // 5  # +0.2
        # the one sizing path: the Safe's top-up with the guardian's wallet as its funding
        top = plan_topup(layout=layout, account_addr=safe,
                         account=with_guardian_wallet(before, g.wallet_balances,
                                                      g.pool_allowances),
                         asset=weth, reserve=snap.reserves["WETH"], target_hf_wad=target,
                         max_spend_base=None,
                         allowance=g.pool_allowances.get("WETH", 0))  # fmt: skip
        calls = [(t.decoded.method, t.decoded.args) for t in top.transactions]
        assert [m for m, _ in calls] == ["approve", "supply"]
        sup = calls[1][1]
        assert (sup["asset"].lower(), sup["onBehalfOf"].lower()) == (
            weth.asset.lower(),
            safe.lower(),
        )
        assert sup["referralCode"] == 0 and sup["amount"] == top.amount
        a = top.amount
        # Hand sizing: the collateral value x with (C*LT + x*LT_weth) / D = target * 1.001
        # (the top-up's 10 bps margin), in WETH at the oracle price.
        c, d = Decimal(before.total_collateral_base), Decimal(before.total_debt_base)
        lt, lt_w = (
            Decimal(before.liquidation_threshold_bps),
            Decimal(weth.liquidation_threshold_bps),
        )
        price_w = Decimal(snap.reserves["WETH"].price_base)
        x_base = (Decimal(target) * Decimal("1.001") / WAD * d - c * lt / BPS) * BPS / lt_w
        assert abs(Decimal(a) / 10**18 - x_base / price_w) < Decimal("1e-9")
        for t in top.transactions:
            _send_raw(devnet_chain, key.get_secret_value(), t.to, t.data)
        mid_snap = await read_snapshot(rpc, layout)
        mid = mid_snap.accounts[safe]
        # Hand HF after: the Safe's collateral grew by a * price (plus a few blocks' supply
        # interest on what it held: 1e-11 of it here); its debt did not move.
        added = Decimal(a) * price_w / 10**18
        assert abs(Decimal(mid.total_collateral_base) - (c + added)) < c * Decimal("1e-9")
        hf_hand = (c * lt / BPS + added * lt_w / BPS) / Decimal(mid.total_debt_base)
        assert abs(Decimal(mid.health_factor_wad) / WAD - hf_hand) < Decimal("1e-6")
        assert Decimal(mid.health_factor_wad) / WAD > Decimal(target) / WAD
        assert mid.wallet_balances == before.wallet_balances  # the Safe paid nothing
        assert mid_snap.accounts[GUARDIAN].wallet_balances["WETH"] == g.wallet_balances["WETH"] - a

        # -- repay: approve + Pool.repay(USDC, amount, 2, onBehalfOf=Safe) ------------------
        g2 = mid_snap.accounts[GUARDIAN]
        target2 = mid.health_factor_wad + WAD // 5
        rep = plan_repay(layout=layout, account_addr=safe,
                         account=with_guardian_wallet(mid, g2.wallet_balances,
                                                      g2.pool_allowances),
                         asset=usdc, reserve=mid_snap.reserves["USDC"], target_hf_wad=target2,
                         allowance=g2.pool_allowances.get("USDC", 0))  # fmt: skip
        calls = [(t.decoded.method, t.decoded.args) for t in rep.transactions]
        assert [m for m, _ in calls] == ["approve", "repay"]
        rp = calls[1][1]
        assert (rp["asset"].lower(), rp["onBehalfOf"].lower()) == (usdc.asset.lower(), safe.lower())
        assert rp["interestRateMode"] == 2 and rp["amount"] == rep.amount
        r = rep.amount
        c2, d2 = Decimal(mid.total_collateral_base), Decimal(mid.total_debt_base)
        lt2 = Decimal(mid.liquidation_threshold_bps)
        price_u = Decimal(mid_snap.reserves["USDC"].price_base)
        # Hand sizing: y = D - C*LT/H*, in USDC (plus the planner's accrual margin, cents).
        y_base = d2 - c2 * lt2 / BPS / (Decimal(target2) / WAD)
        assert abs(Decimal(r) / 10**6 - y_base / price_u) < Decimal("1")
        for t in rep.transactions:
            _send_raw(devnet_chain, key.get_secret_value(), t.to, t.data)
        end_snap = await read_snapshot(rpc, layout)
        after = end_snap.accounts[safe]
    repaid = Decimal(r) * price_u / 10**6
    # the debt fell by the repaid value (a few blocks of interest accrue meanwhile)
    assert abs(Decimal(after.total_debt_base) - (d2 - repaid)) < Decimal("0.0001") * d2
    hf2_hand = c2 * lt2 / BPS / Decimal(after.total_debt_base)
    assert abs(Decimal(after.health_factor_wad) / WAD - hf2_hand) < Decimal("1e-6")
    assert after.health_factor_wad >= target2
    assert after.health_factor_wad < target2 * 10_010 // 10_000  # sized, not over-repaid
    assert after.wallet_balances == before.wallet_balances
    assert end_snap.accounts[GUARDIAN].wallet_balances["USDC"] == g2.wallet_balances["USDC"] - r


def _config(devnet: dict[str, Any], tmp_path: Path) -> Path:
    from agent.devnet.deploy import write_deployment

    dep = tmp_path / "deployment.json"
    write_deployment(devnet, dep)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nstore_path = "{tmp_path}/agent.sqlite"\njournal_path = "{tmp_path}/p.jsonl"\n'
        f'[chain]\nname = "devnet"\ndeployment = "{dep}"\n'
        f'[sinks]\nsafe_tx_builder_dir = "{tmp_path}/stb"\n'
        "[collectors.defillama]\nenabled = false\n[collectors.hyperliquid]\nenabled = false\n"
        "[collectors.dydx]\nenabled = false\n[collectors.closes]\nenabled = false\n"
        f'[guardian]\naccount = "{GUARDIAN}"\nkey_env = "DEVNET_GUARDIAN_KEY"\n'
    )
    return config


def _by_hand(devnet: dict[str, Any], chain: Chain) -> tuple[int, int, Decimal]:
    """Guard actions the funded guardian covers, by hand from the Safe's debt and the oracle:
    the guard's defaults trigger 1.30, target 1.60; a USDC repay takes D * (1 - 1.3/1.6), a
    WETH top-up D * 0.3 / LT_weth. (repays, top-ups, the USDC price in base units)"""
    from agent.devnet.deploy import ASSETS

    tokens = {s: t["address"] for s, t in devnet["tokens"].items()}
    pool = chain.contract(devnet["aave"]["pool"], load_abi("Pool").abi)
    d = Decimal(chain.call(pool, "getUserAccountData", devnet["safe"]["address"])[1])
    oracle = chain.contract(devnet["aave"]["oracle"], load_abi("AaveOracle").abi)
    p_weth = Decimal(chain.call(oracle, "getAssetPrice", tokens["WETH"]))
    p_usdc = Decimal(chain.call(oracle, "getAssetPrice", tokens["USDC"]))
    lt_weth = Decimal(next(a.lt for a in ASSETS if a.symbol == "WETH"))
    # the repay planner's integer form of D * (1 - 1.3/1.6): collateral x LT at the trigger
    # floored to base units (as Aave's percentMul), then the largest debt at 1.6 floored
    repay_each = d - (d * 13 // 10) * 10 // 16
    top_each = -(-d * 3 * 10_000 // (10 * lt_weth))
    return int(500_000 * p_usdc // repay_each), int(200 * p_weth // top_each), p_usdc


async def test_the_daemon_gauges_and_their_refresh(
    devnet: dict[str, Any],
    devnet_chain: Chain,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent.config import load_settings
    from agent.ops.guardian import GuardianWatch, guarded_positions
    from agent.ops.telemetry import Telemetry
    from agent.pipeline.parts import build_parts

    _fund(devnet, devnet_chain, {s: t["address"] for s, t in devnet["tokens"].items()})
    monkeypatch.setenv("DEVNET_GUARDIAN_KEY", GUARDIAN_KEY)
    settings = load_settings(_config(devnet, tmp_path))
    (position,) = guarded_positions(build_parts(settings).positions)
    repays, tops, p_usdc = _by_hand(devnet, devnet_chain)
    now = [1000.0]
    t = Telemetry(tick_interval_s=5, error_budget=3)
    watch = GuardianWatch(t, clock=lambda: now[0])
    async with RpcClient(devnet["rpc_url"], source="rpc:devnet") as rpc:
        assert await watch.refresh(rpc, settings, position) is not None
        text = t.render().decode()
        # labelled by guardian and chain (and position): one set per guardian per chain
        who = f'chain="devnet",guardian="{GUARDIAN}"'
        covers = f'hedge_agent_guardian_actions_covered{{{who},position=""}}'
        assert f"{covers} {float(repays + tops)}" in text
        assert f"hedge_agent_guardian_gas_eth{{{who}}} 1.0" in text
        usdc = float(500_000 * p_usdc / 10**8)
        assert f'hedge_agent_guardian_balance_usd{{asset="USDC",{who}}} {usdc}' in text
        now[0] += 299  # within guardian.refresh_s (300): no read
        assert await watch.refresh(rpc, settings, position) is None
        now[0] += 1
        assert await watch.refresh(rpc, settings, position) is not None


def test_check_shows_the_balances_and_the_guard_actions_they_cover(
    devnet: dict[str, Any],
    devnet_chain: Chain,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agent.cli import main

    tokens = {s: t["address"] for s, t in devnet["tokens"].items()}
    _fund(devnet, devnet_chain, tokens)
    monkeypatch.setenv("DEVNET_GUARDIAN_KEY", GUARDIAN_KEY)
    config = _config(devnet, tmp_path)
    code = main(["check", "--config", str(config)])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0, out
    repays, tops, p_usdc = _by_hand(devnet, devnet_chain)
    assert repays >= 1 and tops >= 1
    head = f"guardian {GUARDIAN} for {devnet['safe']['address']}: {repays + tops} guard action(s)"
    assert out[0].startswith(head), out
    assert "gas 1.0000 ETH" in out[0]
    usd = f"{500_000 * p_usdc / 10**8:,.2f}"
    assert f"  500,000.000000 USDC (${usd}): covers {repays} repay(s) of $" in out[2], out
    assert "  200.000000 WETH (" in out[1] and f"covers {tops} top_up(s)" in out[1], out
    assert out[-1].startswith("ok: ")
