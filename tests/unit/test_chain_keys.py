"""A position's chain is always part of its identity and keys, so changing the configuration
around it never changes them: the reproduced defect was a Safe's top-up key changing from
``topup:0xabc…`` to ``topup:1:0xabc…`` when a second ``[[chains]]`` entry was added mid-session,
and its top-up being proposed a second time that session. Old single-chain journals (keys
without the chain) keep their memory through a one-time alias.

The wiring is the daemon's (``build_parts`` → ``position_snapshots`` → ``memory_from_journal``
→ the policy's ``decide``), with the signals given (firing) rather than computed from a store."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from agent.config import load_settings
from agent.core.market import AccountState, ChainSnapshot, MarketLayout
from agent.pipeline.evaluate import Evaluation, MarketRead, memory_from_journal, position_snapshots
from agent.pipeline.parts import Parts, build_parts
from agent.policy import (
    Decision,
    PolicyConfig,
    SessionState,
    decide,
    health_factor_wad,
    idempotency_key,
    session_id_for,
)
from agent.signals import SignalResult
from agent.signals.base import InputRef

E8 = 10**8
AT = pd.Timestamp("2024-08-05 12:00", tz="UTC")
SID = session_id_for(int(AT.timestamp()))
SAFE = "0xABC0000000000000000000000000000000000001"
OTHER = "0xDEF0000000000000000000000000000000000002"
PAP = "0x" + "5" * 40


def sig(sid: str, subject: str = "x") -> SignalResult:
    return SignalResult(
        sid,
        sid,
        subject,
        "firing",
        -0.1,
        -0.08,
        f"{sid} test",
        (InputRef(f"k.{sid}", "t", 1, 1.0),),
    )  # type: ignore[arg-type]


# S1+S2 trigger, S7 confirms (independent gate), S8 rising: DeFi first, full size.
FIRING = [sig("S1"), sig("S2"), sig("S7"), sig("S8", subject="eth")]

ETH = f"""
[[chains]]
name = "eth"
chain_id = 1
rpc_url = "http://127.0.0.1:9"
pool_addresses_provider = "{PAP}"
[[positions]]
chain = "eth"
name = "treasury"
account = "{SAFE}"
"""
ARB = f"""
[[chains]]
name = "arb"
chain_id = 42161
rpc_url = "http://127.0.0.1:9"
pool_addresses_provider = "{PAP}"
[[positions]]
chain = "arb"
account = "{OTHER}"
"""


def parts(tmp_path: Path, body: str) -> Parts:
    path = tmp_path / "c.toml"
    path.write_text(body)
    return build_parts(load_settings(path))


def market(chain: str, accounts: dict[str, tuple[int, int]]) -> MarketRead:
    layout = MarketLayout(chain, "aave-v3", PAP, PAP, PAP, (), tuple(accounts), {}, {}, {})
    states = {
        a: AccountState(
            c * E8, d * E8, 0, 8250, 8000, health_factor_wad(c * E8, d * E8, 8250), {}, {}
        )
        for a, (c, d) in accounts.items()
    }
    snap = ChainSnapshot(chain, 100, int(AT.timestamp()), {}, states, {}, {})
    return MarketRead(layout, snap)


def decision(p: Parts, markets: dict[str, MarketRead], records: list[dict[str, Any]]) -> Decision:
    """The tick's decision as ``agent.pipeline.evaluate.evaluate`` wires it."""
    memory, _ = memory_from_journal(records)
    return decide(
        FIRING,
        position_snapshots(p.positions, markets),
        SessionState(SID, Decimal(0)),
        PolicyConfig(budget_usd=Decimal(1_000_000)),
        AT,
        memory,
    )


def journal_record(d: Decision, account: str, chain: str, chain_id: int) -> dict[str, Any]:
    """What the proposer writes for the top-up (the fields the memory reads)."""
    (top,) = [t for t in d.topups() if t.account == account]
    return {
        "idempotency_key": top.idempotency_key,
        "chain": chain,
        "chain_id": chain_id,
        "account": account,
        "status": "simulated",
        "policy": Evaluation(d, SID).policy_entry(top.action_key),
    }


def test_adding_a_chain_mid_session_does_not_propose_a_top_up_again(tmp_path: Path) -> None:
    one = parts(tmp_path, ETH)
    safe = {SAFE: (20_000, 12_000)}  # HF 1.375, below the 1.6 target
    first = decision(one, {"eth": market("eth", safe)}, [])
    (top,) = first.topups()
    assert top.account == SAFE and top.action_key == f"topup:1:{SAFE.lower()}"
    assert top.idempotency_key == idempotency_key("collateral_top_up", f"1:{SAFE}", SID)
    records = [journal_record(first, SAFE, "eth", 1)]

    # the same session, a second [[chains]] entry (and a position on it) added
    two = parts(tmp_path, ETH + ARB)
    markets = {
        "eth": market("eth", safe),
        "arb": market("arb", {OTHER: (10_000, 7_600)}),
    }
    again = decision(two, markets, records)
    # the Safe keeps its keys, so it is not proposed a second time this session
    assert [t.account for t in again.topups()] == [OTHER]
    (why,) = [s for s in again.suppressed if SAFE.lower() in s.action_key]
    assert why.action_key == top.action_key
    assert f"already proposed in session {SID}" in why.reason
    # the new chain's position is keyed by its own chain
    (other,) = again.topups()
    assert other.action_key == f"topup:42161:{OTHER.lower()}"


def test_the_same_account_on_two_chains_has_two_keys(tmp_path: Path) -> None:
    p = parts(tmp_path, ETH + ARB.replace(OTHER, SAFE))
    markets = {
        "eth": market("eth", {SAFE: (20_000, 12_000)}),
        "arb": market("arb", {SAFE: (10_000, 7_600)}),
    }
    keys = {(t.chain, t.action_key) for t in decision(p, markets, []).topups()}
    assert keys == {("eth", f"topup:1:{SAFE.lower()}"), ("arb", f"topup:42161:{SAFE.lower()}")}


def old_record(severity: float, at: int, session_id: str) -> dict[str, Any]:
    """A record a single-chain agent wrote before the chain was in every key."""
    return {
        "idempotency_key": idempotency_key("collateral_top_up", SAFE, session_id),
        "chain": "eth",
        "chain_id": 1,
        "account": SAFE,
        "status": "simulated",
        "policy": {
            "action_key": f"topup:{SAFE.lower()}",
            "severity": severity,
            "at": at,
            "session_id": session_id,
            "horizon": None,
        },
    }


def test_an_old_single_chain_journal_keeps_its_memory_across_the_upgrade(tmp_path: Path) -> None:
    one = parts(tmp_path, ETH)
    markets = {"eth": market("eth", {SAFE: (20_000, 12_000)})}
    now = int(AT.timestamp())
    # proposed earlier today by the old agent: not again this session
    d = decision(one, markets, [old_record(0.5, now - 3600, SID)])
    assert not d.topups()
    (why,) = d.suppressed
    assert why.action_key == f"topup:1:{SAFE.lower()}"
    assert f"already proposed in session {SID}" in why.reason
    # yesterday, one hour ago by the clock, at a higher severity: hysteresis still applies
    d = decision(one, markets, [old_record(5.0, now - 3600, "2024-08-04")])
    assert not d.topups() and "hysteresis" in d.suppressed[0].reason
    # the alias is the record's own chain: the same account on another chain is not blocked
    arb = parts(tmp_path, ARB.replace(OTHER, SAFE))
    d = decision(arb, {"arb": market("arb", {SAFE: (20_000, 12_000)})}, [old_record(0.5, now, SID)])
    assert [t.action_key for t in d.topups()] == [f"topup:42161:{SAFE.lower()}"]


def test_two_chains_with_clocks_ten_minutes_apart_both_have_their_newest_observations_used(
    tmp_path: Path,
) -> None:
    """One evaluation time per tick (the latest block time read); each chain's own series are
    read at its own time. Chain ``arb`` runs 10 minutes ahead of ``eth`` and is listed second
    (the evaluation used to run at the first chain's time, hiding ``arb``'s newest TVL)."""
    from agent.core.models import Observation
    from agent.pipeline.evaluate import evaluate, evaluation_time
    from agent.store.ledger import ProposalLedger
    from agent.store.sqlite import Store

    p = parts(tmp_path, ETH + ARB)
    t_eth = int(AT.timestamp())
    t_arb = t_eth + 600
    rows = []
    for chain, end in (("eth", t_eth), ("arb", t_arb)):
        for h in range(60, 0, -1):
            rows.append(Observation(f"tvl.aave-v3.{chain}", end - h * 3600, 1e9, "usd", "test"))
        # each chain's newest point, at its own block time: a 10% drop (S1 fires at 8%)
        rows.append(Observation(f"tvl.aave-v3.{chain}", end, 0.9e9, "usd", f"onchain:{chain}"))
    markets = {"eth": market("eth", {}), "arb": market("arb", {})}
    markets["arb"] = MarketRead(
        markets["arb"].layout,
        ChainSnapshot("arb", 100, t_arb, {}, {}, {}, {}),
    )
    assert evaluation_time(markets) == t_arb
    ledger = ProposalLedger(tmp_path / "l.sqlite")
    with Store(tmp_path / "s.sqlite") as store:
        store.upsert(rows)
        ev = evaluate(store, load_settings(tmp_path / "c.toml"), p.positions, markets, [],
                      ledger=ledger, options_enabled=False)  # fmt: skip
    ledger.close()
    assert ev.at == t_arb and ev.session_id == session_id_for(t_arb)
    s1 = {r.subject: r for r in ev.decision.signals if r.id == "S1"}
    for chain, end in (("eth", t_eth), ("arb", t_arb)):
        r = s1[f"aave-v3.{chain}"]
        assert r.inputs[0].ts == end and r.inputs[0].value == 0.9e9, (chain, r.detail)
        assert r.status == "firing"
