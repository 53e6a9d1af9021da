"""The advisory ticket's sinks without a chain: the Proposal model accepts it, the CSV holds one
row per leg and never the same ticket twice, and `proposals show` renders it."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from agent.core.errors import StoreError
from agent.core.http import HttpClient
from agent.core.rpc import RpcClient
from agent.policy import PolicyConfig, SessionState, decide
from agent.policy.spx import spx_layer
from agent.signals.base import FIRING, QUIET, InputRef, result
from agent.sinks.config import SinksConfig
from agent.sinks.journal import ProposalJournal
from agent.sinks.proposal import Proposal
from agent.sinks.publish import ProposalSinks
from agent.sinks.render import render_proposal
from agent.sinks.spx_ticket import COLUMNS, append_ticket_csv
from agent.store.ledger import ProposalLedger

AT = pd.Timestamp("2024-08-02 23:59:59", tz="UTC")


def ticket_record() -> dict[str, object]:
    s8 = [result("S8", "beta", a, QUIET, 0.5, 0.9, "test") for a in ("btc", "eth")]
    decision = decide(s8, None, SessionState("2024-08-02", Decimal(0)), PolicyConfig(), AT)
    sigs = [
        result("S9", "S9", "vix", FIRING, 1.05, 1.0, "t", (), {"vix": 23.39}),
        result("S10", "S10", "vix", FIRING, 0.9, 0.7, "t"),
        result("S11", "S11", "spx", QUIET, -1.0, 0.0, "t"),
    ]
    spot = InputRef(
        "close.spx", "csv:sp500", int(pd.Timestamp("2024-08-02", tz="UTC").timestamp()), 5346.56
    )
    d = spx_layer(sigs, decision, spot, AT, PolicyConfig(), exposure_usd=Decimal("1757575.75"))
    assert d.fired
    return {
        "id": "abc123def456",
        "idempotency_key": d.idempotency_key,
        "created_at": "2024-08-02T23:59:59+00:00",
        "chain": "devnet",
        "chain_id": 31337,
        "block_number": 1,
        "account": "0x" + "11" * 20,
        "action": "spx_put_ticket",
        "status": "advisory",
        "explanation": ["x"],
        "evidence": {},
        "policy": {
            "action_key": "spx:puts",
            "severity": 1.05,
            "at": d.at,
            "session_id": d.session_id,
        },
        "transactions": [],
        "sizing": {"spend_usd": float(d.spend_usd)},
        "ticket": d.as_dict(),
    }


def test_proposal_model_accepts_the_advisory_ticket_and_rejects_a_bad_status() -> None:
    rec = Proposal.model_validate(ticket_record()).record()
    assert rec["status"] == "advisory" and rec["ticket"]["legs"]
    bad = ticket_record() | {"status": "sent"}
    with pytest.raises(ValueError, match="status"):
        Proposal.model_validate(bad)


def test_csv_one_row_per_leg_and_no_duplicate(tmp_path: Path) -> None:
    rec = Proposal.model_validate(ticket_record()).record()
    path = tmp_path / "t" / "spx_tickets.csv"
    append_ticket_csv(rec, path)
    append_ticket_csv(rec, path)  # a replay after a restart writes nothing
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(COLUMNS)
    legs = rec["ticket"]["legs"]
    assert len(rows) == len(legs) == 3
    for row, leg in zip(rows, legs, strict=True):
        assert (row["symbol"], row["expiry"], row["strike"], row["quantity"]) == (
            leg["symbol"],
            leg["expiry"],
            str(leg["strike"]),
            str(leg["contracts"]),
        )
        assert row["limit_price"] == leg["limit_price"] and row["side"] == "BUY TO OPEN"
        assert row["note"].startswith("ESTIMATE")
    assert [r["expiry"] for r in rows] == ["2024-08-06", "2024-08-30", "2024-11-15"]


def test_csv_unwritable_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="SPX ticket CSV"):
        append_ticket_csv(Proposal.model_validate(ticket_record()).record(), blocker / "x.csv")


def test_render_shows_the_advisory_ticket() -> None:
    text = render_proposal(Proposal.model_validate(ticket_record()).record())
    assert "[advisory]  spx_put_ticket" in text
    assert "ADVISORY ticket for your broker" in text
    assert "BUY TO OPEN 3 SPXW 2024-08-06 5075 PUT" in text
    assert "ESTIMATE" in text and "transactions (as signed)" not in text


async def _publish_twice(
    tmp_path: Path, csv_path: Path
) -> tuple[list[object], ProposalLedger, Path]:
    """The advisory ticket through the proposals' sinks, twice (a replay after a restart)."""
    store = ProposalLedger(tmp_path / "agent.sqlite")
    journal_path = tmp_path / "proposals.jsonl"
    cfg = SinksConfig(safe_tx_builder_dir=str(tmp_path / "safe"), spx_ticket_csv=str(csv_path))
    # rpc/http: never called, an advisory ticket is neither simulated, posted nor sent
    async with HttpClient() as http, RpcClient("http://127.0.0.1:9") as rpc:
        sinks = ProposalSinks(
            cfg, journal=ProposalJournal(journal_path), ledger=store, rpc=rpc, http=http,
            chain_id=31337,
        )  # fmt: skip
        proposal = Proposal.model_validate(ticket_record())
        spend = Decimal(str(proposal.sizing["spend_usd"])) if proposal.sizing else Decimal(0)
        out = [
            sinks.publish_advisory(proposal, session_id="2024-08-02", spend_usd=spend, at=1)
            for _ in range(2)
        ]
    return out, store, journal_path


async def test_publish_advisory_journals_ledgers_and_writes_the_csv_once(tmp_path: Path) -> None:
    csv_path = tmp_path / "spx_tickets.csv"
    (first, second), store, journal_path = await _publish_twice(tmp_path, csv_path)
    assert isinstance(first, dict) and second is None
    assert first["status"] == "advisory" and first["ticket"]["csv"] == str(csv_path)
    lines = journal_path.read_text().splitlines()
    assert len(lines) == 1 and Proposal.model_validate_json(lines[0]).record() == first
    legs = first["ticket"]["legs"]
    # the ledger holds the cost at the limits, once: sum of contracts x limit x 100
    at_limits = sum(
        (Decimal(str(leg["contracts"])) * Decimal(leg["limit_price"]) * 100 for leg in legs),
        Decimal(0),
    )
    assert at_limits > 0
    assert store.session_spent_usd("2024-08-02") == Decimal(str(first["sizing"]["spend_usd"]))
    assert store.session_spent_usd("2024-08-02") == at_limits
    with csv_path.open() as fh:
        assert len(list(csv.DictReader(fh))) == len(legs)
    assert not (tmp_path / "safe").exists()  # no Safe batch file for a broker ticket
    store.close()


async def test_publish_advisory_keeps_the_ticket_and_its_spend_when_the_csv_fails(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    (first, _), store, journal_path = await _publish_twice(tmp_path, blocker / "x.csv")
    assert isinstance(first, dict)
    assert len(journal_path.read_text().splitlines()) == 1
    assert store.session_spent_usd("2024-08-02") == Decimal(str(first["sizing"]["spend_usd"]))
    store.close()


def test_csv_cost_columns_are_limit_times_multiplier_times_quantity(tmp_path: Path) -> None:
    """The ticket's max cost per leg is what the broker can charge at the limit (what the
    session cap counts), never the estimate (mutation audit)."""
    rec = Proposal.model_validate(ticket_record()).record()
    path = tmp_path / "spx_tickets.csv"
    append_ticket_csv(rec, path)
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        by_hand = Decimal(row["limit_price"]) * 100 * int(row["quantity"])
        assert Decimal(row["max_cost_usd_at_limit"]) == by_hand > 0
    total = sum(Decimal(r["max_cost_usd_at_limit"]) for r in rows)
    assert total == Decimal(str(rec["sizing"]["spend_usd"]))
