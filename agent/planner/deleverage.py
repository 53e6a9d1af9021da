"""Deleverage with the position's own collateral: withdraw collateral from Aave, swap it for the
debt asset on Uniswap V3 (SwapRouter02 ``exactInputSingle``), repay. No flash loan and no helper
contract: one ``MultiSendCallOnly`` batch the Safe's owners can read call by call.

Per step: ``withdraw(collateral, a, safe)`` → ``exactInputSingle(collateral → debt, amountIn a,
amountOutMinimum m)`` → ``repay(debt, m, 2, safe)``. The repay amount is the swap's
``amountOutMinimum``: the batch is fixed calldata, so it can only repay what the swap is
guaranteed to return; whatever the swap returns above ``m`` (at most the slippage bound) stays in
the Safe's wallet. ``approve`` to the router and to the pool come once, before their first use,
and only when the allowance is short.

Sizing is exact integer math on Aave's units. With ``W = C * LT_avg`` (base x bps) and debt
``D``, withdrawing collateral worth ``x`` (threshold ``LT_a``) and repaying debt worth ``y``
gives ``HF' = (W - x * LT_a) / (BPS * (D - y))``. ``y`` comes from QuoterV2 (fee and price
impact included) less the slippage bound, so the step is solved with the ratio ``r = y / x`` of a
guess, re-quoted, and solved again until the amount stops moving (quote, then refine); the
last amount is then checked against the target with its own quote and nudged up if short.

Loop: the withdrawal lands before its repay, so HF first falls to ``(W - x * LT_a) / D``. When
reaching the target in one step would take that below ``hf_floor``, each step withdraws only
what keeps it at the floor, swaps and repays, and the next step starts from the improved
position, all in the same batch. Each step is quoted on its own amount against the pool as the
batch's earlier calls leave it (``eth_simulateV1``: the earlier calls run as the Safe, then
QuoterV2). The difference of two cumulative quotes is not what the pool pays: a swap split in
two rounds down twice, so ``quote(A_k) - quote(A_{k-1})`` can be a unit above the second
swap's output, and with ``slippage_bps = 0`` that step reverts ("Too little received").

Slippage bound: a batch that waits for its signers executes hours later and needs room for the
pool to move (``[uniswap] slippage_bps``, 50 by default); a batch executed at once (autonomous
execution) only needs room for the block it lands in (``immediate_slippage_bps``, 3 by
default). The bound is what the repay gives up: the collateral sold grows by about
``H / (H - LT)`` times the bound (about 2x at HF 1.6), so the proposal states it in the debt
asset and in bps.

Wallet first (:func:`plan_wallet_part`, then ``plan_deleverage(wallet=...)``): what the Safe's
wallet holds of the debt asset is repaid first, and of the collateral supplied, in the same
batch; the deleverage sells only what the rest of the target needs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from agent.core.abi import load_abi
from agent.core.errors import PlanningError, RpcError
from agent.core.market import AccountState, MarketLayout, ReserveMeta, ReserveState
from agent.core.rpc import RpcClient
from agent.core.units import AAVE_BASE_UNIT_USD, BPS, WAD, token_to_float
from agent.planner.repay import (
    DEFAULT_ACCRUAL_MARGIN_S,
    VARIABLE_RATE_MODE,
    plan_repay,
    projected_debt_base,
)
from agent.planner.topup import plan_topup
from agent.planner.tx import PlannedTx, approve_if_short, call_tx
from agent.planner.uniswap import FEE_UNITS, UniswapVenue, quote_exact_input_single

MAX_STEPS = 12
MAX_REFINE = 12

# (the batch's earlier calls, executed as the account first; amount_in in collateral units)
# -> amount_out (debt units) QuoterV2 returns on the pool as those calls leave it.
QuoteFn = Callable[[Sequence[PlannedTx], int], Awaitable[int]]
Execution = Literal["signers", "immediate"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class DeleverageStep:
    withdraw: int  # collateral token units (also the swap's amountIn)
    withdraw_value_base: int
    quote_out: int  # debt token units QuoterV2 returns for this swap
    min_out: int  # amountOutMinimum == the repay amount
    repay_value_base: int
    hf_mid_wad: int  # after the withdrawal, before the repay
    hf_after_wad: int


@dataclass(frozen=True)
class WalletPart:
    """What a combined plan takes from the Safe's wallet before it deleverages: a repay of the
    debt asset and/or a supply of the collateral, the first calls of the batch."""

    repay: int = 0  # debt token units repaid from the wallet
    repay_base: int = 0
    supply: int = 0  # collateral token units supplied from the wallet
    supply_base: int = 0
    transactions: tuple[PlannedTx, ...] = ()

    @property
    def value_base(self) -> int:
        """Capital committed from the wallet (oracle value)."""
        return self.repay_base + self.supply_base


@dataclass(frozen=True)
class DeleveragePlan:
    account: str
    asset: ReserveMeta  # the collateral sold
    debt_asset: ReserveMeta
    fee: int  # Uniswap fee tier (hundredths of a bip)
    steps: tuple[DeleverageStep, ...]
    needed_value_base: int  # debt value to repay for the target (single step, before slippage)
    capped_by: str | None  # "floor_steps" | "collateral" | None
    hf_before_wad: int
    hf_expected_wad: int
    target_hf_wad: int
    hf_floor_wad: int
    slippage_bps: int
    oracle_price_wad: int  # collateral price in the debt asset (oracle), whole tokens, wad
    debt_price_base: int
    transactions: tuple[PlannedTx, ...]
    execution: Execution = "signers"
    wallet: WalletPart | None = None  # a combined plan: the wallet's part, before the steps

    @property
    def action(self) -> str:
        """The comparison's name for this plan: ``deleverage`` or, with the wallet first,
        ``repay+deleverage`` / ``top_up+deleverage`` / ``repay+top_up+deleverage``."""
        w = self.wallet
        if w is None:
            return "deleverage"
        parts = [n for n, v in (("repay", w.repay), ("top_up", w.supply)) if v]
        return "+".join([*parts, "deleverage"])

    @property
    def capital_base(self) -> int:
        """Capital committed from the wallet (0 for a pure deleverage)."""
        return 0 if self.wallet is None else self.wallet.value_base

    @property
    def amount(self) -> int:
        return sum(s.withdraw for s in self.steps)

    @property
    def quote_out(self) -> int:
        return sum(s.quote_out for s in self.steps)

    @property
    def min_out(self) -> int:
        return sum(s.min_out for s in self.steps)

    @property
    def value_base(self) -> int:
        """The collateral's oracle value (what the position gives up, at market)."""
        return sum(s.withdraw_value_base for s in self.steps)

    @property
    def repaid_base(self) -> int:
        return sum(s.repay_value_base for s in self.steps)

    @property
    def fee_base(self) -> int:
        return _ceil_div(self.value_base * self.fee, FEE_UNITS)

    @property
    def quote_value_base(self) -> int:
        return int(self.quote_out * self.debt_price_base // 10**self.debt_asset.decimals)

    @property
    def impact_base(self) -> int:
        """Value lost to price impact against the oracle, beyond the pool fee."""
        return max(0, self.value_base - self.fee_base - self.quote_value_base)

    @property
    def slippage_base(self) -> int:
        return max(0, self.quote_value_base - self.repaid_base)

    @property
    def slippage_bound(self) -> int:
        """Debt token units the slippage bound gives up: quoted minus what the batch repays."""
        return self.quote_out - self.min_out

    @property
    def cost_base(self) -> int:
        """Fee + price impact + slippage bound: the most the deleverage can lose at market."""
        return self.fee_base + self.impact_base + self.slippage_base

    @property
    def execution_price_wad(self) -> int:
        """Quoted debt per collateral, whole tokens (wad)."""
        return int(
            self.quote_out
            * 10**self.asset.decimals
            * WAD
            // (self.amount * 10**self.debt_asset.decimals)
        )

    @property
    def value_usd(self) -> float:
        return self.value_base / AAVE_BASE_UNIT_USD

    @property
    def reaches_target(self) -> bool:
        return self.capped_by is None and self.hf_expected_wad >= self.target_hf_wad

    def swap_summary(self) -> dict[str, object]:
        """JSON-ready evidence of the swap for the proposal."""
        dd, dc = self.debt_asset.decimals, self.asset.decimals
        oracle = self.oracle_price_wad / WAD
        execp = self.execution_price_wad / WAD
        wallet: dict[str, Any] | None = None
        if self.wallet is not None:
            w = self.wallet
            wallet = {
                "repay": str(w.repay),
                "repay_human": token_to_float(w.repay, dd),
                "repay_usd": w.repay_base / AAVE_BASE_UNIT_USD,
                "supply": str(w.supply),
                "supply_human": token_to_float(w.supply, dc),
                "supply_usd": w.supply_base / AAVE_BASE_UNIT_USD,
            }
        return {
            "plan": self.action,
            "wallet_first": wallet,
            "execution": self.execution,
            "venue": "uniswap-v3",
            "pair": f"{self.asset.symbol}/{self.debt_asset.symbol}",
            "fee_tier": self.fee,
            "steps": len(self.steps),
            "amount_in": str(self.amount),
            "amount_in_human": token_to_float(self.amount, dc),
            "quote_out": str(self.quote_out),
            "amount_out_minimum": str(self.min_out),
            "amount_out_minimum_human": token_to_float(self.min_out, dd),
            "slippage_bps": self.slippage_bps,
            # What the bound costs: quoted output the repay gives up (it stays in the wallet
            # when the pool does not move), in the debt asset and in bps of the quote.
            "slippage_bound": str(self.slippage_bound),
            "slippage_bound_human": token_to_float(self.slippage_bound, dd),
            "slippage_bound_bps": self.slippage_bound * 10_000 / self.quote_out
            if self.quote_out
            else None,
            "oracle_price": oracle,
            "quoted_price": execp,
            "price_vs_oracle_bps": (1 - execp / oracle) * 10_000 if oracle else None,
            "fee_usd": self.fee_base / AAVE_BASE_UNIT_USD,
            "price_impact_usd": self.impact_base / AAVE_BASE_UNIT_USD,
            "price_impact_bps": self.impact_base * 10_000 / self.value_base
            if self.value_base
            else None,
            "slippage_bound_usd": self.slippage_base / AAVE_BASE_UNIT_USD,
            "cost_usd": self.cost_base / AAVE_BASE_UNIT_USD,
            "hf_floor": self.hf_floor_wad / WAD,
            "per_step": [
                {
                    "withdraw": str(s.withdraw),
                    "quote_out": str(s.quote_out),
                    "amount_out_minimum": str(s.min_out),
                    "health_factor_mid": s.hf_mid_wad / WAD,
                    "health_factor_after": s.hf_after_wad / WAD,
                }
                for s in self.steps
            ],
        }


@dataclass(frozen=True)
class _Position:
    weighted: int  # C * LT_avg, base x bps
    debt: int  # base

    def hf(self) -> int:
        if self.debt <= 0:
            return 2**256 - 1
        return self.weighted * WAD // (BPS * self.debt)


def _min_out(quote: int, slippage_bps: int) -> int:
    return quote * (BPS - slippage_bps) // BPS


def _solve_x(pos: _Position, lt_bps: int, target: int, r_num: int, r_den: int) -> int:
    """Smallest collateral value x (base) with (W - x LT) >= H* BPS (D - r x) / WAD."""
    need = target * BPS * pos.debt - pos.weighted * WAD  # base x bps x wad
    if need <= 0:
        return 0
    slope = target * BPS * r_num - lt_bps * WAD * r_den
    if slope <= 0:
        raise PlanningError(
            "the swap returns too little per unit of collateral for a deleverage to raise the"
            " health factor (price impact too high for this size)"
        )
    return _ceil_div(need * r_den, slope)


def _max_x_at_floor(pos: _Position, lt_bps: int, floor: int) -> int:
    """Largest collateral value x (base) whose withdrawal keeps HF >= floor before the repay."""
    room = pos.weighted * WAD - floor * BPS * pos.debt
    return max(0, room // (lt_bps * WAD))


async def plan_deleverage(
    quote: QuoteFn,
    *,
    layout: MarketLayout,
    venue: UniswapVenue,
    account_addr: str,
    account: AccountState,
    collateral: ReserveMeta,
    collateral_reserve: ReserveState,
    collateral_balance: int,
    debt: ReserveMeta,
    debt_reserve: ReserveState,
    target_hf_wad: int,
    hf_floor_wad: int,
    slippage_bps: int,
    router_allowance: int = 0,
    pool_allowance: int | None = None,
    accrual_margin_s: int = DEFAULT_ACCRUAL_MARGIN_S,
    execution: Execution = "signers",
    wallet: WalletPart | None = None,
) -> DeleveragePlan:
    """Plan the deleverage batch. ``quote(earlier_calls, amount_in)`` returns QuoterV2's
    amountOut for selling ``amount_in`` of collateral on the pool as the batch's earlier calls
    (executed as the account) leave it; the caller binds the pool.

    ``wallet`` (a combined plan) is the wallet's part: its calls open the batch, and its repay
    and supply count in the position the steps start from."""
    if account.total_debt_base == 0:
        raise PlanningError(f"{account_addr} has no debt to repay")
    fee = venue.fees.get(collateral.symbol)
    if fee is None:
        raise PlanningError(f"no Uniswap V3 fee tier configured for {collateral.symbol}")
    pc, pd = collateral_reserve.price_base, debt_reserve.price_base
    if pc <= 0 or pd <= 0:
        raise PlanningError("oracle price is not positive")
    dc, dd, lt = collateral.decimals, debt.decimals, collateral.liquidation_threshold_bps
    debt_now = projected_debt_base(
        account.total_debt_base, debt_reserve.variable_borrow_rate_ray, accrual_margin_s
    )
    prefix: tuple[PlannedTx, ...] = () if wallet is None else wallet.transactions
    pos = _Position(
        account.total_collateral_base * account.liquidation_threshold_bps
        + (0 if wallet is None else wallet.supply_base * lt),
        debt_now - (0 if wallet is None else wallet.repay_base),
    )
    if pos.hf() >= target_hf_wad:
        raise PlanningError(
            f"{account_addr} already at health factor {pos.hf() / WAD:.3f} >= target"
            + (" with the wallet's part" if wallet is not None else "")
        )
    if pos.hf() <= hf_floor_wad:
        raise PlanningError(
            f"{account_addr} health factor {pos.hf() / WAD:.4f} is at or below the floor"
            f" {hf_floor_wad / WAD:.4f}: no withdrawal fits without a flash loan"
        )

    def value(a: int) -> int:  # collateral units -> base (Aave floors)
        return int(a * pc // 10**dc)

    def units(x: int) -> int:  # base -> collateral units, rounded up
        return _ceil_div(x * 10**dc, pc)

    def debt_value(b: int) -> int:
        return int(b * pd // 10**dd)

    def c_human(a: int) -> str:
        return f"{token_to_float(a, dc):.8f} {collateral.symbol}"

    def d_human(b: int) -> str:
        return f"{token_to_float(b, dd):.6f} {debt.symbol}"

    def step_calls(a: int, m: int, hf_mid: int, hf_after: int, tag: str) -> list[PlannedTx]:
        """A step's withdraw, swap and repay (the approvals are added once, below)."""
        return [
            call_tx(
                "Pool", layout.pool, "withdraw", collateral.asset, a, account_addr,
                human=f"{tag}withdraw {c_human(a)} of collateral from Aave V3"
                f" (HF {hf_mid / WAD:.4f} until the repay)",
            ),
            call_tx(
                "SwapRouter02", venue.swap_router02, "exactInputSingle",
                (collateral.asset, debt.asset, fee, account_addr, a, m, 0),
                human=f"{tag}swap {c_human(a)} for at least {d_human(m)}"
                f" on Uniswap V3 ({fee / 10_000:.2f}% pool)",
            ),
            call_tx(
                "Pool", layout.pool, "repay", debt.asset, m, VARIABLE_RATE_MODE, account_addr,
                human=f"{tag}repay {d_human(m)} of variable debt for {account_addr}"
                f" (HF {hf_after / WAD:.4f})",
            ),
        ]  # fmt: skip

    def approve(token: str, spender: str, amount: int) -> PlannedTx:
        return call_tx("ERC20", token, "approve", spender, amount, human="(simulation only)")

    # The calls that run before the step being quoted, as the quote's simulation executes them:
    # the wallet's part, then every earlier step with exact approvals.
    earlier: list[PlannedTx] = list(prefix)
    cache: dict[tuple[int, int], int] = {}

    async def step_out(a: int) -> tuple[int, int]:
        """(quote, min_out) for selling ``a`` after the batch's earlier calls."""
        key = (len(earlier), a)
        if key not in cache:
            cache[key] = await quote(tuple(earlier), a)
        out = cache[key]
        return out, _min_out(out, slippage_bps)

    def after(p: _Position, a: int, m: int) -> _Position:
        return _Position(p.weighted - value(a) * lt, p.debt - debt_value(m))

    needed_single = _solve_x(pos, lt, target_hf_wad, 1, 1)  # at the oracle, no fee
    steps: list[DeleverageStep] = []
    done = 0
    capped: str | None = None
    # Oracle ratio with the pool fee and the slippage bound: the first guess for r = y / x.
    r_num = (FEE_UNITS - fee) * (BPS - slippage_bps)
    r_den = FEE_UNITS * BPS
    while pos.hf() < target_hf_wad:
        if len(steps) == MAX_STEPS:
            capped = "floor_steps"
            break
        left = collateral_balance - done
        x_floor = _max_x_at_floor(pos, lt, hf_floor_wad)
        a_floor = min(x_floor * 10**dc // pc, left)  # rounded down: stays above the floor
        a = 0
        for _ in range(MAX_REFINE):
            x = _solve_x(pos, lt, target_hf_wad, r_num, r_den)
            nxt = min(units(x), a_floor)
            if nxt <= 0:
                break
            out, m = await step_out(nxt)
            if m <= 0:
                raise PlanningError(f"QuoterV2 returns nothing for {nxt} {collateral.symbol}")
            # The realised ratio of this size (fee, impact and slippage bound included).
            r_num, r_den = debt_value(m), value(nxt)
            if nxt == a:
                break
            a = nxt
        if a <= 0:
            capped = "collateral" if left <= 0 else "floor_steps"
            break
        out, m = await step_out(a)
        nudges = 0
        while after(pos, a, m).hf() < target_hf_wad and a < a_floor and nudges < 64:
            a = min(a_floor, a + max(1, a // 10_000))  # +1 bp, until the quote reaches the target
            out, m = await step_out(a)
            nudges += 1
        mid = _Position(pos.weighted - value(a) * lt, pos.debt).hf()
        nxt_pos = after(pos, a, m)
        if nxt_pos.hf() <= pos.hf():
            raise PlanningError(
                "a deleverage step would not raise the health factor (swap returns too little)"
            )
        steps.append(
            DeleverageStep(
                withdraw=a,
                withdraw_value_base=value(a),
                quote_out=out,
                min_out=m,
                repay_value_base=debt_value(m),
                hf_mid_wad=mid,
                hf_after_wad=nxt_pos.hf(),
            )
        )
        w, s, r = step_calls(a, m, mid, nxt_pos.hf(), "")
        earlier += [w, approve(collateral.asset, venue.swap_router02, a), s]
        earlier += [approve(debt.asset, layout.pool, m), r]
        done += a
        pos = nxt_pos
        if a >= left and pos.hf() < target_hf_wad:
            capped = "collateral"
            break
    if not steps:
        raise PlanningError(
            f"{account_addr}: no {collateral.symbol} withdrawal fits above the floor"
            f" {hf_floor_wad / WAD:.4f}"
        )
    total_in = sum(s.withdraw for s in steps)
    total_min = sum(s.min_out for s in steps)
    pool_allowance = (
        account.pool_allowances.get(debt.symbol, 0) if pool_allowance is None else pool_allowance
    )
    txs: list[PlannedTx] = list(prefix)
    for i, st in enumerate(steps, 1):
        tag = f"step {i}/{len(steps)}: " if len(steps) > 1 else ""
        w, s, r = step_calls(st.withdraw, st.min_out, st.hf_mid_wad, st.hf_after_wad, tag)
        s = replace(s, human=s.human[:-1] + f"; quoted {d_human(st.quote_out)})")
        txs.append(w)
        if i == 1:
            txs += approve_if_short(
                collateral.asset,
                venue.swap_router02,
                total_in,
                router_allowance,
                human=f"approve SwapRouter02 to pull {c_human(total_in)}",
            )
        txs.append(s)
        if i == 1:
            txs += approve_if_short(
                debt.asset,
                layout.pool,
                total_min,
                pool_allowance,
                human=f"approve Aave V3 Pool to pull {d_human(total_min)}",
            )
        txs.append(r)
    _check_swap_recipients(txs, account_addr)
    oracle_price_wad = pc * WAD // pd
    return DeleveragePlan(
        account=account_addr,
        asset=collateral,
        debt_asset=debt,
        fee=fee,
        steps=tuple(steps),
        needed_value_base=needed_single,
        capped_by=capped,
        hf_before_wad=account.health_factor_wad,
        hf_expected_wad=pos.hf(),
        target_hf_wad=target_hf_wad,
        hf_floor_wad=hf_floor_wad,
        slippage_bps=slippage_bps,
        oracle_price_wad=oracle_price_wad,
        debt_price_base=pd,
        transactions=tuple(txs),
        execution=execution,
        wallet=wallet,
    )


def _check_swap_recipients(txs: Sequence[PlannedTx], account_addr: str) -> None:
    """Every swap of the batch pays the account: a swap paying anyone else (the router keeps
    what it is sent to itself) would leave the repay unfunded or give the proceeds away."""
    for t in txs:
        if t.decoded.method == "exactInputSingle":
            to = str(t.decoded.args["params"]["recipient"])
            if to.lower() != account_addr.lower():
                raise PlanningError(f"swap recipient {to} is not the account {account_addr}")


def plan_wallet_part(
    *,
    layout: MarketLayout,
    account_addr: str,
    account: AccountState,
    collateral: ReserveMeta,
    collateral_reserve: ReserveState,
    debt: ReserveMeta,
    debt_reserve: ReserveState,
    target_hf_wad: int,
    max_spend_base: int | None,
    accrual_margin_s: int = DEFAULT_ACCRUAL_MARGIN_S,
) -> WalletPart:
    """The wallet's part of a combined plan: repay with the wallet's debt asset, then supply the
    wallet's collateral, each sized to the target and cut to the wallet and the spend cap.
    Raises when the wallet holds neither, or when it alone reaches the target (then the repay or
    top-up on its own is the plan, not a combination)."""
    calls: list[PlannedTx] = []
    repay = repay_base = supply = supply_base = 0
    room = max_spend_base
    if account.wallet_balances.get(debt.symbol, 0) > 0:
        rp = plan_repay(
            layout=layout, account_addr=account_addr, account=account, asset=debt,
            reserve=debt_reserve, target_hf_wad=target_hf_wad, max_spend_base=room,
            accrual_margin_s=accrual_margin_s,
        )  # fmt: skip
        if rp.capped_by is None:
            raise PlanningError(f"the wallet's {debt.symbol} alone reaches the target")
        repay, repay_base = rp.amount, rp.value_base
        calls += rp.transactions
        room = None if room is None else max(0, room - repay_base)
    if account.wallet_balances.get(collateral.symbol, 0) > 0 and room != 0:
        rest = replace(account, total_debt_base=account.total_debt_base - repay_base)
        tp = plan_topup(
            layout=layout, account_addr=account_addr, account=rest, asset=collateral,
            reserve=collateral_reserve, target_hf_wad=target_hf_wad, max_spend_base=room,
            allowance=account.pool_allowances.get(collateral.symbol, 0),
        )  # fmt: skip
        if tp.capped_by is None:
            raise PlanningError("the wallet alone reaches the target")
        supply, supply_base = tp.amount, tp.value_base
        calls += tp.transactions
    if not calls:
        raise PlanningError(
            f"the wallet holds no {debt.symbol} or {collateral.symbol} to use first"
        )
    return WalletPart(repay, repay_base, supply, supply_base, tuple(calls))


async def read_deleverage_inputs(
    rpc: RpcClient, *, venue: UniswapVenue, account_addr: str, collateral: ReserveMeta
) -> tuple[int, int]:
    """The collateral's aToken balance and the router's allowance on the collateral."""
    erc20 = load_abi("ERC20")
    (balance,) = erc20.decode_output(
        "balanceOf",
        await rpc.eth_call(collateral.a_token, erc20.encode_hex("balanceOf", account_addr)),
    )
    (allowance,) = erc20.decode_output(
        "allowance",
        await rpc.eth_call(
            collateral.asset, erc20.encode_hex("allowance", account_addr, venue.swap_router02)
        ),
    )
    return int(balance), int(allowance)


def onchain_quoter(
    rpc: RpcClient,
    venue: UniswapVenue,
    account_addr: str,
    collateral: ReserveMeta,
    debt: ReserveMeta,
) -> QuoteFn:
    """QuoterV2 on ``rpc``. With no earlier swap in the batch, a plain ``eth_call``; after one,
    ``eth_simulateV1``: the batch's earlier calls run as the account (no signature: validation
    off), then QuoterV2 quotes this step on the pool as they left it."""
    fee = venue.fees.get(collateral.symbol)
    if fee is None:
        raise PlanningError(f"no Uniswap V3 fee tier configured for {collateral.symbol}")
    quoter = load_abi("QuoterV2")

    async def quote(earlier: Sequence[PlannedTx], amount_in: int) -> int:
        if not any(t.decoded.method == "exactInputSingle" for t in earlier):
            q = await quote_exact_input_single(
                rpc, venue.quoter_v2, collateral.asset, debt.asset, fee, amount_in
            )
            return q.amount_out
        data = quoter.encode_hex(
            "quoteExactInputSingle", (collateral.asset, debt.asset, amount_in, fee, 0)
        )
        calls = [{"from": account_addr, "to": t.to, "data": t.data} for t in earlier]
        calls.append({"from": account_addr, "to": venue.quoter_v2, "data": data})
        try:
            res = await rpc.request(
                "eth_simulateV1",
                [{"blockStateCalls": [{"calls": calls}], "validation": False}, "latest"],
            )
        except RpcError as exc:
            raise PlanningError(
                f"cannot quote a later deleverage step on the pool after the earlier ones:"
                f" eth_simulateV1 failed on {rpc.source} ({exc})"
            ) from None
        results = res[0]["calls"]
        for i, (t, r) in enumerate(zip(earlier, results, strict=False), 1):
            if int(r.get("status", "0x0"), 16) != 1:
                raise PlanningError(
                    f"the batch's call {i} ({t.decoded.method}) fails before the next step:"
                    f" {r.get('error') or r.get('returnData')}"
                )
        last = results[-1]
        if int(last.get("status", "0x0"), 16) != 1:
            raise PlanningError(
                f"QuoterV2 {venue.quoter_v2}: no quote for {amount_in} of {collateral.symbol}"
                f" after the earlier steps: {last.get('error') or last.get('returnData')}"
            )
        raw = bytes.fromhex(str(last["returnData"])[2:])
        return int(quoter.decode_output("quoteExactInputSingle", raw)[0])

    return quote


async def plan_deleverage_onchain(
    rpc: RpcClient,
    *,
    layout: MarketLayout,
    venue: UniswapVenue,
    account_addr: str,
    account: AccountState,
    collateral: ReserveMeta,
    collateral_reserve: ReserveState,
    debt: ReserveMeta,
    debt_reserve: ReserveState,
    target_hf_wad: int,
    hf_floor_wad: int,
    slippage_bps: int,
    accrual_margin_s: int = DEFAULT_ACCRUAL_MARGIN_S,
    execution: Execution = "signers",
    wallet: WalletPart | None = None,
) -> DeleveragePlan:
    """``plan_deleverage`` with its chain inputs read through ``rpc``: the collateral's aToken
    balance, the router allowance, and QuoterV2 quotes on the venue's pool (each step after
    the batch's earlier calls)."""
    balance, allowance = await read_deleverage_inputs(
        rpc, venue=venue, account_addr=account_addr, collateral=collateral
    )
    pool_allowance: int | None = None
    if wallet is not None and wallet.repay:
        # The wallet's repay approves exactly its amount when short, and the pool pulls it all.
        had = account.pool_allowances.get(debt.symbol, 0)
        pool_allowance = had - wallet.repay if had >= wallet.repay else 0
    return await plan_deleverage(
        onchain_quoter(rpc, venue, account_addr, collateral, debt),
        layout=layout,
        venue=venue,
        account_addr=account_addr,
        account=account,
        collateral=collateral,
        collateral_reserve=collateral_reserve,
        collateral_balance=balance,
        debt=debt,
        debt_reserve=debt_reserve,
        target_hf_wad=target_hf_wad,
        hf_floor_wad=hf_floor_wad,
        slippage_bps=slippage_bps,
        router_allowance=allowance,
        pool_allowance=pool_allowance,
        accrual_margin_s=accrual_margin_s,
        execution=execution,
        wallet=wallet,
    )
