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
position, all in the same batch. Later steps are quoted on the pool as the earlier swaps leave
it: the output of step k is ``quote(A_k) - quote(A_{k-1})`` with ``A_k`` the cumulative amount
(Uniswap V3's exact-input swaps compose along one direction).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.core.abi import load_abi
from agent.core.errors import PlanningError
from agent.core.market import AccountState, MarketLayout, ReserveMeta, ReserveState
from agent.core.rpc import RpcClient
from agent.core.units import AAVE_BASE_UNIT_USD, BPS, WAD, token_to_float
from agent.planner.repay import DEFAULT_ACCRUAL_MARGIN_S, VARIABLE_RATE_MODE, projected_debt_base
from agent.planner.tx import PlannedTx, approve_if_short, call_tx
from agent.planner.uniswap import FEE_UNITS, UniswapVenue, quote_exact_input_single

MAX_STEPS = 12
MAX_REFINE = 12

# amount_in (cumulative, collateral units) -> amount_out (debt units) from QuoterV2.
QuoteFn = Callable[[int], Awaitable[int]]


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
        return {
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
) -> DeleveragePlan:
    """Plan the deleverage batch. ``quote(cumulative_amount_in)`` returns QuoterV2's amountOut
    for selling that much collateral on the current pool (the caller binds the pool)."""
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
    pos = _Position(account.total_collateral_base * account.liquidation_threshold_bps, debt_now)
    if pos.hf() >= target_hf_wad:
        raise PlanningError(
            f"{account_addr} already at health factor {account.health_factor_wad / WAD:.3f} >= target"
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

    cache: dict[int, int] = {0: 0}

    async def q(cum: int) -> int:
        if cum not in cache:
            cache[cum] = await quote(cum)
        return cache[cum]

    async def step_out(done: int, a: int) -> tuple[int, int]:
        """(quote, min_out) for selling ``a`` after ``done`` was sold in earlier steps."""
        out = await q(done + a) - await q(done)
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
            out, m = await step_out(done, nxt)
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
        out, m = await step_out(done, a)
        nudges = 0
        while after(pos, a, m).hf() < target_hf_wad and a < a_floor and nudges < 64:
            a = min(a_floor, a + max(1, a // 10_000))  # +1 bp, until the quote reaches the target
            out, m = await step_out(done, a)
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
    txs: list[PlannedTx] = []

    def c_human(a: int) -> str:
        return f"{token_to_float(a, dc):.8f} {collateral.symbol}"

    def d_human(b: int) -> str:
        return f"{token_to_float(b, dd):.6f} {debt.symbol}"

    for i, s in enumerate(steps, 1):
        tag = f"step {i}/{len(steps)}: " if len(steps) > 1 else ""
        txs.append(
            call_tx(
                "Pool", layout.pool, "withdraw", collateral.asset, s.withdraw, account_addr,
                human=f"{tag}withdraw {c_human(s.withdraw)} of collateral from Aave V3"
                f" (HF {s.hf_mid_wad / WAD:.4f} until the repay)",
            )
        )  # fmt: skip
        if i == 1:
            txs += approve_if_short(
                collateral.asset,
                venue.swap_router02,
                total_in,
                router_allowance,
                human=f"approve SwapRouter02 to pull {c_human(total_in)}",
            )
        params = (
            collateral.asset, debt.asset, fee, account_addr, s.withdraw, s.min_out, 0,
        )  # fmt: skip
        txs.append(
            call_tx(
                "SwapRouter02", venue.swap_router02, "exactInputSingle", params,
                human=f"{tag}swap {c_human(s.withdraw)} for at least {d_human(s.min_out)}"
                f" on Uniswap V3 ({fee / 10_000:.2f}% pool; quoted {d_human(s.quote_out)})",
            )
        )  # fmt: skip
        if i == 1:
            txs += approve_if_short(
                debt.asset,
                layout.pool,
                total_min,
                pool_allowance,
                human=f"approve Aave V3 Pool to pull {d_human(total_min)}",
            )
        txs.append(
            call_tx(
                "Pool", layout.pool, "repay", debt.asset, s.min_out, VARIABLE_RATE_MODE,
                account_addr,
                human=f"{tag}repay {d_human(s.min_out)} of variable debt for {account_addr}"
                f" (HF {s.hf_after_wad / WAD:.4f})",
            )
        )  # fmt: skip
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
    )


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
) -> DeleveragePlan:
    """``plan_deleverage`` with its chain inputs read through ``rpc``: the collateral's aToken
    balance, the router allowance, and QuoterV2 quotes on the venue's pool."""
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
    fee = venue.fees.get(collateral.symbol)
    if fee is None:
        raise PlanningError(f"no Uniswap V3 fee tier configured for {collateral.symbol}")

    async def quote(amount_in: int) -> int:
        q = await quote_exact_input_single(
            rpc, venue.quoter_v2, collateral.asset, debt.asset, fee, amount_in
        )
        return q.amount_out

    return await plan_deleverage(
        quote,
        layout=layout,
        venue=venue,
        account_addr=account_addr,
        account=account,
        collateral=collateral,
        collateral_reserve=collateral_reserve,
        collateral_balance=int(balance),
        debt=debt,
        debt_reserve=debt_reserve,
        target_hf_wad=target_hf_wad,
        hf_floor_wad=hf_floor_wad,
        slippage_bps=slippage_bps,
        router_allowance=int(allowance),
        accrual_margin_s=accrual_margin_s,
    )
