"""Deleverage sizing against an independent model: a constant-product pool (x*y=k, 0.3% fee)
stands in for QuoterV2 (the integration tests use the real Uniswap V3 quoter), and the health
factor after each plan is recomputed here with Decimal arithmetic from the batch's own
calldata amounts."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from agent.core.errors import PlanningError
from agent.core.market import AccountState, MarketLayout, ReserveMeta, ReserveState
from agent.core.units import WAD
from agent.planner.deleverage import DeleveragePlan, plan_deleverage, plan_wallet_part
from agent.planner.repay import choose_protection
from agent.planner.tx import PlannedTx
from agent.planner.uniswap import UniswapVenue

POOL = "0x87870Bca3F3fD6335C3F4ce8392D69350B4fA4E2"
SAFE = "0x00000000000000000000000000000000000000Aa"
ROUTER = "0x68b3465833fb72A70ecDF485E0e4C7bD8665Fc45"
USDC = ReserveMeta("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "USDC", 6,
                   "0x98C23E9d8f34FEFb1B7BD6a91B7FF122F4e16F5c",
                   "0x72E95b8931767C79bA4EeE721354d6E99a61D004", 8000, 7700)  # fmt: skip
WETH = ReserveMeta("0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "WETH", 18,
                   "0x4d5F47FA6A74757f35C14fD3a6Ef8E3C9BC514E8",
                   "0x0000000000000000000000000000000000000001", 8250, 8000)  # fmt: skip
LAYOUT = MarketLayout("t", "aave-v3", POOL, POOL, POOL, (USDC, WETH), (SAFE,), {}, {}, {})
USDC_STATE = ReserveState(0, 0, 0, 0, 10**8)  # $1, no accrual
WETH_STATE = ReserveState(0, 0, 0, 0, 2000 * 10**8)  # $2000
VENUE = UniswapVenue(POOL, ROUTER, POOL, {"WETH": 3000})
FLOOR = 105 * WAD // 100


class CpPool:
    """x*y=k at $2000 with $20M per side; fee 0.3% on the input. A quote runs the batch's
    earlier swaps on the reserves first, as the chain would: each swap rounds down, so the
    difference of two cumulative quotes is not what a second swap pays."""

    def __init__(self) -> None:
        self.x = 10_000 * 10**18  # WETH
        self.y = 20_000_000 * 10**6  # USDC
        self.calls = 0

    @staticmethod
    def _swap(x: int, y: int, amount_in: int) -> tuple[int, int, int]:
        net = amount_in * 997 // 1000
        out = y * net // (x + net)
        return x + amount_in, y - out, out

    def after(self, earlier: Sequence[PlannedTx]) -> tuple[int, int]:
        x, y = self.x, self.y
        for t in earlier:
            if t.decoded.method == "exactInputSingle":
                x, y, _ = self._swap(x, y, int(t.decoded.args["params"]["amountIn"]))
        return x, y

    async def quote(self, earlier: Sequence[PlannedTx], amount_in: int) -> int:
        self.calls += 1
        x, y = self.after(earlier)
        return self._swap(x, y, amount_in)[2]

    async def cumulative(self, amount_in: int) -> int:
        return self._swap(self.x, self.y, amount_in)[2]


def account(weth: int, debt_usd: int) -> AccountState:
    c, d = weth * 2000 * 10**8, debt_usd * 10**8
    return AccountState(c, d, 0, 8250, 8000, c * 8250 * WAD // (d * 10_000), {}, {})


async def plan(acct: AccountState, target: int, pool: CpPool, **kw: Any) -> DeleveragePlan:
    return await plan_deleverage(
        pool.quote, layout=LAYOUT, venue=VENUE, account_addr=SAFE, account=acct,
        collateral=WETH, collateral_reserve=WETH_STATE,
        collateral_balance=kw.pop("balance", 10**30), debt=USDC, debt_reserve=USDC_STATE,
        target_hf_wad=target, hf_floor_wad=kw.pop("floor", FLOOR), slippage_bps=kw.pop("slippage", 50),
        accrual_margin_s=0, **kw,
    )  # fmt: skip


def hf_after(acct: AccountState, steps: list[tuple[int, int]]) -> list[tuple[Decimal, Decimal]]:
    """(mid, after) health factors per step from (withdraw wei, repay USDC units), by Decimal."""
    c = Decimal(acct.total_collateral_base) / 10**8
    d = Decimal(acct.total_debt_base) / 10**8
    out = []
    for w, r in steps:
        c -= Decimal(w) / 10**18 * 2000
        mid = c * Decimal("0.825") / d
        d -= Decimal(r) / 10**6
        out.append((mid, c * Decimal("0.825") / d))
    return out


def batch_steps(p: DeleveragePlan) -> list[tuple[int, int]]:
    w = [int(t.decoded.args["amount"]) for t in p.transactions if t.decoded.method == "withdraw"]
    r = [int(t.decoded.args["amount"]) for t in p.transactions if t.decoded.method == "repay"]
    return list(zip(w, r, strict=True))


async def test_single_step_reaches_target_and_no_more() -> None:
    acct = account(100, 120_000)  # $200k WETH, HF 1.375
    target = 16 * WAD // 10
    pool = CpPool()
    p = await plan(acct, target, pool)
    assert len(p.steps) == 1 and p.reaches_target
    assert [t.decoded.method for t in p.transactions] == [
        "withdraw", "approve", "exactInputSingle", "approve", "repay",
    ]  # fmt: skip
    ((mid, after),) = hf_after(acct, batch_steps(p))
    assert Decimal(target) / WAD <= after < Decimal(target) / WAD * Decimal("1.0001")
    assert mid >= Decimal("1.05")
    # Minimal: selling 1 bp less (with its own quote and minimum) misses the target.
    a = p.amount - p.amount // 10_000
    m = await pool.quote((), a) * 9950 // 10_000
    ((_, short),) = hf_after(acct, [(a, m)])
    assert short < Decimal(target) / WAD
    # amountOutMinimum is the quote less 50 bps, and it is what the repay pays.
    swap = p.transactions[2].decoded.args["params"]
    assert int(swap["amountOutMinimum"]) == await pool.quote((), p.amount) * 9950 // 10_000
    assert p.cost_base == p.value_base - p.repaid_base
    assert p.fee_base == -(-p.value_base * 3000 // 1_000_000)
    assert pool.calls < 40  # quote, then refine: a handful of quotes


async def test_loop_keeps_every_step_above_the_floor() -> None:
    acct = account(100, 160_000)  # HF 165000/160000 = 1.03125: below the floor
    with pytest.raises(PlanningError, match="at or below the floor"):
        await plan(acct, 16 * WAD // 10, CpPool())
    acct = account(100, 150_000)  # HF 1.10
    target = 16 * WAD // 10
    p = await plan(acct, target, CpPool())
    assert len(p.steps) >= 3 and p.reaches_target
    rows = hf_after(acct, batch_steps(p))
    assert all(mid >= Decimal("1.05") for mid, _ in rows)
    assert all(b[1] > a[1] for a, b in pairwise(rows))  # HF rises each step
    assert Decimal(target) / WAD <= rows[-1][1] < Decimal(target) / WAD * Decimal("1.0001")
    # Every step but the last withdraws to the floor (no smaller steps than needed).
    for mid, _ in rows[:-1]:
        assert mid < Decimal("1.0501")
    methods = [t.decoded.method for t in p.transactions]
    assert methods.count("approve") == 2  # once each, for the whole batch
    assert methods[:5] == ["withdraw", "approve", "exactInputSingle", "approve", "repay"]


async def test_allowances_already_granted_skip_the_approvals() -> None:
    acct = account(100, 120_000)
    acct = AccountState(**{**acct.__dict__, "pool_allowances": {"USDC": 10**30}})
    p = await plan(acct, 16 * WAD // 10, CpPool(), router_allowance=10**30)
    assert [t.decoded.method for t in p.transactions] == ["withdraw", "exactInputSingle", "repay"]


async def test_not_enough_collateral_is_capped_and_loses_the_choice() -> None:
    acct = account(100, 150_000)
    p = await plan(acct, 16 * WAD // 10, CpPool(), balance=5 * 10**18)
    assert p.capped_by == "collateral" and not p.reaches_target
    chosen, cmp = choose_protection(None, None, deleverage=p, target_hf_wad=16 * WAD // 10)
    assert chosen is p and "no plan reaches the target" in cmp["reason"]
    assert cmp["options"][0]["why_not"] is None


async def test_already_at_target_is_an_error() -> None:
    with pytest.raises(PlanningError, match="already at health factor"):
        await plan(account(100, 100_000), 16 * WAD // 10, CpPool())


def test_mainnet_example_names_the_canonical_uniswap_deployment() -> None:
    """Addresses as in shared interfaces.md section 13 (Uniswap V3 canonical Ethereum)."""
    from agent.config import load_settings

    root = Path(__file__).resolve().parents[2]
    s = load_settings(root / "config" / "mainnet.example.toml", resolve_deployment=False)
    assert s.uniswap.factory == "0x1F98431c8aD98523631AE4a59f267346ea31F984"
    assert s.uniswap.swap_router02 == "0x68b3465833fb72A70ecDF485E0e4C7bD8665Fc45"
    assert s.uniswap.quoter_v2 == "0x61fFE014bA17989E743c5F6cB21bF9697530B21e"
    assert s.uniswap.fees == {"WETH": 500, "WBTC": 3000}
    assert s.uniswap.hf_floor == Decimal("1.05")


async def test_later_steps_are_quoted_on_the_pool_the_earlier_swaps_leave() -> None:
    """At slippage 0 every step's amountOutMinimum is what its swap pays when the batch runs in
    order on the model pool (so no swap reverts); the difference of cumulative quotes, which the
    planner used to take, is above what the later swaps pay."""
    acct = account(100, 150_000)  # HF 1.10: a loop
    pool = CpPool()
    p = await plan(acct, 16 * WAD // 10, pool, slippage=0)
    assert len(p.steps) >= 3 and p.reaches_target
    x, y, cum = pool.x, pool.y, 0
    too_high = 0
    for s in p.steps:
        x, y, paid = CpPool._swap(x, y, s.withdraw)
        assert s.min_out == s.quote_out == paid  # the repay is exactly what the pool pays
        diff = await pool.cumulative(cum + s.withdraw) - await pool.cumulative(cum)
        too_high += diff > paid
        cum += s.withdraw
    assert too_high >= 1  # the old quote would have asked one of these swaps for too much
    assert p.swap_summary()["slippage_bound"] == "0"


async def test_the_proposal_states_what_the_slippage_bound_costs() -> None:
    acct = account(100, 120_000)
    p = await plan(acct, 16 * WAD // 10, CpPool(), slippage=3)
    sm = p.swap_summary()
    (s,) = p.steps
    assert s.min_out == s.quote_out * 9997 // 10_000
    assert sm["slippage_bound"] == str(s.quote_out - s.min_out)
    assert sm["slippage_bound_human"] == (s.quote_out - s.min_out) / 10**6
    assert 3.0 <= float(str(sm["slippage_bound_bps"])) < 3.001  # the bound rounds up
    assert sm["execution"] == "signers" and sm["plan"] == "deleverage"
    assert sm["wallet_first"] is None


async def test_wallet_first_repays_the_wallet_then_deleverages_the_rest() -> None:
    """Half the USDC the repay needs is in the wallet: the combined batch repays exactly the
    wallet, then sells only what the rest needs (computed here on the model pool by bisection on
    Decimal health factors), and loses about half what the full deleverage loses."""
    base = account(100, 120_000)  # $200k WETH at LT 82.5%, HF 1.375; to 1.6 repay $16,875
    full_need = 120_000 - Decimal(200_000) * Decimal("0.825") / Decimal("1.6")
    assert full_need == Decimal("16875")
    wallet = 8_437_500_000  # $8,437.50 USDC: half
    acct = AccountState(**{**base.__dict__, "wallet_balances": {"USDC": wallet}})
    target = 16 * WAD // 10
    part = plan_wallet_part(
        layout=LAYOUT, account_addr=SAFE, account=acct, collateral=WETH,
        collateral_reserve=WETH_STATE, debt=USDC, debt_reserve=USDC_STATE,
        target_hf_wad=target, max_spend_base=None, accrual_margin_s=0,
    )  # fmt: skip
    assert part.repay == wallet and part.supply == 0
    assert part.repay_base == 843_750_000_000
    assert [t.decoded.method for t in part.transactions] == ["approve", "repay"]
    pool = CpPool()
    combo = await plan(acct, target, pool, wallet=part)
    full = await plan(base, target, CpPool())
    assert combo.action == "repay+deleverage" and combo.reaches_target
    methods = [t.decoded.method for t in combo.transactions]
    assert methods == ["approve", "repay", "withdraw", "approve", "exactInputSingle", "approve",
                       "repay"]  # fmt: skip
    assert int(combo.transactions[1].decoded.args["amount"]) == wallet

    # Independent: the least WETH whose swap (less 50 bps) repays the rest to HF >= 1.6.
    def hf(a: int) -> Decimal:
        out = CpPool._swap(pool.x, pool.y, a)[2] * 9950 // 10_000
        c = Decimal(200_000) - Decimal(a) / 10**18 * 2000
        d = Decimal(120_000) - Decimal(wallet) / 10**6 - Decimal(out) / 10**6
        return c * Decimal("0.825") / d

    lo, hi = 0, 10 * 10**18
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if hf(mid) >= Decimal("1.6") else (mid, hi)
    assert hi <= combo.amount <= hi + hi // 10_000  # within 1 bp of the true minimum
    assert Decimal("1.6") <= hf(combo.amount) < Decimal("1.6") * Decimal("1.0001")
    # The combination sells about half as much and loses about half as much.
    assert 0.45 < combo.amount / full.amount < 0.55
    assert 0.45 < combo.cost_base / full.cost_base < 0.55
    chosen, cmp = choose_protection(
        None, None, deleverage=full, combined=combo, target_hf_wad=target
    )
    assert chosen is combo and cmp["chosen"] == "repay+deleverage"
    rows = {r["action"]: r for r in cmp["options"]}
    assert rows["repay+deleverage"]["value_lost_usd"] == combo.cost_base / 1e8
    assert rows["repay+deleverage"]["cost_usd"] == (combo.cost_base + part.value_base) / 1e8
    assert "loses" in rows["deleverage"]["why_not"]
    sm = combo.swap_summary()
    assert sm["plan"] == "repay+deleverage"
    assert sm["wallet_first"] == {
        "repay": str(wallet), "repay_human": 8437.5, "repay_usd": 8437.5,
        "supply": "0", "supply_human": 0.0, "supply_usd": 0.0,
    }  # fmt: skip


def test_wallet_part_refuses_when_the_wallet_alone_reaches_the_target() -> None:
    base = account(100, 120_000)
    acct = AccountState(**{**base.__dict__, "wallet_balances": {"USDC": 20_000 * 10**6}})
    with pytest.raises(PlanningError, match="alone reaches the target"):
        plan_wallet_part(
            layout=LAYOUT, account_addr=SAFE, account=acct, collateral=WETH,
            collateral_reserve=WETH_STATE, debt=USDC, debt_reserve=USDC_STATE,
            target_hf_wad=16 * WAD // 10, max_spend_base=None, accrual_margin_s=0,
        )  # fmt: skip
    with pytest.raises(PlanningError, match="holds no USDC or WETH"):
        plan_wallet_part(
            layout=LAYOUT, account_addr=SAFE, account=base, collateral=WETH,
            collateral_reserve=WETH_STATE, debt=USDC, debt_reserve=USDC_STATE,
            target_hf_wad=16 * WAD // 10, max_spend_base=None, accrual_margin_s=0,
        )  # fmt: skip


async def test_a_swap_paying_anyone_but_the_account_is_refused() -> None:
    """The planner's own check on the batch it built: every exactInputSingle pays the account."""
    from agent.planner import deleverage as dl

    p = await plan(account(100, 120_000), 16 * WAD // 10, CpPool())
    dl._check_swap_recipients(p.transactions, SAFE)
    with pytest.raises(PlanningError, match=r"swap recipient 0x\w+ is not the account"):
        dl._check_swap_recipients(p.transactions, ROUTER)


async def test_render_states_the_bound_cost_and_the_wallet_part() -> None:
    from agent.sinks.render import render_proposal

    base = account(100, 120_000)
    acct = AccountState(**{**base.__dict__, "wallet_balances": {"USDC": 8_437_500_000}})
    part = plan_wallet_part(
        layout=LAYOUT, account_addr=SAFE, account=acct, collateral=WETH,
        collateral_reserve=WETH_STATE, debt=USDC, debt_reserve=USDC_STATE,
        target_hf_wad=16 * WAD // 10, max_spend_base=None, accrual_margin_s=0,
    )  # fmt: skip
    combo = await plan(acct, 16 * WAD // 10, CpPool(), wallet=part)
    rec: dict[str, Any] = {
        "id": "a1", "idempotency_key": "k", "created_at": "2026-05-01T12:00:00+00:00",
        "chain": "t", "chain_id": 1, "account": SAFE, "action": "deleverage",
        "status": "simulated", "sizing": {},
        "transactions": [t.as_dict() for t in combo.transactions],
        "deleverage": combo.swap_summary(),
    }  # fmt: skip
    text = render_proposal(rec)
    bound = (combo.quote_out - combo.min_out) / 10**6
    assert f"slippage bound for signers execution: {bound:,.6f} USDC of the quote" in text
    assert "wallet first (repay+deleverage): repay 8,437.500000 ($8,437.50)" in text


async def test_wallet_first_supplies_the_wallets_collateral_then_deleverages_the_rest() -> None:
    """8 WETH in the wallet, about half the $32,727 top-up that HF 1.6 needs: the batch supplies
    exactly those 8 WETH, then sells only what the rest needs (bisection on Decimal HFs here)."""
    base = account(100, 120_000)
    wallet = 8 * 10**18
    acct = AccountState(**{**base.__dict__, "wallet_balances": {"WETH": wallet}})
    target = 16 * WAD // 10
    part = plan_wallet_part(
        layout=LAYOUT, account_addr=SAFE, account=acct, collateral=WETH,
        collateral_reserve=WETH_STATE, debt=USDC, debt_reserve=USDC_STATE,
        target_hf_wad=target, max_spend_base=None, accrual_margin_s=0,
    )  # fmt: skip
    assert (part.repay, part.supply, part.supply_base) == (0, wallet, 16_000 * 10**8)
    pool = CpPool()
    combo = await plan(acct, target, pool, wallet=part)
    assert combo.action == "top_up+deleverage" and combo.capital_base == 16_000 * 10**8
    assert [t.decoded.method for t in combo.transactions] == [
        "approve", "supply", "withdraw", "approve", "exactInputSingle", "approve", "repay",
    ]  # fmt: skip
    assert int(combo.transactions[1].decoded.args["amount"]) == wallet

    def hf(a: int) -> Decimal:
        out = CpPool._swap(pool.x, pool.y, a)[2] * 9950 // 10_000
        c = Decimal(216_000) - Decimal(a) / 10**18 * 2000
        return c * Decimal("0.825") / (Decimal(120_000) - Decimal(out) / 10**6)

    lo, hi = 0, 20 * 10**18
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if hf(mid) >= Decimal("1.6") else (mid, hi)
    assert hi <= combo.amount <= hi + hi // 10_000
    assert Decimal("1.6") <= hf(combo.amount) < Decimal("1.6") * Decimal("1.0001")
    assert combo.steps[0].hf_mid_wad >= FLOOR


async def test_a_reader_without_eth_simulate_cannot_quote_a_later_step() -> None:
    """A later step needs ``eth_simulateV1`` on the reader (the fork has it). An RPC without it
    (a real local JSON-RPC server answering -32601, as nodes do for an unknown method) is a
    planning error naming the method and the reader, not a quote of the wrong pool state."""
    from aiohttp import web

    from agent.core.rpc import RpcClient
    from agent.planner.deleverage import onchain_quoter

    seen: list[str] = []

    async def handle(req: web.Request) -> web.Response:
        body = await req.json()
        seen.append(body["method"])
        err = {"code": -32601, "message": f"the method {body['method']} does not exist"}
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "error": err})

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        earlier = (await plan(account(100, 120_000), 16 * WAD // 10, CpPool())).transactions
        async with RpcClient(url, source="rpc:plain") as rpc:
            quote = onchain_quoter(rpc, VENUE, SAFE, WETH, USDC)
            with pytest.raises(PlanningError, match=r"eth_simulateV1 failed on rpc:plain"):
                await quote(earlier, 10**18)
    finally:
        await runner.cleanup()
    assert seen == ["eth_simulateV1"]


async def test_a_planner_bug_paying_the_router_is_refused_by_the_batch_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deliberate bug of issue 24 item 11: the swap's recipient written as the router. The
    planner's own assertion on the decoded batch refuses it (no repay has to revert)."""
    from agent.planner import deleverage as dl

    real = dl.call_tx

    def buggy(contract: str, to: str, fn: str, *args: Any, **kw: Any) -> PlannedTx:
        if fn == "exactInputSingle":
            p = list(args[0])
            p[3] = ROUTER  # recipient
            args = (tuple(p),)
        return real(contract, to, fn, *args, **kw)

    monkeypatch.setattr(dl, "call_tx", buggy)
    with pytest.raises(PlanningError, match=f"swap recipient {ROUTER} is not the account"):
        await plan(account(100, 120_000), 16 * WAD // 10, CpPool())


async def test_every_call_credits_the_account_with_variable_rate_mode() -> None:
    """Withdraw to the account, swap proceeds to the account, repay the amountOutMinimum of
    variable debt (rate mode 2) on behalf of the account (mutation audit: wrong recipient,
    wrong onBehalfOf, wrong rate mode)."""
    from eth_utils.address import to_checksum_address

    p = await plan(account(100, 120_000), 16 * WAD // 10, CpPool())
    withdraw, _, swap, approve, repay = p.transactions
    acct = to_checksum_address(SAFE)
    assert list(withdraw.decoded.args.values()) == [to_checksum_address(WETH.asset), p.amount, acct]
    params = swap.decoded.args["params"]
    assert to_checksum_address(str(params["recipient"])) == acct
    assert int(params["amountIn"]) == p.amount
    m = int(params["amountOutMinimum"])
    assert repay.to == POOL
    assert list(repay.decoded.args.values()) == [to_checksum_address(USDC.asset), m, 2, acct]
    assert list(approve.decoded.args.values()) == [POOL, m]


async def test_the_ledger_counts_a_combined_plans_wallet_capital_and_its_deleverages_cost() -> None:
    """What the session cap is charged: a pure deleverage its cost (fee + impact + slippage
    bound), a combined plan the wallet's capital PLUS its deleverage's cost, a top-up or repay
    its value (mutation audit: a spend left out of the ledger)."""
    from agent.planner.draft import spend_base

    base = account(100, 120_000)
    wallet = 8 * 10**18
    acct = AccountState(**{**base.__dict__, "wallet_balances": {"WETH": wallet}})
    target = 16 * WAD // 10
    part = plan_wallet_part(
        layout=LAYOUT, account_addr=SAFE, account=acct, collateral=WETH,
        collateral_reserve=WETH_STATE, debt=USDC, debt_reserve=USDC_STATE,
        target_hf_wad=target, max_spend_base=None, accrual_margin_s=0,
    )  # fmt: skip
    combo = await plan(acct, target, CpPool(), wallet=part)
    assert combo.cost_base > 0
    assert spend_base(combo) == 16_000 * 10**8 + combo.cost_base  # 8 WETH at $2000 + the cost
    pure = await plan(base, target, CpPool())
    assert spend_base(pure) == pure.cost_base == pure.value_base - pure.repaid_base
