from pathlib import Path

from agent.sinks.journal import ProposalJournal


def test_same_idempotency_key_is_written_once_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    j = ProposalJournal(path)
    assert j.append({"id": "a1", "idempotency_key": "k1", "status": "simulated"})
    assert not j.append({"id": "a2", "idempotency_key": "k1", "status": "simulated"})
    # a new process reading the same journal still refuses the key
    j2 = ProposalJournal(path)
    assert j2.has("k1")
    assert not j2.append({"id": "a3", "idempotency_key": "k1"})
    assert j2.append({"id": "b1", "idempotency_key": "k2"})
    assert [r["id"] for r in ProposalJournal(path).read()] == ["a1", "b1"]


def test_torn_last_line_is_skipped_and_earlier_lines_kept(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    j = ProposalJournal(path)
    j.append({"id": "a1", "idempotency_key": "k1"})
    with path.open("a") as fh:
        fh.write('{"id": "torn", "idempotency_ke')  # crash mid-write
    rows = ProposalJournal(path).read()
    assert [r["id"] for r in rows] == ["a1"]
    j2 = ProposalJournal(path)
    assert j2.get("a1") is not None
    assert j2.append({"id": "a2", "idempotency_key": "k2"})
    assert [r["id"] for r in ProposalJournal(path).read()] == ["a1", "a2"]
