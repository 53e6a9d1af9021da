"""Durability pieces on their own, with real files, real locks and real resource limits: the
journal (failed append truncated back, torn line, bad lines warned, reads never write), the
outbox (proposal and spend in one transaction, the journal line retried), exclusive locks,
addresses at the config edge, the error budget and the tick deadline."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.config import apply_deployment, load_settings
from agent.core.address import checksum_address
from agent.core.budget import ErrorBudget, Interrupted, TickTimeout, unless_stopped, within
from agent.core.errors import AgentError, ConfigError, StoreError
from agent.core.lock import AlreadyRunning, ExclusiveLock
from agent.sinks.journal import ProposalJournal
from agent.sinks.outbox import flush_outbox, publish, reconcile_spends, with_live_outcome
from agent.sinks.recovery import take_locks
from agent.store.ledger import ProposalLedger

ROOT = Path(__file__).resolve().parents[2]
SAFE = "0x3c05642d43878aB90F9d319c98f01ED5Afef61AD"


def _typo(addr: str) -> str:
    """``addr`` with one letter's case flipped: a checksum that no longer matches."""
    i = next(i for i, c in enumerate(addr) if i >= 2 and c.isalpha())
    return addr[:i] + addr[i].swapcase() + addr[i + 1 :]


def _record(key: str, status: str = "simulated", spend: float = 10.0) -> dict[str, Any]:
    return {
        "id": key[:6],
        "idempotency_key": key,
        "status": status,
        "sizing": {"spend_usd": spend, "session_id": "2026-01-01"},
        "policy": {"at": 1_700_000_000},
    }


# -- journal -------------------------------------------------------------------------------


def test_failed_append_is_truncated_back_and_next_record_is_clean(tmp_path: Path) -> None:
    """A real short write: RLIMIT_FSIZE in a child process stops the line half-way (EFBIG, as
    a full disk stops it with ENOSPC); the journal must end where it ended before."""
    path = tmp_path / "j.jsonl"
    journal = ProposalJournal(path)
    journal.append(_record("a" * 32))
    size = path.stat().st_size
    child = textwrap.dedent(
        f"""
        import resource, sys
        from agent.sinks.journal import ProposalJournal
        from agent.core.errors import StoreError
        resource.setrlimit(resource.RLIMIT_FSIZE, ({size + 100}, {size + 100}))
        j = ProposalJournal({str(path)!r})
        try:
            j.append({{"idempotency_key": "big", "blob": "x" * 5000}})
        except StoreError as e:
            print("refused:", e)
            sys.exit(0)
        sys.exit(1)
        """
    )
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "cannot append to proposals journal" in out.stdout and "File too large" in out.stdout
    assert path.stat().st_size == size  # no partial line left
    again = ProposalJournal(path)
    assert again.append(_record("b" * 32))
    assert [json.loads(x)["idempotency_key"] for x in path.read_text().splitlines()] == [
        "a" * 32,
        "b" * 32,
    ]


def test_torn_last_line_is_warned_and_the_next_record_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps(_record("k1")) + "\n" + '{"idempotency_key": "k2", "sta')
    with capture_logs() as logs:
        journal = ProposalJournal(path)
    assert [r["idempotency_key"] for r in journal.records()] == ["k1"]
    assert [(e["event"], e["file"], e["line"]) for e in logs] == [
        ("journal.bad_line", str(path), 2)
    ]
    journal.append(_record("k3"))
    lines = path.read_text().splitlines()
    assert (
        lines[1] == '{"idempotency_key": "k2", "sta'
        and json.loads(lines[2])["idempotency_key"] == "k3"
    )


def test_reading_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"idempotency_key": "k1"}\n[1, 2]\n{"torn')
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with capture_logs() as logs:
        rows = ProposalJournal(path).records()
    assert rows == [{"idempotency_key": "k1"}]
    assert [e["line"] for e in logs] == [2, 3]  # a JSON list is not a record either
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert not (tmp_path / "missing" / "j.jsonl").exists()
    assert ProposalJournal(tmp_path / "missing" / "j.jsonl").read() == []
    assert not (tmp_path / "missing").exists()


def test_journal_under_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(StoreError, match="a parent of the path is a file"):
        ProposalJournal(tmp_path / "f" / "j.jsonl")
    with pytest.raises(AgentError, match=r"store path .* is a file, not a directory"):
        take_locks(str(tmp_path / "f" / "agent.sqlite"), str(tmp_path / "j.jsonl"))


# -- outbox: proposal and spend in one step ---------------------------------------------------


def test_commit_is_one_transaction_and_the_journal_line_is_retried(tmp_path: Path) -> None:
    store = ProposalLedger(tmp_path / "s.sqlite")
    journal_dir = tmp_path / "jdir"
    journal_dir.write_text("")  # the journal's directory is a file: every append fails
    journal = ProposalJournal(tmp_path / "j.jsonl")
    broken = ProposalJournal.__new__(ProposalJournal)
    broken.path, broken._records, broken._keys = journal_dir / "j.jsonl", [], set()
    rec = _record("k1", spend=55_000.0)
    assert store.commit_proposal(rec, ("2026-01-01", Decimal("55000"), 1))
    assert not store.commit_proposal(rec, ("2026-01-01", Decimal("55000"), 1))  # once
    with capture_logs() as logs:
        assert not publish(store, broken, rec)
    assert logs[0]["event"] == "journal.append_failed"
    # the spend is in the cap although the line is not written; the record waits in the outbox
    assert store.session_spent_usd("2026-01-01") == Decimal("55000")
    assert store.in_outbox("k1") and [r["idempotency_key"] for r in store.outbox()] == ["k1"]
    assert flush_outbox(store, journal) == 1
    assert flush_outbox(store, journal) == 0
    assert [r["idempotency_key"] for r in journal.read()] == ["k1"] and store.outbox() == []
    # a bad amount fails the whole step: neither the record nor a spend
    with pytest.raises(StoreError):
        store.commit_proposal(_record("k2"), ("2026-01-01", Decimal("NaN"), 1))
    assert not store.in_outbox("k2") and store.spend_count() == 1
    store.close()


def test_journaled_spend_missing_from_the_ledger_is_recovered(tmp_path: Path) -> None:
    store = ProposalLedger(tmp_path / "s.sqlite")
    records = [_record("k1", spend=55_000.5), _record("k2", "simulation_failed"), _record("k3")]
    store.record_spend("2026-01-01", "k3", Decimal("10"), 1)
    assert reconcile_spends(store, records) == 1
    assert reconcile_spends(store, records) == 0
    assert store.session_spent_usd("2026-01-01") == Decimal("55010.5")
    store.close()


def test_live_outcome_of_a_record_from_the_store(tmp_path: Path) -> None:
    store = ProposalLedger(tmp_path / "s.sqlite")
    rec = _record("k1") | {"live": []}
    assert with_live_outcome(store, rec)["live"] == [
        {"status": "not_sent", "detail": "interrupted before signing; not retried"}
    ]
    store.record_live_intent(
        tx_hash="0xab", idempotency_key="k1", account=SAFE, nonce=7, chain_id=1, raw_tx="0x01"
    )
    store.set_live_status("0xab", "mined", "block 9")
    assert with_live_outcome(store, rec)["live"] == [
        {
            "tx_hash": "0xab",
            "from": SAFE,
            "nonce": 7,
            "chain_id": 1,
            "status": "mined",
            "detail": "block 9",
        }
    ]
    assert store.live_sends(open_only=True) == []
    store.close()


# -- locks -----------------------------------------------------------------------------------


def test_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = take_locks(str(tmp_path / "agent.sqlite"), str(tmp_path / "j.jsonl"))
    with pytest.raises(AlreadyRunning) as ei:
        take_locks(str(tmp_path / "agent.sqlite"), str(tmp_path / "j.jsonl"))
    assert f"(pid {os.getpid()}) is already running on store" in str(ei.value)
    for lock in first:
        lock.release()
    again = ExclusiveLock(tmp_path / "agent.sqlite.lock", "store")
    assert again.acquire()
    again.release()


def test_lock_is_dropped_when_the_holder_is_killed(tmp_path: Path) -> None:
    lock = tmp_path / "agent.sqlite.lock"
    child = subprocess.Popen(
        [sys.executable, "-c",
         f"from agent.core.lock import ExclusiveLock; ExclusiveLock({str(lock)!r}, 's').acquire();"
         "print('held', flush=True); import time; time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    with pytest.raises(AlreadyRunning, match=f"pid {child.pid}"):
        ExclusiveLock(lock, "store").acquire()
    child.kill()
    child.wait()
    assert ExclusiveLock(lock, "store").acquire()


# -- addresses and config ------------------------------------------------------------------


def test_addresses_are_checksummed_once_and_bad_checksums_refused() -> None:
    assert checksum_address(SAFE.lower()) == SAFE
    assert checksum_address("0x" + SAFE[2:].upper()) == SAFE
    bad = _typo(SAFE)
    with pytest.raises(ValueError, match="bad EIP-55 checksum"):
        checksum_address(bad)


def _toml(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(body)
    return p


def test_config_edge(tmp_path: Path) -> None:
    s = load_settings(_toml(tmp_path, f'[position]\naccount = "{SAFE.lower()}"\n'))
    assert s.position.account == SAFE
    bad = _typo(SAFE)
    with pytest.raises(ConfigError, match=r"position\.account: .*bad EIP-55 checksum"):
        load_settings(_toml(tmp_path, f'[position]\naccount = "{bad}"\n'))
    with pytest.raises(ConfigError, match=r"agent\.log_level: Input should be 'DEBUG'"):
        load_settings(_toml(tmp_path, '[agent]\nlog_level = "verbose"\n'))
    assert (
        load_settings(_toml(tmp_path, '[agent]\nlog_level = "debug"\n')).agent.log_level == "DEBUG"
    )


def test_chain_id_beside_deployment_must_agree(tmp_path: Path) -> None:
    dep = tmp_path / "dep.json"
    dep.write_text(
        json.dumps(
            {
                "chain_id": 31337,
                "rpc_url": "http://127.0.0.1:1",
                "aave": {"pool_addresses_provider": SAFE},
                "tokens": {},
                "safe": {"address": SAFE, "multisend_call_only": SAFE},
                "chainlink": {},
                "perps": {},
            }
        )
    )
    ok = load_settings(_toml(tmp_path, "[chain]\nchain_id = 31337\n"), resolve_deployment=False)
    assert apply_deployment(ok, dep).chain.chain_id == 31337
    wrong = load_settings(_toml(tmp_path, "[chain]\nchain_id = 1\n"), resolve_deployment=False)
    with pytest.raises(
        ConfigError, match=r"chain\.chain_id = 1 but the deployment .* is on chain 31337"
    ):
        apply_deployment(wrong, dep)
    unset = load_settings(_toml(tmp_path, "[agent]\n"), resolve_deployment=False)
    assert apply_deployment(unset, dep).chain.chain_id == 31337


# -- error budget and deadlines ------------------------------------------------------------


def test_error_budget_needs_both_ticks_and_time() -> None:
    b = ErrorBudget(ticks=5, seconds=60)
    for i in range(5):
        b.failed(now=100.0 + i)  # five failures in five seconds: not an outage
    assert b.failures == 5 and not b.spent(now=105.0)
    assert b.spent(now=160.0)  # still failing a minute later
    b.ok()
    assert b.failures == 0 and not b.spent(now=1000.0)
    quick = ErrorBudget(ticks=3, seconds=0)
    for _ in range(2):
        quick.failed()
    assert not quick.spent()
    quick.failed()
    assert quick.spent()


async def test_tick_deadline_and_stop_signal() -> None:
    with pytest.raises(TickTimeout, match=r"did not finish within 0\.05s"):
        await within(0.05, asyncio.sleep(10))
    assert await within(1, asyncio.sleep(0, result=7)) == 7
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(Interrupted):
        await unless_stopped(stop, stuck())
    assert cancelled.is_set()
    assert await unless_stopped(asyncio.Event(), asyncio.sleep(0, result=3)) == 3


# -- issue 24: one transaction, the advisory spend, the journal after the live outcome --------


def test_a_failing_spend_insert_leaves_neither_the_proposal_nor_the_spend(tmp_path: Path) -> None:
    """A SQLite trigger makes the spend insert inside ``commit_proposal`` fail: a commit in two
    transactions would keep the outbox row (a journaled proposal outside the session cap)."""
    path = tmp_path / "s.sqlite"
    store = ProposalLedger(path)
    with sqlite3.connect(path) as c:
        c.execute(
            "CREATE TRIGGER spend_fails BEFORE INSERT ON spends "
            "BEGIN SELECT RAISE(ABORT, 'spend insert failed (test trigger)'); END"
        )
    with pytest.raises(StoreError, match="spend insert failed"):
        store.commit_proposal(_record("k1"), ("2026-01-01", Decimal("10"), 1))
    assert store.outbox() == [] and not store.in_outbox("k1")
    assert store.spend_count() == 0
    with sqlite3.connect(path) as c:
        c.execute("DROP TRIGGER spend_fails")
    assert store.commit_proposal(_record("k1"), ("2026-01-01", Decimal("10"), 1))
    assert store.in_outbox("k1") and store.session_spent_usd("2026-01-01") == Decimal("10")
    store.close()


def test_a_store_rebuilt_from_the_journal_has_every_spend_the_advisory_ticket_too(
    tmp_path: Path,
) -> None:
    """Issue 24 item 7: the S&P 500 ticket's spend was left out when the ledger was rebuilt."""
    first = ProposalLedger(tmp_path / "a.sqlite")
    journal = ProposalJournal(tmp_path / "j.jsonl")
    for rec, spend in (
        (_record("k1", spend=55_000.5), Decimal("55000.5")),
        (_record("k2", "advisory", spend=1_234.25), Decimal("1234.25")),
        (_record("k3", "simulation_failed"), None),
    ):
        assert first.commit_proposal(rec, None if spend is None else ("2026-01-01", spend, 1))
    assert flush_outbox(first, journal) == 3
    # by hand: 55000.5 + 1234.25, the failed simulation spends nothing
    assert first.session_spent_usd("2026-01-01") == Decimal("56234.75")
    rebuilt = ProposalLedger(tmp_path / "b.sqlite")
    assert reconcile_spends(rebuilt, journal.records()) == 2
    assert rebuilt.session_spent_usd("2026-01-01") == Decimal("56234.75")
    assert rebuilt.spend_keys() == {"k1", "k2"}
    first.close()
    rebuilt.close()


def test_the_journal_line_waits_for_the_live_outcome(tmp_path: Path) -> None:
    """Issue 24 item 9: a send without an outcome (an intent left by a crash) keeps the line in
    the outbox; once reconciliation decides (here: dropped) the line says so, not "intent"."""
    store = ProposalLedger(tmp_path / "s.sqlite")
    journal = ProposalJournal(tmp_path / "j.jsonl")
    rec = _record("k1") | {"live": []}
    assert store.commit_proposal(rec, ("2026-01-01", Decimal("10"), 1))
    store.record_live_intent(
        tx_hash="0xab", idempotency_key="k1", account=SAFE, nonce=7, chain_id=1, raw_tx="0x01"
    )
    assert flush_outbox(store, journal) == 0 and journal.read() == [] and store.in_outbox("k1")
    store.set_live_status("0xab", "dropped", "not mined within 40s; not re-sent")
    assert flush_outbox(store, journal) == 1
    (line,) = journal.read()
    assert [s["status"] for s in line["live"]] == ["dropped"]
    assert store.outbox() == []
    store.close()


def test_outside_sinks_run_after_the_commit_and_are_retried(tmp_path: Path) -> None:
    """Issue 24 items 1-2: a Builder directory that cannot be written does not undo or repeat
    the commit; the proposal waits undelivered (no journal line), and the retry writes ONE file
    under the proposal's id."""
    from agent.core.abi import DecodedCall
    from agent.core.http import HttpClient
    from agent.core.rpc import RpcClient
    from agent.planner.draft import Draft, ProposalHeader
    from agent.planner.safe import SafeTx
    from agent.planner.tx import PlannedTx
    from agent.simulator.fork import SimulationResult
    from agent.simulator.outcome import Outcome
    from agent.sinks.config import SinksConfig
    from agent.sinks.publish import ProposalSinks

    blocked = tmp_path / "builder"
    blocked.write_text("")  # a file where the directory should be: every write fails
    store = ProposalLedger(tmp_path / "s.sqlite")
    journal = ProposalJournal(tmp_path / "j.jsonl")
    header = ProposalHeader("id1", "k1", "2026-01-01T00:00:00+00:00", "mainnet", 1, 100, SAFE,
                            (), {}, {})  # fmt: skip
    st = SafeTx(SAFE, SAFE, 0, "0x", 0)
    tx = PlannedTx(SAFE, 0, "0x", DecodedCall("Safe", "nonce", {}), "read the nonce")
    draft = Draft(header, "collateral_top_up", transactions=(tx,), safe_tx=st)
    outcome = Outcome(draft, SimulationResult(True, 99, None, None, ()))

    async def run() -> tuple[dict[str, Any] | None, int]:
        async with HttpClient() as h, RpcClient("http://127.0.0.1:9") as rpc:
            sinks = ProposalSinks(SinksConfig(safe_tx_builder_dir=str(blocked / "x")),
                                  journal=journal, ledger=store, rpc=rpc, http=h, chain_id=1)  # fmt: skip
            with capture_logs() as logs:
                first = await sinks.publish(outcome, session_id="s", at=1)
            assert [e["event"] for e in logs if e["log_level"] == "error"] == [
                "sinks.deliver_failed"
            ]
            # committed (in the cap, seen) but not delivered, so not journaled
            assert first is not None and store.in_outbox("k1") and journal.read() == []
            assert store.session_spent_usd("s") == 0 and store.spend_count() == 1
            assert sinks.seen("k1")
            assert await sinks.deliver_pending() == 0  # still blocked
            blocked.unlink()
            n = await sinks.deliver_pending()
            await sinks.deliver_pending()  # nothing left: no second file
            return first, n

    _, delivered = asyncio.run(run())
    assert delivered == 1
    assert flush_outbox(store, journal) == 1
    (line,) = journal.read()
    assert line["id"] == "id1" and line["safe_tx_builder_file"] == str(
        blocked / "x" / "id1-collateral_top_up.json"
    )
    assert [p.name for p in (blocked / "x").iterdir()] == ["id1-collateral_top_up.json"]
    store.close()


def test_recovered_spends_are_the_recorded_spend_not_another_sizing_number(
    tmp_path: Path,
) -> None:
    """A store rebuilt from the journal gets each proposal's ``sizing.spend_usd`` exactly (not
    the need, not the cap), once, and nothing for a failed proposal (mutation audit)."""
    from agent.sinks.outbox import reconcile_spends

    store = ProposalLedger(tmp_path / "r.sqlite")
    sizing = {"spend_usd": 100.25, "needed_value_usd": 500.0, "session_cap_usd": 25_000.0,
              "session_id": "2024-08-05"}  # fmt: skip
    recs = [
        {"idempotency_key": "a", "status": "simulated", "sizing": sizing, "policy": {"at": 5}},
        {"idempotency_key": "b", "status": "failed", "sizing": sizing, "policy": {"at": 6}},
    ]
    assert reconcile_spends(store, recs) == 1
    assert reconcile_spends(store, recs) == 0
    assert store.session_spent_usd("2024-08-05") == Decimal("100.25")
    store.close()
