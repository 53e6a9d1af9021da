"""The S&P 500 side end to end, through the real CLI on a loopback devnet: play the stress
scenario (it carries S&P 500, VIX and VIX3M closes), run one tick, and find the advisory SPX put
ticket beside the DeFi proposals: in the journal (status ``advisory``), the log, the CSV and
``proposals list/show``. Every number of the ticket is recomputed here from the scenario feed
(statistics.NormalDist and zoneinfo, not the agent's own helpers)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

if TYPE_CHECKING:
    from conftest import StressedDevnet  # tests/e2e/conftest.py (annotation only)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NY = ZoneInfo("America/New_York")
OTM = {"short": Decimal("0.05"), "intermediate": Decimal("0.06"), "structural": Decimal("0.07")}
WEIGHT = {"short": Decimal("0.40"), "intermediate": Decimal("0.35"), "structural": Decimal("0.25")}
DTE = {"short": (0, 7), "intermediate": (15, 45), "structural": (60, 180)}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise AssertionError(f"hedge-agent {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def devnet(
    tmp_path_factory: pytest.TempPathFactory, stressed_devnet: StressedDevnet
) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("spx")
    config = tmp / "agent.toml"
    config.write_text(stressed_devnet.config(tmp))
    return {"tmp": tmp, "config": config, "feed": stressed_devnet.feed}


def run_once(
    devnet: dict[str, Path], name: str, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    d = devnet["tmp"] / name
    env = {
        "HEDGE_AGENT_AGENT__LOG_FORMAT": "json",
        "HEDGE_AGENT_AGENT__STORE_PATH": str(d / "agent.sqlite"),
        "HEDGE_AGENT_AGENT__JOURNAL_PATH": str(d / "proposals.jsonl"),
        "HEDGE_AGENT_SINKS__SPX_TICKET_CSV": str(d / "spx_tickets.csv"),
        "HEDGE_AGENT_SINKS__SAFE_TX_BUILDER_DIR": str(d / "stb"),
        **(extra or {}),
    }
    proc = cli("run", "--config", str(devnet["config"]), "--once", env=env)
    journal = d / "proposals.jsonl"
    rows = [json.loads(x) for x in journal.read_text().splitlines() if x.strip()]
    events = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    return {"dir": d, "env": env, "rows": rows, "events": events, "log": proc.stderr}


def latest(feed: dict[str, Any], key: str, at: int) -> tuple[int, float]:
    rows = [o for o in feed["observations"] if o["key"] == key and o["known_at"] <= at]
    o = max(rows, key=lambda o: o["ts"])
    return int(o["ts"]), float(o["value"])


def settle(expiry: date, symbol: str) -> datetime:
    hour, minute = (9, 30) if symbol == "SPX" else (16, 0)
    return datetime(expiry.year, expiry.month, expiry.day, hour, minute, tzinfo=NY)


def bs_put(s: float, k: float, t: float, v: float) -> float:
    n = NormalDist().cdf
    d1 = (math.log(s / k) + v * v / 2 * t) / (v * math.sqrt(t))
    return k * n(-(d1 - v * math.sqrt(t))) - s * n(-d1)


def check_ticket(ticket_rec: dict[str, Any], feed: dict[str, Any], spent_before: float) -> None:
    t = ticket_rec["ticket"]
    at = int(t["at"])
    spot_ts, spot = latest(feed, "close.spx", at)
    _, vix = latest(feed, "close.vix", at)
    assert t["spot"]["value"] == spot and t["spot"]["ts"] == spot_ts
    cap = Decimal("250000.00")  # 25% of devnet.toml's budget
    assert float(t["session_spent_before_usd"]) == pytest.approx(spent_before, abs=0.01)
    budget = min(cap - Decimal(t["session_spent_before_usd"]), cap / 2).quantize(Decimal("0.01"))
    assert Decimal(t["budget_usd"]) == budget
    collateral = Decimal(t["exposure_usd"]) if t.get("exposure_usd") is not None else None
    at_dt = datetime.fromtimestamp(at, UTC)
    for leg in t["legs"]:
        h = leg["horizon"]
        expiry = date.fromisoformat(leg["expiry"])
        assert expiry.weekday() < 5
        lo, hi = DTE[h]
        assert lo <= (expiry - at_dt.date()).days == leg["dte"] <= hi
        if leg["symbol"] == "SPX":
            assert expiry.weekday() in (3, 4) and 14 <= expiry.day <= 21  # the third Friday
        strike = int(Decimal(str(spot)) * (1 - OTM[h]) // 5 * 5)
        assert leg["strike"] == strike
        tau = (settle(expiry, leg["symbol"]) - at_dt).total_seconds() / (365 * 86400)
        est = bs_put(spot, strike, tau, vix / 100)
        assert leg["est_premium"] == pytest.approx(est, abs=1e-3)
        raw = Decimal(repr(leg["est_premium"])) * Decimal("1.1")
        tick = Decimal("0.05") if raw < 3 else Decimal("0.10")
        limit = (raw / tick).to_integral_value(rounding=ROUND_CEILING) * tick
        assert Decimal(leg["limit_price"]) == limit
        leg_budget = (budget * WEIGHT[h]).quantize(Decimal("0.01"), rounding=ROUND_FLOOR)
        by_budget = int(leg_budget // (limit * 100))
        assert leg["contracts"] <= by_budget and leg["contracts"] >= 1
        if leg["capped_by"] == "budget":
            assert leg["contracts"] == by_budget
        if collateral is not None:
            assert strike * 100 * leg["contracts"] <= collateral
        assert Decimal(leg["max_cost_usd"]) == limit * 100 * leg["contracts"]
    total = sum(Decimal(leg["max_cost_usd"]) for leg in t["legs"])
    assert Decimal(t["spend_usd"]) == total <= budget
    assert ticket_rec["sizing"]["spend_usd"] == pytest.approx(float(total))


def test_ticket_beside_the_defi_proposals_when_the_defi_layer_acts(
    devnet: dict[str, Path],
) -> None:
    feed = json.loads(devnet["feed"].read_text())
    run = run_once(devnet, "defi")
    rows = run["rows"]
    tickets = [r for r in rows if r["action"] == "spx_put_ticket"]
    defi = [r for r in rows if r["action"] != "spx_put_ticket"]
    assert len(tickets) == 1, run["log"][-3000:]
    assert any(r["status"] == "simulated" for r in defi)
    tk = tickets[0]
    assert tk["status"] == "advisory" and tk["transactions"] == []
    assert rows[-1] is tk  # written after the DeFi proposals of the tick
    t = tk["ticket"]
    # The scenario's beta rises (S8 "DeFi first"), the DeFi layer acts, and S9 fires: the rule's
    # "or the DeFi layer also fires" branch. S10 (VIX at the top of its range) opens the wings.
    assert (t["beta"], t["defi_acted"], t["s9_firing"]) == ("rising", True, True)
    assert "S10" in t["consensus"]
    assert [leg["symbol"] for leg in t["legs"]] == ["SPXW", "SPXW", "SPX"]
    spent_defi = sum(r["sizing"]["spend_usd"] for r in defi if r["status"] == "simulated")
    check_ticket(tk, feed, spent_defi)
    # the session cap holds across both layers
    assert spent_defi + tk["sizing"]["spend_usd"] <= 250_000
    # the log: S9-S11 evaluated on scenario data, and the ticket as a proposal event
    sigs = {e["id"]: e for e in run["events"] if e.get("event") == "signal"}
    assert sigs["S9"]["status"] == "firing" and sigs["S9"]["data_origin"] == "scenario"
    assert {"S10", "S11"} <= set(sigs)
    assert any(
        e.get("event") == "proposal" and e.get("action") == "spx_put_ticket" for e in run["events"]
    )
    # the CSV a person reads: one row per leg
    with (run["dir"] / "spx_tickets.csv").open() as fh:
        legs = list(csv.DictReader(fh))
    assert [r["ticket_id"] for r in legs] == [tk["id"]] * 3
    assert [r["quantity"] for r in legs] == [str(leg["contracts"]) for leg in t["legs"]]
    assert all(r["order_type"] == "LIMIT" and r["note"].startswith("ESTIMATE") for r in legs)
    # proposals list / show
    listing = cli("proposals", "list", "--journal", str(run["dir"] / "proposals.jsonl")).stdout
    assert f"{tk['id']}" in listing and "advisory" in listing and "SPX puts" in listing
    shown = cli("proposals", "show", tk["id"], "--journal", str(run["dir"] / "proposals.jsonl"))
    assert "ADVISORY ticket" in shown.stdout and "ESTIMATE" in shown.stdout
    # a second tick in the same session does not write the ticket again
    again = run_once(devnet, "defi")
    assert sum(r["action"] == "spx_put_ticket" for r in again["rows"]) == 1
    with (run["dir"] / "spx_tickets.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 3


def test_ticket_when_the_beta_check_says_sp500_first(devnet: dict[str, Path]) -> None:
    # Equal beta windows make beta30 == beta90: S8 evaluates and is not rising, so the beta
    # check says "S&P 500 first" (the DeFi layer then acts at half size).
    feed = json.loads(devnet["feed"].read_text())
    run = run_once(
        devnet,
        "sp500",
        {
            "HEDGE_AGENT_SIGNALS__S8__SHORT_WINDOW": "30",
            "HEDGE_AGENT_SIGNALS__S8__LONG_WINDOW": "30",
        },
    )
    decision = next(e for e in run["events"] if e.get("event") == "decision")
    assert decision["priority"] == "sp500_first" and decision["size_fraction"] == "0.5"
    tickets = [r for r in run["rows"] if r["action"] == "spx_put_ticket"]
    assert len(tickets) == 1, run["log"][-3000:]
    t = tickets[0]["ticket"]
    assert t["beta"] == "not_rising" and t["fired"]
    assert any("S&P 500 first" in n for n in t["notes"])
    defi = [r for r in run["rows"] if r["action"] != "spx_put_ticket"]
    spent_defi = sum(r["sizing"]["spend_usd"] for r in defi if r["status"] == "simulated")
    assert spent_defi <= 125_000  # the DeFi layer at 50%
    check_ticket(tickets[0], feed, spent_defi)
