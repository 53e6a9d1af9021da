"""The repay alternative executed for real on the devnet, through the Safe (MultiSendCallOnly
batch, owner-executed), reaching HF >= target; and the comparison with a top-up."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from agent.collectors.onchain import discover, read_snapshot
from agent.config import chain_config_from_deployment
from agent.core.abi import load_abi
from agent.core.rpc import RpcClient
from agent.core.units import WAD
from agent.devnet.chain import Chain
from agent.devnet.deploy import health_factor
from agent.devnet.safe import Call, exec_batch, exec_transaction
from agent.planner.repay import choose_protection, plan_repay
from agent.planner.safe import build_safe_tx
from agent.planner.topup import plan_topup

pytestmark = pytest.mark.integration


chain_config = chain_config_from_deployment


async def test_repay_through_safe_reaches_target(
    devnet: dict[str, Any], devnet_chain: Chain
) -> None:
    safe = devnet["safe"]["address"]
    owner = devnet["safe"]["owners"][0]
    target = 2 * WAD  # the Safe sits at HF ~1.9 with 50k USDC spare: repaying ~$26k reaches 2.0
    async with RpcClient(devnet["rpc_url"], source="rpc:devnet") as rpc:
        layout = await discover(rpc, chain_config(devnet))
        snap = await read_snapshot(rpc, layout)
        account = snap.accounts[safe]
        usdc, weth = layout.reserve("USDC"), layout.reserve("WETH")
        assert account.health_factor_wad < target
        plan = plan_repay(layout=layout, account_addr=safe, account=account, asset=usdc,
                          reserve=snap.reserves["USDC"], target_hf_wad=target)  # fmt: skip
        assert plan.capped_by is None and plan.reaches_target
        assert [t.decoded.method for t in plan.transactions] == ["approve", "repay"]
        # Hand check of the size: y = D - C*LT/H*, in USDC at the oracle price (~$1).
        c, d = Decimal(account.total_collateral_base), Decimal(account.total_debt_base)
        y_usd = (d - c * account.liquidation_threshold_bps / 10_000 / 2) / 10**8
        assert abs(Decimal(plan.amount) / 10**6 - y_usd) < Decimal("0.5")  # accrual margin only
        top = plan_topup(layout=layout, account_addr=safe, account=account, asset=weth,
                         reserve=snap.reserves["WETH"], target_hf_wad=target, max_spend_base=None)  # fmt: skip
        chosen, cmp = choose_protection(top, plan)
        assert chosen is plan and cmp["chosen"] == "repay_debt"

        # Execute exactly what the owners would sign: one execTransaction of the batch.
        st = build_safe_tx(safe, devnet["safe"]["multisend_call_only"], plan.transactions)
        assert st.operation == 1
        devnet_chain.mine(30)  # some interest accrues before execution, as in real life
        exec_transaction(devnet_chain, safe, owner, st.to, bytes.fromhex(st.data[2:]),
                         operation=st.operation)  # fmt: skip
        after = (await read_snapshot(rpc, layout)).accounts[safe]
    assert after.health_factor_wad >= target
    assert after.health_factor_wad < target * 10_001 // 10_000  # sized, not over-repaid
    assert health_factor(devnet_chain, devnet, safe) >= 2
    assert after.wallet_balances["USDC"] == account.wallet_balances["USDC"] - plan.amount
    assert after.total_debt_base < account.total_debt_base


async def test_capped_repay_executes_and_loses_to_topup(
    devnet: dict[str, Any], devnet_chain: Chain
) -> None:
    """With only 1000 USDC in the Safe the repay is capped by the wallet: it still executes, but a
    WETH top-up that reaches the target is chosen."""
    safe, owner = devnet["safe"]["address"], devnet["safe"]["owners"][0]
    usdc_addr = devnet["tokens"]["USDC"]["address"]
    async with RpcClient(devnet["rpc_url"], source="rpc:devnet") as rpc:
        layout = await discover(rpc, chain_config(devnet))
        snap = await read_snapshot(rpc, layout)
        bal = snap.accounts[safe].wallet_balances["USDC"]
        keep = 1_000 * 10**6
        exec_batch(devnet_chain, safe, owner, devnet["safe"]["multisend_call_only"], [
            Call(usdc_addr, load_abi("ERC20").encode("transfer", owner, bal - keep)),
        ])  # fmt: skip
        snap = await read_snapshot(rpc, layout)
        account = snap.accounts[safe]
        target = 2 * WAD
        rep = plan_repay(layout=layout, account_addr=safe, account=account, asset=layout.reserve("USDC"),
                         reserve=snap.reserves["USDC"], target_hf_wad=target)  # fmt: skip
        top = plan_topup(layout=layout, account_addr=safe, account=account, asset=layout.reserve("WETH"),
                         reserve=snap.reserves["WETH"], target_hf_wad=target, max_spend_base=None)  # fmt: skip
        assert rep.capped_by == "wallet" and rep.amount == keep
        chosen, cmp = choose_protection(top, rep)
        assert chosen is top and [o["reaches_target"] for o in cmp["options"]] == [True, False]
        st = build_safe_tx(safe, devnet["safe"]["multisend_call_only"], rep.transactions)
        exec_transaction(devnet_chain, safe, owner, st.to, bytes.fromhex(st.data[2:]), operation=1)
        after = (await read_snapshot(rpc, layout)).accounts[safe]
    assert account.health_factor_wad < after.health_factor_wad < target
