"""The daemon as an operator runs it: several ticks, a clean stop on SIGTERM (the fork anvil
goes with it), and a deliberate halt when the chain goes away and the error budget runs out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import StressedDevnet  # tests/e2e/conftest.py (annotation only)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )


DAEMON = ("tick_interval_s = 5", "tick_interval_s = 0.5\nerror_budget = 3\nerror_budget_s = 0")


@pytest.fixture
def devnet_config(
    tmp_path: Path, stressed_devnet: StressedDevnet
) -> tuple[Path, dict[str, object]]:
    """The shared stressed devnet (tests/e2e/conftest.py): these tests only read the chain."""
    config = tmp_path / "agent.toml"
    config.write_text(stressed_devnet.config(tmp_path).replace(*DAEMON))
    return config, stressed_devnet.dep


@pytest.fixture
def own_devnet_config(tmp_path: Path) -> Iterator[tuple[Path, dict[str, object]]]:
    """A devnet of the test's own, for a test that takes the chain away (no scenario played:
    a steady tick is all it needs before the chain goes)."""
    dep = tmp_path / "deployment.json"
    _cli("devnet", "up", "--deployment", str(dep))
    try:
        config = tmp_path / "agent.toml"
        config.write_text(
            (ROOT / "config" / "devnet.toml")
            .read_text()
            .replace("out/devnet/deployment.json", str(dep))
            .replace('feed = "out/devnet/scenario_feed.json"', "")
            .replace("var/demo/", f"{tmp_path}/")
            .replace(*DAEMON)
        )
        yield config, json.loads(dep.read_text())
    finally:
        subprocess.run(
            [sys.executable, "-m", "agent.cli", "devnet", "down", "--deployment", str(dep)],
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )


def _start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "HEDGE_AGENT_AGENT__LOG_FORMAT": "json"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _events_until(
    proc: subprocess.Popen[str], done: str, count: int, timeout: float
) -> list[dict[str, object]]:
    assert proc.stderr is not None
    events: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if line.startswith("{"):
            events.append(json.loads(line))
            if sum(e.get("event") == done for e in events) >= count:
                return events
    raise AssertionError(
        f"no {count}x {done!r} within {timeout}s: {[e.get('event') for e in events][-20:]}"
    )


def _anvil_children(pid: int) -> list[int]:
    """The daemon's fork anvils: anvil processes whose parent is the daemon."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        comm = text[text.index("(") : text.rindex(")")]
        if "anvil" in comm and int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except (ProcessLookupError, OSError):
        return False


def test_sigterm_stops_the_daemon_and_its_fork(
    devnet_config: tuple[Path, dict[str, object]],
) -> None:
    config, dep = devnet_config
    proc = _start(config)
    try:
        events = _events_until(proc, "tick.done", 3, timeout=120)
        ticks = [e for e in events if e.get("event") == "tick.done"]
        assert [e["tick_id"] for e in ticks] == [1, 2, 3]
        # later ticks propose nothing new: same session, same idempotency keys
        assert ticks[0]["proposals"] >= 1 and ticks[1]["proposals"] == 0 == ticks[2]["proposals"]
        # start-up priming left the position's working set loaded in the fork (issue 23 row 5)
        (primed,) = [e for e in events if e.get("event") == "fork.primed"]
        assert int(primed["accounts"]) > 5 and int(primed["slots"]) > 20, primed
        forks = _anvil_children(proc.pid)
        assert forks, "the simulator's fork anvil should be running"
        for pid in forks:  # the RPC URL (an API key, on a real chain) is not on its command line
            assert str(dep["rpc_url"]) not in Path(f"/proc/{pid}/cmdline").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    rest = proc.stderr.read() if proc.stderr else ""
    assert '"event": "agent.stopped"' in rest
    time.sleep(0.5)
    assert not [pid for pid in forks if _alive(pid)]


def test_chain_gone_spends_the_error_budget_then_halts(
    own_devnet_config: tuple[Path, dict[str, object]],
) -> None:
    config, dep = own_devnet_config
    proc = _start(config)
    try:
        _events_until(proc, "tick.done", 1, timeout=120)
        os.killpg(os.getpgid(int(str(dep["anvil_pid"]))), signal.SIGKILL)  # the chain disappears
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 2
    failed = [json.loads(x) for x in err.splitlines() if x.startswith("{") and '"tick.failed"' in x]
    assert [e["failures"] for e in failed] == [1, 2, 3]
    assert err.strip().splitlines()[-1].startswith("error: 3 consecutive failed ticks")


def _run_one_tick(config: Path) -> list[dict[str, object]]:
    proc = _start(config)
    try:
        events = _events_until(proc, "tick.done", 1, timeout=180)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return events


def test_session_cap_holds_across_a_restart(
    devnet_config: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    """The proposer writes the session ledger and a restarted daemon reads it back: run 1
    proposes, stops; run 2 (same store, a fresh journal, so neither the journal's idempotency
    keys nor its hysteresis memory hold anything back) starts from run 1's spend, and the two
    runs together stay within the cap (25% of B = $2,500)."""
    from decimal import Decimal

    from agent.store.ledger import ProposalLedger

    config, _ = devnet_config
    text = config.read_text().replace("budget_usd = 1000000", "budget_usd = 10000")
    first = tmp_path / "first.toml"
    first.write_text(text.replace("proposals.jsonl", "proposals-1.jsonl"))
    second = tmp_path / "second.toml"
    second.write_text(text.replace("proposals.jsonl", "proposals-2.jsonl"))
    cap = Decimal("2500.00")

    events = _run_one_tick(first)
    (dec1,) = [e for e in events if e.get("event") == "decision"]
    assert dec1["acted"] and Decimal(str(dec1["session_spent_before_usd"])) == 0
    session = str(dec1["session_id"])
    recs1 = [json.loads(x) for x in (tmp_path / "proposals-1.jsonl").read_text().splitlines()]
    spent1 = [r for r in recs1 if r["status"] in ("simulated", "planned")]
    assert spent1, [r.get("error") for r in recs1]
    with ProposalLedger(tmp_path / "agent.sqlite") as store:
        ledger1 = store.session_spent_usd(session)
    # written by the proposer: the ledger is what run 1's proposals spent
    assert float(ledger1) == pytest.approx(sum(r["sizing"]["spend_usd"] for r in spent1), abs=0.01)
    assert 0 < ledger1 <= cap

    events = _run_one_tick(second)
    (dec2,) = [e for e in events if e.get("event") == "decision"]
    assert dec2["session_id"] == session
    # read back after the restart: run 2 starts from run 1's spend, not from zero
    assert Decimal(str(dec2["session_spent_before_usd"])) == ledger1
    assert Decimal(str(dec2["session_remaining_usd"])) <= cap - ledger1 + Decimal(
        str(dec2["proposed_spend_usd"])
    )
    recs2 = [json.loads(x) for x in (tmp_path / "proposals-2.jsonl").read_text().splitlines()]
    for r in recs2:
        if r.get("sizing"):
            assert Decimal(str(r["sizing"]["session_spent_before_usd"])) >= ledger1
    with ProposalLedger(tmp_path / "agent.sqlite") as store:
        ledger2 = store.session_spent_usd(session)
    assert ledger2 <= cap  # the cap holds across the restart
