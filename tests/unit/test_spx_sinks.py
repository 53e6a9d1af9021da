"""The advisory ticket's sinks without a chain: the Proposal model accepts it, the CSV holds one
row per leg and never the same ticket twice, and `proposals show` renders it."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from agent.core.errors import StoreError
from agent.policy import PolicyConfig, SessionState, decide
from agent.policy.spx import spx_layer
from agent.signals.base import FIRING, QUIET, InputRef, result
from agent.sinks.proposal import Proposal
from agent.sinks.render import render_proposal
from agent.sinks.spx_ticket import COLUMNS, append_ticket_csv

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
