"""The proposal pipeline's stages on their typed records, numbers against hand computation:
plan (``agent.planner.draft``: a frozen ``Draft`` sized under the ``SpendCap``), simulate
(``agent.simulator.outcome``: status, the simulation record, the put's premium from its Trade
event) and sink (``agent.sinks.publish``: the validated journal record, the Safe file, the
ledger, never a key twice). No chain: the simulation results are built by hand (the fork is
tested in tests/integration); the journal, the store and the Safe files are real files."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agent.core.abi import DecodedCall
from agent.core.http import HttpClient
from agent.core.market import AccountState, ChainSnapshot, MarketLayout, ReserveMeta, ReserveState
from agent.core.rpc import RpcClient
from agent.core.units import WAD
from agent.planner.draft import (
    Draft,
    LayerBudget,
    ProposalHeader,
    ProtectionConfig,
    PutCheck,
    SpendCap,
    SwapCheck,
    as_safe_batch,
    plan_protection,
)
from agent.policy import TopUpAction
from agent.simulator.fork import AccountView, SimulationResult, TxOutcome
from agent.simulator.outcome import Outcome, put_outcome, simulate, swap_outcome
from agent.sinks.config import SinksConfig
from agent.sinks.journal import ProposalJournal
from agent.sinks.proposal import Proposal
from agent.sinks.publish import ProposalSinks, proposal_from
from agent.sinks.safe_tx_builder import validate_checksum
from agent.store.ledger import ProposalLedger

POOL = "0x87870Bca3F3fD6335C3F4ce8392D69350B4fA4E2"
SAFE = "0x00000000000000000000000000000000000000Aa"
MULTISEND = "0x9641d764fc13c8B624c04430C7356C1C7C8102e2"
USDC = ReserveMeta(
    "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
    "USDC",
    6,
    "0x98C23E9d8f34FEFb1B7BD6a91B7FF122F4e16F5c",
    "0x72E95b8931767C79bA4EeE721354d6E99a61D004",
    8000,
    7700,
)
WETH = ReserveMeta(
    "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
    "WETH",
    18,
    "0x4d5F47FA6A74757f35C14fD3a6Ef8E3C9BC514E8",
    "0x0000000000000000000000000000000000000001",
    8250,
    8000,
)
LAYOUT = MarketLayout("devnet", "aave-v3", POOL, POOL, POOL, (USDC, WETH), (SAFE,), {}, {}, {})
PROTECT = ProtectionConfig(topup_asset="WETH", repay_asset="USDC")
TARGET = 18 * WAD // 10


def snapshot(usdc_wallet: int = 5_000 * 10**6) -> ChainSnapshot:
    # C = $20,000, D = $10,000, LT 82.5%: HF 1.65
    c, d = 20_000 * 10**8, 10_000 * 10**8
    acct = AccountState(
        c, d, 0, 8250, 8000, c * 8250 * WAD // (d * 10_000),
        {"USDC": usdc_wallet, "WETH": 10 * WAD}, {},
    )  # fmt: skip
    reserves = {
        # no borrow rate: no accrual margin, so the repay is the textbook figure
        "USDC": ReserveState(0, 0, 0, 0, 10**8),
        "WETH": ReserveState(0, 0, 0, 0, 2000 * 10**8),
    }
    return ChainSnapshot("devnet", 100, 1_700_000_000, reserves, {SAFE: acct}, {}, {})


def header(key: str = "protect:2023-11-14:k") -> ProposalHeader:
    return ProposalHeader(
        id="a1b2c3d4e5f6",
        idempotency_key=key,
        created_at="2023-11-14T22:13:20+00:00",
        chain="devnet",
        chain_id=31337,
        block_number=100,
        account=SAFE,
        explanation=("S1 firing",),
        evidence={"trigger_paths": ["S1+S2"]},
        policy={"action_key": "k", "severity": 1.0, "at": 0, "session_id": "s1", "horizon": None},
    )


def action(max_spend_usd: str = "100000") -> TopUpAction:
    return TopUpAction(SAFE, TARGET, Decimal(max_spend_usd), 0, Decimal(0), "protect:k", "k")


def cap(spent: str = "0", total: str = "250000") -> SpendCap:
    return SpendCap("s1", Decimal(total), Decimal(spent), "defi", Decimal("0.5"))


# -- plan -----------------------------------------------------------------------------------


def test_spend_cap_limits_and_reports_the_session() -> None:
    c = cap(spent="240000")
    assert c.remaining_usd == Decimal(10_000)
    assert c.limit(Decimal(12_000)) == Decimal(10_000) and c.limit(Decimal(5)) == Decimal(5)
    assert c.admits(Decimal(10_000)) and not c.admits(Decimal("10000.01"))
    assert cap(spent="300000").remaining_usd == 0
    assert c.sizing(2_500.0) == {
        "spend_usd": 2_500.0,
        "session_id": "s1",
        "session_cap_usd": 250_000.0,
        "session_spent_before_usd": 240_000.0,
        "session_remaining_after_usd": 7_500.0,
        "priority": "defi",
        "size_fraction": "0.5",
    }


async def test_protection_drafts_the_cheaper_plan_reaching_the_target() -> None:
    draft = await plan_protection(header(), snapshot(), LAYOUT, action(), cap(), PROTECT)
    assert draft.planned and draft.action == "repay_debt"
    # repay y = D - C*LT/H* = 10000 - 16500/1.8 = $833.333334 (USDC amount rounded up)
    assert draft.spend_usd == Decimal("833.333334")
    assert [t.decoded.method for t in draft.transactions] == ["approve", "repay"]
    assert draft.transactions[1].decoded.args["amount"] == 833_333_334
    assert draft.target_hf_wad == TARGET and draft.label == "repay_debt USDC"
    assert draft.sizing is not None and draft.comparison is not None
    assert draft.sizing["spend_usd"] == pytest.approx(833.333334, abs=1e-9)
    assert draft.sizing["session_remaining_after_usd"] == pytest.approx(250_000 - 833.333334)
    # the top-up needs at least (1.8*10000 - 16500)/0.825 = $1,818.18: it loses on cost
    costs = {o["action"]: o["cost_usd"] for o in draft.comparison["options"]}
    assert costs["collateral_top_up"] >= 1818.18
    assert draft.comparison["chosen"] == "repay_debt"
    with pytest.raises(dataclasses.FrozenInstanceError):
        draft.spend_usd = Decimal(0)  # type: ignore[misc]


async def test_the_session_cap_bounds_the_draft_exactly() -> None:
    # $500 left of the session: the repay is capped there, not a cent more
    draft = await plan_protection(
        header(), snapshot(), LAYOUT, action(), cap(spent="999500", total="1000000"), PROTECT
    )
    assert draft.planned and draft.action == "repay_debt"
    assert draft.spend_usd == Decimal(500)
    assert draft.transactions[-1].decoded.args["amount"] == 500 * 10**6
    assert draft.sizing is not None and draft.sizing["capped_by"] is not None
    # the action's own maximum binds when it is below what the session allows
    small = await plan_protection(header(), snapshot(), LAYOUT, action("300"), cap(), PROTECT)
    assert small.spend_usd == Decimal(300)


async def test_nothing_left_in_the_session_is_a_failed_draft_with_the_reason() -> None:
    draft = await plan_protection(
        header(), snapshot(), LAYOUT, action(), cap(spent="250000"), PROTECT
    )
    assert not draft.planned and draft.transactions == () and draft.spend_usd == 0
    assert draft.error == (
        "top-up: no spend left under the session cap for a WETH top-up; "
        "repay: no spend left under the session cap for a USDC repayment; "
        "deleverage: no DEX configured ([uniswap] in the config)"
    )
    assert draft.comparison is not None and draft.comparison["chosen"] is None


async def test_missing_account_is_a_failed_draft() -> None:
    snap = dataclasses.replace(snapshot(), accounts={})
    draft = await plan_protection(header(), snap, LAYOUT, action(), cap(), PROTECT)
    assert not draft.planned and draft.transactions == ()
    assert draft.action == "collateral_top_up"
    assert draft.error == f"no account data for {SAFE} in this tick"


async def test_safe_batch_wraps_the_calls_in_one_multisend() -> None:
    draft = await plan_protection(header(), snapshot(), LAYOUT, action(), cap(), PROTECT)
    batch = as_safe_batch(draft, MULTISEND)
    assert batch.safe_tx is not None and draft.safe_tx is None  # a new record
    assert batch.safe_tx.to == MULTISEND and batch.safe_tx.operation == 1
    assert batch.safe_tx.safe == SAFE
    failed = Draft(header(), "collateral_top_up", error="x")
    assert as_safe_batch(failed, MULTISEND) is failed


# -- simulate ---------------------------------------------------------------------------------


def sim_result(success: bool = True, **kw: Any) -> SimulationResult:
    before = AccountView(20_000 * 10**8, 10_000 * 10**8, 165 * WAD // 100)
    after = AccountView(20_000 * 10**8, 9_166_666_666_600, 18 * WAD // 10 + 1)
    tx = TxOutcome("Safe.execTransaction (repay_debt USDC)", success, 150_000, "0xab", ())
    return SimulationResult(success, 99, before, after if success else None, (tx,), **kw)


async def test_outcome_status_follows_the_stages() -> None:
    planned = await plan_protection(header(), snapshot(), LAYOUT, action(), cap(), PROTECT)
    assert Outcome(planned).status == "planned" and Outcome(planned).spends
    assert Outcome(planned, sim_result()).status == "simulated"
    failed_sim = Outcome(planned, sim_result(False, error="reverted: 35"))
    assert failed_sim.status == "simulation_failed" and not failed_sim.spends
    failed_plan = Outcome(Draft(header(), "option_put", error="no venue"))
    assert failed_plan.status == "planning_failed" and not failed_plan.spends


async def test_simulate_without_a_simulator_or_a_plan_runs_nothing() -> None:
    planned = await plan_protection(header(), snapshot(), LAYOUT, action(), cap(), PROTECT)
    assert (await simulate(planned, None, 100)).result is None
    failed = Draft(header(), "option_put", error="no venue")
    assert (await simulate(failed, None, 100)).status == "planning_failed"


async def test_simulation_record_numbers() -> None:
    planned = await plan_protection(header(), snapshot(), LAYOUT, action(), cap(), PROTECT)
    rec = Outcome(planned, sim_result()).simulation_record()
    assert rec is not None
    assert rec["target_health_factor"] == 1.8
    assert rec["health_factor_before"] == 1.65
    assert rec["health_factor_after"] == pytest.approx(1.8 + 1e-18)
    assert rec["collateral_usd_before"] == 20_000.0
    assert rec["debt_usd_after"] == pytest.approx(91_666.666666)
    assert rec["transactions"][0]["gas_used"] == 150_000


def test_put_outcome_takes_the_premium_from_the_trade_event_rounded_up() -> None:
    trade = DecodedCall(
        "PremiaPool",
        "Trade",
        {"premium": 12_000_665_095_554_559_768_953, "takerFee": 374_274_000_000_000_000_000},
    )
    tx = TxOutcome("Safe.execTransaction (put structural)", True, 414_399, "0x1", (trade,))
    sim = SimulationResult(
        True, 273, None, None, (tx,), reads={"long": (69_310_000_000_000_000_000,)}
    )
    out = put_outcome(sim, PutCheck(planned_size=69_310_000_000_000_000_000, quote_decimals=6))
    # (premium + fee) = 12,374.939095554559768953 USDC (18 decimals) -> 12,374.939096 rounded up
    assert out == {
        "option_long_after": "69310000000000000000",
        "option_size_planned": "69310000000000000000",
        "premium_paid": "12374939096",
        "premium_paid_usd": 12_374.939096,
    }


def test_swap_outcome_sums_what_the_pools_paid_out() -> None:
    """A two-step deleverage selling 2 WBTC (8 decimals) for USDC (6): each pool's ``Swap``
    pays out its negative side, whichever token order the pool has; other events are not
    counted. Hand-computed: 60,000 + 63,000 = 123,000 USDC for 2 WBTC = $61,500 per WBTC,
    (1 - 61,500 / 62,000) x 10,000 = 80.645 bps below the oracle."""
    steps = (
        DecodedCall("UniswapV3Pool", "Swap", {"amount0": 10**8, "amount1": -60_000 * 10**6}),
        DecodedCall("UniswapV3Pool", "Swap", {"amount0": -63_000 * 10**6, "amount1": 10**8}),
        DecodedCall("MintableERC20", "Transfer", {"amount0": -(10**12), "amount1": 0}),
        DecodedCall("PremiaPool", "Swap", {"amount0": -(10**12), "amount1": 0}),
    )
    tx = TxOutcome("Safe.execTransaction (deleverage WBTC)", True, 600_000, "0x1", steps)
    sim = SimulationResult(True, 300, None, None, (tx,))
    check = SwapCheck(
        amount_in=2 * 10**8,
        min_out=122_500 * 10**6,
        collateral_decimals=8,
        debt_decimals=6,
        oracle_price_wad=62_000 * WAD,
    )
    out = swap_outcome(sim, check)
    assert out["swap_amount_out"] == "123000000000"
    assert out["swap_amount_out_human"] == 123_000.0
    assert out["swap_amount_out_minimum"] == "122500000000"
    assert out["swap_price"] == 61_500.0
    assert out["swap_price_vs_oracle_bps"] == pytest.approx(10_000 / 124)
    assert out["left_in_wallet"] == "500000000"
    # Only a successful simulation of a deleverage draft carries it.
    draft = Draft(header(), "deleverage", transactions=(), swap=check)
    assert Outcome(draft, sim).simulation_record()["swap_amount_out"] == "123000000000"  # type: ignore[index]
    failed = SimulationResult(False, 300, None, None, (tx,), error="reverted")
    assert "swap_amount_out" not in (Outcome(draft, failed).simulation_record() or {})
    assert swap_outcome(SimulationResult(True, 300, None, None, ()), check) == {}


# -- sink -------------------------------------------------------------------------------------


async def test_the_journal_record_is_the_validated_outcome() -> None:
    draft = as_safe_batch(
        await plan_protection(header(), snapshot(), LAYOUT, action(), cap(), PROTECT), MULTISEND
    )
    proposal = proposal_from(Outcome(draft, sim_result()))
    assert isinstance(proposal, Proposal)
    rec = proposal.record()
    assert rec["status"] == "simulated" and rec["action"] == "repay_debt"
    assert rec["safe_tx"]["to"] == MULTISEND and rec["safe_tx"]["operation"] == 1
    assert [t["call"]["method"] for t in rec["transactions"]] == ["approve", "repay"]
    assert "error" not in rec and "live" not in rec
    # what a journal line reads back as is the same model
    assert Proposal.model_validate(json.loads(json.dumps(rec))).record() == rec


def _read(path: str) -> str:
    return Path(path).read_text()


@pytest.fixture
async def sinks(tmp_path: Path) -> Any:
    store = ProposalLedger(tmp_path / "agent.sqlite")
    http = HttpClient()
    rpc = RpcClient("http://127.0.0.1:9")  # never called: service and live sending are off
    journal = ProposalJournal(tmp_path / "proposals.jsonl")
    cfg = SinksConfig(safe_tx_builder_dir=str(tmp_path / "safe"))
    yield ProposalSinks(cfg, journal=journal, ledger=store, rpc=rpc, http=http, chain_id=31337)
    await http.close()
    await rpc.close()
    store.close()


async def test_publish_writes_the_journal_file_and_ledger_once(
    sinks: ProposalSinks, tmp_path: Path
) -> None:
    draft = as_safe_batch(
        await plan_protection(header(), snapshot(), LAYOUT, action(), cap(), PROTECT), MULTISEND
    )
    record = await sinks.publish(Outcome(draft, sim_result()), session_id="s1", at=1_700_000_000)
    assert record is not None
    lines = (tmp_path / "proposals.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [record]
    batch = json.loads(_read(record["safe_tx_builder_file"]))
    assert validate_checksum(batch) and len(batch["transactions"]) == 2
    assert sinks.ledger.session_spent_usd("s1") == Decimal("833.333334")
    # the same idempotency key again: nothing written, nothing spent twice
    again = await sinks.publish(Outcome(draft, sim_result()), session_id="s1", at=1_700_000_001)
    assert again is None and sinks.seen(draft.header.idempotency_key)
    assert len((tmp_path / "proposals.jsonl").read_text().splitlines()) == 1
    assert sinks.ledger.session_spent_usd("s1") == Decimal("833.333334")


async def test_failed_simulation_is_recorded_but_not_spent(sinks: ProposalSinks) -> None:
    draft = await plan_protection(header("k-fail"), snapshot(), LAYOUT, action(), cap(), PROTECT)
    record = await sinks.publish(
        Outcome(draft, sim_result(False, error="reverted")), session_id="s2", at=1
    )
    assert record is not None and record["status"] == "simulation_failed"
    assert record["simulation"]["error"] == "reverted"
    assert sinks.ledger.session_spent_usd("s2") == 0


async def test_failed_planning_is_recorded_with_its_reason(sinks: ProposalSinks) -> None:
    draft = Draft(header("k-none"), "option_put", error="no options venue configured")
    record = await sinks.publish(Outcome(draft), session_id="s3", at=1)
    assert record is not None
    assert record["status"] == "planning_failed" and record["transactions"] == []
    assert record["error"] == "no options venue configured"
    assert "safe_tx_builder_file" not in record
    assert sinks.ledger.session_spent_usd("s3") == 0


def _room(room_usd: str) -> SpendCap:
    budget = LayerBudget(
        budget_usd=Decimal(1_000_000),
        open_usd=Decimal(990_000),
        room_usd=Decimal(10_000),
        action_room_usd=Decimal(room_usd),
        frees_next="$40,000.00 (protection) frees on 2024-08-06T12:00:00Z",
    )
    return dataclasses.replace(cap(), budget=budget)


async def test_open_layer_room_refuses_a_plan_whose_margin_passes_it() -> None:
    # The repay is $833.333334 (above): one cent less of room refuses it, exactly enough drafts it.
    tight = _room("833.33")
    assert tight.refusal(Decimal("833.333334")) == (
        "would exceed the open-layer budget (room $833.33)"
    )
    assert tight.admits(Decimal("833.33"))
    draft = await plan_protection(header(), snapshot(), LAYOUT, action(), tight, PROTECT)
    assert not draft.planned and draft.comparison is not None
    assert draft.comparison["not_planned"][1:] == [
        "top-up: would exceed the open-layer budget (room $833.33)",
        "repay: would exceed the open-layer budget (room $833.33)",
    ]
    ok = await plan_protection(header(), snapshot(), LAYOUT, action(), _room("833.34"), PROTECT)
    assert ok.planned and ok.action == "repay_debt" and ok.spend_usd == Decimal("833.333334")
    assert ok.sizing is not None
    assert ok.sizing["defined_risk_budget_usd"] == 1_000_000.0
    assert ok.sizing["open_layers_usd"] == 990_000.0 and ok.sizing["budget_room_usd"] == 10_000.0
    assert ok.sizing["budget_frees_next"].startswith("$40,000.00 (protection)")
    # the session cap still speaks first
    assert cap(spent="249500").refusal(Decimal(600)) == "would exceed the session cap"
