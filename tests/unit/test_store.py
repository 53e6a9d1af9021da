from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from agent.core.errors import StoreError
from agent.core.models import Observation
from agent.store import SCHEMA_VERSION, Database, ProposalLedger, Store

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def obs(
    key: str, ts: int, value: float, source: str = "t", known_at: int | None = None
) -> Observation:
    return Observation(key=key, ts=ts, value=value, unit="usd", source=source, known_at=known_at)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "db" / "agent.sqlite")
    yield s
    s.close()


def test_pragmas_and_schema(store: Store, tmp_path: Path) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    c = sqlite3.connect(tmp_path / "db" / "agent.sqlite")
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    c.close()
    assert store.integrity_check() == "ok"


def test_upsert_idempotent(store: Store) -> None:
    rows = [obs("tvl.x.total", 100, 1.0), obs("tvl.x.total", 200, 2.0)]
    assert store.upsert(rows) == 2
    assert store.upsert(rows) == 0
    assert store.count("tvl.x.total") == 2
    # same identity, corrected value: overwritten, still one row
    assert store.upsert([obs("tvl.x.total", 200, 2.5)]) == 1
    assert store.count() == 2
    assert store.series("tvl.x.total").tolist() == [1.0, 2.5]
    assert store.upsert([]) == 0


def test_series_shape_and_filters(store: Store) -> None:
    store.upsert([obs("k", ts, float(ts)) for ts in (300, 100, 200)])
    s = store.series("k")
    assert s.name == "k"
    assert s.dtype == "float64"
    assert str(s.index.tz) == "UTC"
    assert s.index.is_monotonic_increasing
    assert s.index[0] == pd.Timestamp(100, unit="s", tz="UTC")
    assert store.series("k", since=150, until=250).tolist() == [200.0]
    empty = store.series("nope")
    assert empty.empty and str(empty.index.tz) == "UTC" and empty.name == "nope"
    assert store.keys() == ["k"]


def test_revisions_no_look_ahead(store: Store) -> None:
    # CPI for Jan (ts=0): first print known at 1000, revised at 5000.
    store.upsert([obs("macro.cpi", 0, 100.0, "fred", known_at=1000)])
    store.upsert([obs("macro.cpi", 0, 101.0, "fred", known_at=5000)])
    store.upsert([obs("macro.cpi", 10, 102.0, "fred", known_at=6000)])
    assert store.count("macro.cpi") == 3  # both vintages kept
    assert store.series("macro.cpi", known_by=999).empty
    assert store.series("macro.cpi", known_by=1000).tolist() == [100.0]
    assert store.series("macro.cpi", known_by=5999).tolist() == [101.0]
    assert store.series("macro.cpi").tolist() == [101.0, 102.0]
    latest = store.latest("macro.cpi", known_by=5500)
    assert latest is not None and latest.value == 101.0 and latest.known_at == 5000
    all_rows = store.observations("macro.cpi")
    assert [o.value for o in all_rows] == [100.0, 101.0, 102.0]
    assert all_rows[0].source == "fred"


def test_known_at_none_roundtrip_and_source_filter(store: Store) -> None:
    store.upsert(
        [obs("close.btc", 86400, 10.0, "csv:a.csv"), obs("close.btc", 86400, 11.0, "http:x")]
    )
    rows = store.observations("close.btc")
    assert {o.known_at for o in rows} == {None}
    assert store.series("close.btc", source="csv:").tolist() == [10.0]
    assert store.series("close.btc", source="http:").tolist() == [11.0]
    assert store.series("close.btc", known_by=86399).empty
    latest = store.latest("close.btc")
    assert latest is not None and latest.ts == 86400
    assert store.latest("missing") is None


def test_spend_ledger(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with ProposalLedger(path) as s:
        assert s.record_spend("2026-01-01", "k1", Decimal("100.10"), 1) is True
        assert s.record_spend("2026-01-01", "k1", Decimal("999"), 2) is False
        assert s.record_spend("2026-01-01", "k2", Decimal("0.20"), 3) is True
        assert s.record_spend("2026-01-02", "k3", Decimal("5"), 4) is True
        assert s.session_spent_usd("2026-01-01") == Decimal("100.30")
        with pytest.raises(StoreError):
            s.record_spend("x", "bad", Decimal("NaN"), 0)
        with pytest.raises(StoreError):
            s.record_spend("x", "neg", Decimal("-1"), 0)
    with ProposalLedger(path) as s:  # survives restart
        assert s.session_spent_usd("2026-01-01") == Decimal("100.30")
        assert s.session_spent_usd("none") == Decimal(0)


def test_errors_name_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="file"):
        Store(blocker / "sub" / "db.sqlite")
    newer = tmp_path / "newer.sqlite"
    c = sqlite3.connect(newer)
    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    c.close()
    with pytest.raises(StoreError, match="newer"):
        Store(newer)
    s = Store(tmp_path / "ok.sqlite")
    with pytest.raises(StoreError):
        s.upsert(["not an observation"])  # type: ignore[list-item]
    s.close()


def test_migration_from_empty_is_applied_once(tmp_path: Path) -> None:
    p = tmp_path / "m.sqlite"
    Store(p).close()
    with Store(p) as s:
        assert s.schema_version() == SCHEMA_VERSION
        s.upsert([obs("k", 1, 1.0)])
    with Store(p) as s:
        assert s.count() == 1


WRITER = textwrap.dedent(
    """
    import sys
    from agent.core.models import Observation
    from agent.store import Database, ProposalLedger, Store
    db = Database(sys.argv[1])
    s, ledger = Store(db), ProposalLedger(db)
    i = 0
    while True:
        s.upsert([Observation(key="k", ts=i * 100 + j, value=float(j), unit="u", source="w")
                  for j in range(100)])
        ledger.record_spend("sess", f"key{i}", __import__("decimal").Decimal(1), i)
        print(i, flush=True)
        i += 1
    """
)


def test_kill_9_mid_write_keeps_committed_rows(tmp_path: Path) -> None:
    db = tmp_path / "crash.sqlite"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    committed = -1
    try:
        for line in proc.stdout:
            committed = int(line)
            if committed >= 30:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert committed >= 30
    with Database(db) as d:
        s, ledger = Store(d), ProposalLedger(d)
        assert s.integrity_check() == "ok"
        # every batch whose commit was acknowledged is there in full (maybe one more)
        n = s.count("k")
        assert n >= (committed + 1) * 100
        assert n % 100 == 0
        assert ledger.session_spent_usd("sess") >= committed + 1


def test_checkpoints_advance_with_rows_in_one_transaction(tmp_path: Path) -> None:
    with Store(tmp_path / "cp.sqlite") as store:
        assert store.checkpoint("fred:CPIAUCSL") is None
        obs = [Observation("macro.cpi", 1, 300.0, "index", "fred:CPIAUCSL", 5)]
        assert store.advance("fred:CPIAUCSL", since=0, cursor=40, done=False, observations=obs) == 1
        store.advance("fred:CPIAUCSL", since=0, cursor=None, done=True, observations=obs)
        cp = store.checkpoint("fred:CPIAUCSL")
        assert cp is not None and (cp.cursor, cp.done, cp.steps, cp.rows) == (None, True, 2, 2)
        assert store.count("macro.cpi") == 1  # the same observation twice is one row
        store.advance("hyperliquid:BTC", since=0, cursor={"t": 1}, done=False)
        store.advance("hyperliquid:BTCX", since=0, cursor=[1, 2], done=False)
        assert [c.name for c in store.checkpoints("hyperliquid:")] == [
            "hyperliquid:BTC",
            "hyperliquid:BTCX",
        ]
        assert store.checkpoint("hyperliquid:BTC").cursor == {"t": 1}  # type: ignore[union-attr]
        with pytest.raises(StoreError, match="not JSON"):
            store.advance("x", since=0, cursor=object(), done=False)
        with pytest.raises(StoreError, match="not an Observation"):
            store.advance("x", since=0, cursor=1, done=False, observations=["nope"])  # type: ignore[list-item]
        assert store.checkpoint("x") is None  # nothing half-written
        assert store.drop_checkpoint("hyperliquid:BTC") and not store.drop_checkpoint(
            "hyperliquid:BTC"
        )
        assert store.reset_checkpoints() == 2 and store.checkpoints() == []


def test_observations_and_the_proposal_ledger_are_two_views_of_one_file(tmp_path: Path) -> None:
    """Issue 21 item 5: the observation store and the proposal ledger share one database file
    (a store written before the split opens as it is); neither has the other's methods."""
    path = tmp_path / "one.sqlite"
    with Database(path) as db:
        store, ledger = Store(db), ProposalLedger(db)
        store.upsert([obs("k", 1, 1.0)])
        assert ledger.commit_proposal({"idempotency_key": "p1"}, ("s", Decimal("5.25"), 1))
    with Store(path) as s:
        assert s.count() == 1
    with ProposalLedger(path) as led:
        assert led.in_outbox("p1") and led.session_spent_usd("s") == Decimal("5.25")
    assert not hasattr(Store, "commit_proposal") and not hasattr(Store, "session_spent_usd")
    assert not hasattr(ProposalLedger, "upsert") and not hasattr(ProposalLedger, "series")


def test_an_outbox_row_from_before_the_delivered_column_counts_as_delivered(
    tmp_path: Path,
) -> None:
    """Schema 3 posted and wrote the Builder file BEFORE the commit: its outbox rows only miss
    their journal line, so the migration marks them delivered (never posted again)."""
    from agent.store.db import MIGRATIONS

    path = tmp_path / "v3.sqlite"
    c = sqlite3.connect(path)
    for version in range(3):
        c.executescript(MIGRATIONS[version])
    c.execute("PRAGMA user_version = 3")
    c.execute("INSERT INTO outbox VALUES ('old', '{\"idempotency_key\": \"old\"}', 1)")
    c.commit()
    c.close()
    with ProposalLedger(path) as led:
        assert led.db.schema_version() == SCHEMA_VERSION
        assert [r["idempotency_key"] for r in led.outbox(delivered=True)] == ["old"]
        assert led.outbox(delivered=False) == []
