"""The fault matrix: each fault injected for real against the daemon (a subprocess) in front of
a real devnet anvil, through a fault-injecting JSON-RPC proxy, real signals, real files and
real process kills. Each test counts observations, journal records, spend rows and sent
transactions before and after: nothing lost, nothing duplicated, no transaction sent twice,
no process left behind.

The stress scenario makes the first tick propose a repay and three puts (4 proposals).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_safe_service import FakeSafeService, serve_in_thread

from agent.core.anvil import AnvilProcess
from faults.conftest import ROOT, Daemon, Devnet, Setup, alive
from faults.proxy import RpcProxy

pytestmark = pytest.mark.faults

# From the stress scenario's first tick: a repay and three put horizons (each one live
# transaction when live sending is on), and the S&P 500 advisory ticket (issue 15: journaled and
# in the spend ledger through the same outbox, never sent).
SENT = 4
PROPOSALS = SENT + 1
SIMULATED = {"simulated", "advisory"}
SEND = "eth_sendRawTransaction"


def _assert_once(setup: Setup) -> list[dict[str, object]]:
    """Every journal line parses, no idempotency key twice, one spend row per executable
    proposal and not one more."""
    records = setup.records()
    setup.keys()
    executable = [r for r in records if r["status"] in ("simulated", "planned", "advisory")]
    assert setup.spends() == len(executable)
    return records


def _no_forks_left(d: Daemon, forks: list[int]) -> None:
    deadline = time.monotonic() + 10
    while any(alive(p) for p in forks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in forks if alive(p)], "fork anvil left running"


# -- 1. live sending: a lost answer, a kill -9 between send and receipt ----------------------


def test_live_send_answer_lost_sends_once(
    devnet: Devnet,
    proxy: RpcProxy,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    """eth_sendRawTransaction reaches the chain but its answer is a 502: the intent was
    journaled first, so the transaction is found by hash (mined) and never sent again."""
    setup = make_setup(live=True)
    nonce0 = devnet.nonce()
    proxy.inject("lose", {SEND}, times=1)
    d = start_daemon(setup)
    d.wait_for("live.answer_lost", 1)
    d.wait_for("tick.done", 3)
    assert d.stop() == 0
    records = _assert_once(setup)
    assert len(records) == PROPOSALS
    # one transaction per proposal reached anvil, the lost one included, none twice
    assert proxy.forwarded[SEND] == SENT
    assert devnet.nonce() - nonce0 == SENT
    sends = setup.live_sends()
    assert len(sends) == SENT and {s[1] for s in sends} == {"mined"}
    assert len({s[2] for s in sends}) == SENT  # distinct nonces
    assert [e["now"] for e in d.named("live.reconciled")] == ["mined"]
    lost_hash = d.named("live.answer_lost")[0]["tx_hash"]
    lost = [r for r in records if r.get("live") and r["live"][0]["tx_hash"] == lost_hash]
    assert len(lost) == 1


def test_kill9_between_live_send_and_receipt_then_restart(
    devnet: Devnet,
    proxy: RpcProxy,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    setup = make_setup(live=True)
    nonce0 = devnet.nonce()
    proxy.inject("hang", {"eth_getTransactionReceipt"}, after=SEND)
    d = start_daemon(setup)
    proxy.wait_for(SEND, 1, timeout=180)
    proxy.wait_for("eth_getTransactionReceipt", 1, forwarded=False)
    forks = d.forks()
    obs_before = setup.observations()
    d.proc.send_signal(signal.SIGKILL)
    d.kill()
    _no_forks_left(d, forks)
    assert setup.records() == []  # the journal line was not written yet...
    assert [s[1] for s in setup.live_sends()] == ["sent"]  # ...but the intent was
    assert setup.spends() == 1
    proxy.clear()
    d2 = start_daemon(setup)
    d2.wait_for("tick.done", 2)
    assert d2.stop() == 0
    assert d2.named("live.reconciled")[0]["now"] == "mined"
    assert d2.named("recovery.done")[0]["journal_recovered"] == 1
    records = _assert_once(setup)
    assert len(records) == PROPOSALS
    assert proxy.forwarded[SEND] == SENT  # the first proposal's tx was never re-sent
    assert devnet.nonce() - nonce0 == SENT
    assert {s[1] for s in setup.live_sends()} == {"mined"}
    assert setup.observations() >= obs_before


# -- 2. fork-side infrastructure errors are retried, not journaled ---------------------------

FORK_STATE = {"eth_getStorageAt", "eth_getCode", "eth_getBalance", "eth_getAccountInfo"}


def test_fork_upstream_failure_is_retried_not_journaled(
    devnet: Devnet,
    proxy: RpcProxy,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    setup = make_setup()
    proxy.inject("http:502", FORK_STATE)
    d = start_daemon(setup)
    failed = d.wait_for("tick.failed", 1, timeout=240)
    assert "fork" in str(failed[0]["error"])
    assert setup.records() == [] and setup.spends() == 0  # no simulation_failed burnt the key
    proxy.clear()
    d.wait_for("tick.done", 2, timeout=240)
    assert d.stop() == 0
    records = _assert_once(setup)
    assert len(records) == PROPOSALS
    assert {r["status"] for r in records} == SIMULATED


def test_fork_killed_mid_simulation(
    devnet: Devnet,
    proxy: RpcProxy,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    setup = make_setup()
    # No start-up priming here: the kill must land inside a tick's simulation (a fork killed
    # while priming is only logged, fork.warm_up_failed, and the first tick starts a new one).
    setup.config.write_text(
        setup.config.read_text().replace("block_lag = 0", "block_lag = 0\nwarm_up = false")
    )
    proxy.inject("delay:3", FORK_STATE)
    d = start_daemon(setup)
    proxy.wait_for("eth_getStorageAt", 1, forwarded=False, timeout=240)
    forks = d.forks()
    assert len(forks) == 1
    os.kill(forks[0], signal.SIGKILL)
    proxy.clear()
    d.wait_for("tick.failed", 1)
    d.wait_for("tick.done", 2, timeout=240)
    new = d.forks()
    assert new and new != forks  # replaced
    assert d.stop() == 0
    records = _assert_once(setup)
    assert len(records) == PROPOSALS and {r["status"] for r in records} == SIMULATED
    _no_forks_left(d, new)


def test_frozen_fork_is_replaced(
    proxy: RpcProxy, make_setup: Callable[..., Setup], start_daemon: Callable[..., Daemon]
) -> None:
    """A fork that is alive but does not answer (SIGSTOP) costs one call timeout, then it is
    replaced by a new one; it does not block the daemon for a minute per call."""
    setup = make_setup()
    setup.config.write_text(
        setup.config.read_text().replace("block_lag = 0", "block_lag = 0\ncall_timeout_s = 3")
    )
    d = start_daemon(setup)
    d.wait_for("tick.done", 1, timeout=240)
    (frozen,) = d.forks()
    os.kill(frozen, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        failed = d.wait_for("tick.failed", 1, timeout=60)
        assert time.monotonic() - t0 < 30
        assert "fork unavailable" in str(failed[0]["error"])
        done = len(d.named("tick.done"))
        d.wait_for("tick.done", done + 1, timeout=120)
        assert frozen not in d.forks() and len(d.forks()) == 1
        assert not alive(frozen)  # the frozen one was killed, not left stopped
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGKILL)
    assert d.stop() == 0
    assert len(_assert_once(setup)) == PROPOSALS


# -- 3. the journal: torn line, read-only, a full disk -------------------------------------


def test_torn_journal_last_line(
    proxy: RpcProxy, make_setup: Callable[..., Setup], start_daemon: Callable[..., Daemon]
) -> None:
    setup = make_setup()
    setup.journal.write_text('{"id": "old", "idempotency_key": "k0", "status": "planning_fa')
    d = start_daemon(setup)
    d.wait_for("tick.done", 1, timeout=240)
    assert d.stop() == 0
    bad = d.named("journal.bad_line")
    assert bad and bad[0]["file"] == str(setup.journal) and bad[0]["line"] == 1
    lines = setup.journal.read_text().splitlines()
    assert lines[0].endswith('"planning_fa')  # kept as it was, the next record on a new line
    listed = subprocess.run(
        [sys.executable, "-m", "agent.cli", "proposals", "list", "--journal", str(setup.journal)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == PROPOSALS
    assert "journal.bad_line" in listed.stderr and f"file={setup.journal} line=1" in listed.stderr
    setup.journal.write_text("\n".join(lines[1:]) + "\n")
    assert len(_assert_once(setup)) == PROPOSALS


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """A journal nobody can write: root ignores file modes, so as root the file is made
    immutable (``chattr +i``, ext4/xfs/btrfs); otherwise it is chmod 0444."""
    root = os.geteuid() == 0
    if root:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o444)
    try:
        yield
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o644)


def test_read_only_journal_keeps_proposals_and_list_never_writes(
    proxy: RpcProxy, make_setup: Callable[..., Setup], start_daemon: Callable[..., Daemon]
) -> None:
    setup = make_setup()
    setup.journal.write_text("")
    with read_only(setup.journal):
        d = start_daemon(setup)
        failed = d.wait_for("journal.append_failed", PROPOSALS, timeout=240)
        d.wait_for("tick.done", 2)
        assert d.proc.poll() is None  # the daemon keeps running
        assert "proposals journal" in str(failed[0]["error"])
        assert setup.spends() == PROPOSALS  # in the cap although not journaled yet
        before = setup.journal.stat()
        listed = subprocess.run(
            [sys.executable, "-m", "agent.cli", "proposals", "list", "--config", str(setup.config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert listed.returncode == 0, listed.stderr
        assert "no proposals" in listed.stdout
        after = setup.journal.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        ticks = len(d.named("tick.done"))
    d.wait_for("journal.recovered", PROPOSALS)
    d.wait_for("tick.done", ticks + 1)
    assert d.stop() == 0
    assert len(_assert_once(setup)) == PROPOSALS


def _fsize_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_store_then_restart(
    proxy: RpcProxy, make_setup: Callable[..., Setup], start_daemon: Callable[..., Daemon]
) -> None:
    """ "Disk full" without root mounts: RLIMIT_FSIZE on the daemon's process makes every write
    past 256 KiB fail (EFBIG, as ENOSPC would), so the store cannot grow."""
    setup = make_setup()
    d = start_daemon(setup, preexec=_fsize_limit(256 * 1024))
    d.proc.wait(timeout=240)
    d._reader.join(timeout=10)
    assert d.proc.returncode == 2
    assert d.last_line().startswith("error: ") and "agent.sqlite" in d.last_line()
    assert setup.records() == [] and setup.spends() == 0
    d2 = start_daemon(setup)
    d2.wait_for("tick.done", 2, timeout=240)
    assert d2.stop() == 0
    assert len(_assert_once(setup)) == PROPOSALS
    assert setup.observations() > 0


# -- 4. two daemons on one store ------------------------------------------------------------


def test_two_daemons_on_one_store(
    proxy: RpcProxy, make_setup: Callable[..., Setup], start_daemon: Callable[..., Daemon]
) -> None:
    setup = make_setup()
    first = start_daemon(setup)
    first.wait_for("agent.ready", 1, timeout=240)
    second = start_daemon(setup)
    assert second.proc.wait(timeout=60) == 2
    second._reader.join(timeout=10)
    assert second.last_line().startswith("error: another hedge-agent (pid ")
    assert "already running on store" in second.last_line()
    assert not second.forks()
    first.wait_for("tick.done", 2, timeout=240)
    assert first.stop() == 0
    assert len(_assert_once(setup)) == PROPOSALS


# -- 5. addresses at the config edge --------------------------------------------------------


def test_lowercase_account_is_protected_and_bad_checksum_is_refused(
    devnet: Devnet,
    proxy: RpcProxy,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    safe = str(devnet.dep["safe"]["address"])
    setup = make_setup(position=f'account = "{safe.lower()}"')
    d = start_daemon(setup, "--once")
    assert d.proc.wait(timeout=240) == 0
    d._reader.join(timeout=10)
    records = _assert_once(setup)
    assert len(records) == PROPOSALS
    assert {r["account"] for r in records} == {safe}
    assert any(r["action"] in ("repay_debt", "collateral_top_up") for r in records)
    # one wrong letter case: a typo, refused naming the field
    flipped = safe[:-1] + (safe[-1].lower() if safe[-1].isupper() else safe[-1].upper())
    if flipped[-1].isdigit():
        flipped = safe[:2] + safe[2].swapcase() + safe[3:]
    bad = make_setup(name="bad", position=f'account = "{flipped}"')
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(bad.config), "--once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: ")
    assert "position.account" in out.stderr and "checksum" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# -- 6. the chain RPC misbehaving -----------------------------------------------------------


def test_rpc_killed_and_restarted(
    devnet: Devnet,
    proxy: RpcProxy,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    from faults.proxy import rpc

    setup = make_setup()
    d = start_daemon(setup)
    d.wait_for("tick.done", 1, timeout=240)
    obs = setup.observations()
    proxy.stop()  # connection refused
    failed = d.wait_for("tick.failed", 2)
    assert "cannot connect" in str(failed[0]["error"])
    assert d.proc.poll() is None  # time-based budget: a few seconds down is not an outage
    rpc(devnet.url, "evm_mine")  # the chain moves on meanwhile: the next tick stores a new block
    proxy.start()
    done = len(d.named("tick.done"))
    d.wait_for("tick.done", done + 2)
    assert d.stop() == 0
    assert setup.observations() > obs
    assert len(_assert_once(setup)) == PROPOSALS


def test_rpc_accepts_and_never_answers(
    proxy: RpcProxy, make_setup: Callable[..., Setup], start_daemon: Callable[..., Daemon]
) -> None:
    """The per-request timeout (chain.timeout_s) and the tick deadline bound a silent RPC."""
    setup = make_setup()
    setup.config.write_text(
        setup.config.read_text().replace('name = "devnet"', 'name = "devnet"\ntimeout_s = 2')
    )
    d = start_daemon(setup)
    d.wait_for("tick.done", 1, timeout=240)
    proxy.inject("hang", {"eth_call"})
    t0 = time.monotonic()
    failed = d.wait_for("tick.failed", 1, timeout=60)
    assert time.monotonic() - t0 < 30
    assert "timed out" in str(failed[0]["error"])
    proxy.clear()
    done = len(d.named("tick.done"))
    d.wait_for("tick.done", done + 1, timeout=60)
    assert d.stop() == 0
    assert len(_assert_once(setup)) == PROPOSALS


@pytest.mark.parametrize(
    ("kind", "expect"),
    [
        ("http:429", None),  # retried after Retry-After: the tick succeeds
        ("http:503", "HTTP 503"),
        ("garbage", "not a JSON-RPC object"),
        ("rpc_error", "JSON-RPC error -32000"),
    ],
)
def test_rpc_bad_answers(
    kind: str,
    expect: str | None,
    proxy: RpcProxy,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    setup = make_setup()
    d = start_daemon(setup)
    d.wait_for("tick.done", 1, timeout=240)
    obs = setup.observations()
    failed_before = len(d.named("tick.failed"))
    proxy.inject(kind, {"eth_call"}, times=1 if expect is None else 3)
    done = len(d.named("tick.done"))
    if expect is not None:
        failed = d.wait_for("tick.failed", failed_before + 1, timeout=60)
        assert expect in str(failed[-1]["error"])
    d.wait_for("tick.done", done + 1, timeout=60)
    assert d.stop() == 0
    if expect is None:
        assert len(d.named("tick.failed")) == failed_before
        assert proxy.injected[kind] == 1
        assert d.named("tick.done")[-1]["rpc"]["rpc:devnet"]["retries"] >= 0
    assert setup.observations() >= obs
    assert len(_assert_once(setup)) == PROPOSALS


def test_wrong_chain_id_mid_run_halts(
    proxy: RpcProxy, make_setup: Callable[..., Setup], start_daemon: Callable[..., Daemon]
) -> None:
    setup = make_setup()
    d = start_daemon(setup)
    d.wait_for("tick.done", 1, timeout=240)
    forks = d.forks()
    # The provider now serves another chain (a real one: an anvil on chain id 1). The tick's
    # snapshot batch reads the chain id itself (no eth_chainId per tick); here it finds no
    # Multicall3, and the diagnosis of the failed snapshot asks the RPC which chain it is on.
    with AnvilProcess(chain_id=1) as other:
        proxy.upstream = other.url
        assert d.proc.wait(timeout=60) == 2
    d._reader.join(timeout=10)
    assert (
        d.last_line().startswith("error: ")
        and "is on chain 1, configuration expects 31337" in d.last_line()
    )
    _no_forks_left(d, forks)
    assert len(_assert_once(setup)) == PROPOSALS


# -- 7. stop signals and kill -9 --------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_mid_tick(
    sig: int, proxy: RpcProxy, make_setup: Callable[..., Setup], start_daemon: Callable[..., Daemon]
) -> None:
    setup = make_setup()
    proxy.inject("hang", {"eth_getLogs"})  # the tick is stuck in the liquidation scan
    d = start_daemon(setup)
    proxy.wait_for("eth_getLogs", 1, forwarded=False, timeout=240)
    forks = d.forks()
    t0 = time.monotonic()
    assert d.stop(sig, timeout=30) == 0
    assert time.monotonic() - t0 < 15
    assert d.named("tick.interrupted") and d.named("agent.stopped")
    assert not any(line.startswith("Traceback") for line in d.lines)
    _no_forks_left(d, forks)
    assert setup.records() == [] and setup.spends() == 0


def test_kill9_mid_tick_then_restart(
    proxy: RpcProxy, make_setup: Callable[..., Setup], start_daemon: Callable[..., Daemon]
) -> None:
    setup = make_setup()
    proxy.inject("delay:5", {"eth_getStorageAt"})  # mid-simulation
    d = start_daemon(setup)
    proxy.wait_for("eth_getStorageAt", 1, forwarded=False, timeout=240)
    forks = d.forks()
    assert forks
    obs = setup.observations()
    d.kill()
    _no_forks_left(d, forks)  # PR_SET_PDEATHSIG: the fork died with the daemon
    proxy.clear()
    d2 = start_daemon(setup)
    d2.wait_for("tick.done", 2, timeout=240)
    assert d2.stop() == 0
    assert setup.observations() >= obs
    assert len(_assert_once(setup)) == PROPOSALS


# -- 8. configuration and stale data --------------------------------------------------------


def test_config_typo_is_one_line(make_setup: Callable[..., Setup]) -> None:
    setup = make_setup()
    setup.config.write_text(setup.config.read_text().replace("tick_interval_s", "tick_intervall_s"))
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(setup.config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "agent.tick_intervall_s" in lines[0] and "Extra inputs are not permitted" in lines[0]
    assert not setup.store.exists()


def test_stale_oracle_is_written_into_the_proposal(
    devnet: Devnet,
    proxy: RpcProxy,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    from faults.proxy import rpc

    rpc(devnet.url, "evm_increaseTime", [2 * 3600])  # past the feeds' 1 h heartbeat
    rpc(devnet.url, "evm_mine")
    setup = make_setup()
    d = start_daemon(setup, "--once")
    assert d.proc.wait(timeout=240) == 0
    d._reader.join(timeout=10)
    records = _assert_once(setup)
    defi = [r for r in records if r["status"] != "advisory"]
    assert len(defi) == SENT
    # The stale feeds are the DeFi layer's Chainlink oracles; the SPX ticket does not read them.
    for r in defi:
        assert any("stale answer" in w for w in r["warnings"])


# -- 9. the Safe Transaction Service and the Builder files (issue 24 items 1, 2, 10) -----------
# The real fake service (tests/fake_safe_service.py, an aiohttp server on loopback that
# recomputes every safeTxHash itself) with the devnet Safe's owners and one delegate.

DELEGATE_KEY = "0x" + "4c" * 32


@pytest.fixture
def service(devnet: Devnet) -> Iterator[FakeSafeService]:
    from eth_account import Account

    svc = FakeSafeService(
        chain_id=int(devnet.dep.get("chain_id", 31337)),
        owners=list(devnet.dep["safe"]["owners"]),
        delegates={Account.from_key(DELEGATE_KEY).address},
    )
    with serve_in_thread(svc):
        yield svc


def _with_service(setup: Setup, svc: FakeSafeService, timeout_s: float = 5) -> Setup:
    setup.config.write_text(
        setup.config.read_text()
        + f'\n[sinks.safe_service]\nenabled = true\nbase_url = "{svc.base}"\n'
        f'delegate_key = "{DELEGATE_KEY}"\ntimeout_s = {timeout_s}\n'
    )
    return setup


def _wait(cond: Callable[[], object], what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _queued_once(svc: FakeSafeService, devnet: Devnet, records: list[dict[str, object]]) -> None:
    """The Safe's queue holds each proposed transaction once: no calldata at two nonces, one
    entry per simulated Safe proposal, at the nonce and hash its journal record names."""
    safe = str(devnet.dep["safe"]["address"])
    queue = svc.queue(safe)
    calls = [(t["to"], t["value"], t["data"], t["operation"]) for t in queue]
    assert len(calls) == len(set(calls)), f"the same transaction queued twice: {queue}"
    safe_records = [r for r in records if r.get("safe_tx") and r["status"] == "simulated"]
    assert len(queue) == len(safe_records) == SENT
    by_hash = {t["safeTxHash"]: t for t in queue}
    for r in safe_records:
        ss = r["safe_service"]
        assert isinstance(ss, dict) and ss.get("queued") is True and "error" not in ss, ss
        assert by_hash[ss["safe_tx_hash"]]["nonce"] == ss["nonce"] == r["safe_tx"]["nonce"]  # type: ignore[index]


def _one_builder_file_each(setup: Setup, records: list[dict[str, object]]) -> None:
    files = sorted(p.name for p in (setup.dir / "safe-tx-builder").glob("*.json"))
    named = sorted(Path(str(r["safe_tx_builder_file"])).name for r in records if r.get("safe_tx"))
    assert files == named, f"Builder files {files} != the journal's {named}"
    assert len(files) == SENT


def test_kill9_between_service_post_and_commit_queues_once(
    devnet: Devnet,
    service: FakeSafeService,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    """kill -9 while the service holds the first post's reply (it has queued the repay): after
    the restart the repay is found in the queue by its safeTxHash, not proposed again at the
    next nonce, and it has one Builder file."""
    setup = _with_service(make_setup(), service)
    service.late_replies, service.reply_delay_s = 1, 60
    d = start_daemon(setup)
    _wait(lambda: service.txs, "the first post to reach the service")
    d.kill()
    assert setup.records() == []
    service.late_replies = 0
    d2 = start_daemon(setup)
    d2.wait_for("tick.done", 2, timeout=240)
    assert d2.stop() == 0
    records = _assert_once(setup)
    assert len(records) == PROPOSALS
    _queued_once(service, devnet, records)
    _one_builder_file_each(setup, records)
    repay = [r for r in records if r["action"] in ("repay_debt", "collateral_top_up")]
    assert repay and repay[0]["safe_service"]["already_queued"] is True  # type: ignore[index]
    assert d2.named("recovery.done")[0]["sinks_redelivered"] == 1


def test_store_write_failing_after_the_service_post_queues_once(
    devnet: Devnet,
    service: FakeSafeService,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    """The disk fills while the service holds the first post's reply (RLIMIT_FSIZE 0 set on the
    running daemon: every store, journal and file write fails with EFBIG, as with ENOSPC), and
    frees up after the failure: the repay is queued once and has one Builder file."""
    setup = _with_service(make_setup(), service)
    service.late_replies, service.reply_delay_s = 1, 2
    d = start_daemon(setup)
    _wait(lambda: service.txs, "the first post to reach the service")
    # The soft limit only: lowering the hard one could not be undone without CAP_SYS_RESOURCE.
    soft, hard = resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (0, hard))
    try:
        _wait(
            lambda: d.named("sinks.deliver_failed") or d.named("tick.failed"),
            "a failed write",
            timeout=60,
        )
    finally:
        resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))
    done = len(d.named("tick.done"))
    d.wait_for("tick.done", done + 2, timeout=240)
    assert d.stop() == 0
    records = _assert_once(setup)
    assert len(records) == PROPOSALS
    _queued_once(service, devnet, records)
    _one_builder_file_each(setup, records)


def test_lost_service_reply_is_recorded_queued(
    devnet: Devnet,
    service: FakeSafeService,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    """Every reply to the repay's post is lost (each attempt times out after the service
    queued it): the record says queued, as the service does, with the lost reply noted."""
    setup = _with_service(make_setup(), service, timeout_s=1)
    service.late_replies, service.reply_delay_s = 10, 3
    d = start_daemon(setup)
    d.wait_for("tick.done", 1, timeout=240)
    service.late_replies = 0
    assert d.stop() == 0
    records = _assert_once(setup)
    assert len(records) == PROPOSALS
    _queued_once(service, devnet, records)
    repay = next(r for r in records if r["action"] in ("repay_debt", "collateral_top_up"))
    ss = repay["safe_service"]
    assert isinstance(ss, dict) and "timeout after" in str(ss.get("post_error")), ss


def test_kill9_after_the_live_intent_journals_what_recovery_decided(
    devnet: Devnet,
    proxy: RpcProxy,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    """Issue 24 item 9: kill -9 while the first broadcast hangs (its intent is in the store,
    the transaction never reached the chain). After the restart, reconciliation gives up on it
    ("dropped", never re-sent) and the journal line says so, not "intent"."""
    setup = make_setup(live=True)
    setup.config.write_text(
        setup.config.read_text().replace("receipt_timeout_s = 20", "receipt_timeout_s = 10")
    )
    nonce0 = devnet.nonce()
    proxy.inject("hang", {SEND})
    d = start_daemon(setup)
    proxy.wait_for(SEND, 1, forwarded=False, timeout=240)
    d.kill()
    assert [s[1] for s in setup.live_sends()] == ["intent"]
    proxy.clear()
    d2 = start_daemon(setup)
    d2.wait_for("live.reconciled", 1, timeout=120)
    _wait(lambda: len(setup.records()) == PROPOSALS, "every journal line", timeout=240)
    assert d2.stop() == 0
    records = _assert_once(setup)
    dropped = [r for r in records if r.get("live") and r["live"][0]["status"] == "dropped"]
    assert len(dropped) == 1, [r.get("live") for r in records]
    assert not [r for r in records if any(s["status"] == "intent" for s in r.get("live") or [])]
    statuses = sorted(s[1] for s in setup.live_sends())
    assert statuses == ["dropped"] + ["mined"] * (SENT - 1)
    assert proxy.forwarded[SEND] == SENT - 1 and devnet.nonce() - nonce0 == SENT - 1


# -- 10. the chain RPC pool: rotation reaches the fork, lagging providers, hangs, reorgs --------
# (issue 24 items 3, 4, 5, 8, 10)


def _with_second_url(setup: Setup, first: RpcProxy, second: RpcProxy) -> None:
    setup.config.write_text(
        setup.config.read_text().replace(
            f'rpc_url = "{first.url}"', f'rpc_url = "{first.url}"\nrpc_urls = ["{second.url}"]'
        )
    )


def _get(port: int, path: str) -> tuple[int, dict[str, object]]:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_first_rpc_url_refusing_the_fork_rotates_too(
    devnet: Devnet,
    proxy: RpcProxy,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    """24.3: with the first of the chain's URLs refusing, the reads rotate to the second, and
    so does the fork (its relay reads through the chain's pool): the first tick proposes."""
    second = RpcProxy(devnet.url)
    try:
        setup = make_setup()
        _with_second_url(setup, proxy, second)
        proxy.stop()  # the first URL refuses connections from the start
        d = start_daemon(setup)
        d.wait_for("tick.done", 1, timeout=240)
        assert d.named("tick.failed") == []
        assert d.named("tick.done")[0]["proposals"] == PROPOSALS
        # the fork's reads (anvil's state fetches through the relay) went to the second URL
        assert second.forwarded["eth_getStorageAt"] + second.forwarded["eth_getAccountInfo"] > 0
        assert proxy.seen == {}
        assert d.stop() == 0
        records = _assert_once(setup)
        assert len(records) == PROPOSALS and {r["status"] for r in records} <= SIMULATED
    finally:
        second.close()


def test_lagging_provider_is_left_and_a_tick_never_goes_back(
    devnet: Devnet,
    proxy: RpcProxy,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    """24.4: the first URL 50 blocks behind is noticed (compared with the second's head),
    warned about and left; the first is taken back once it recovers; /readyz names the lag.
    When every URL answers an older block than the last tick's, the tick is refused."""
    from agent.core.anvil import free_port
    from faults.proxy import rpc

    head = int(rpc(devnet.url, "eth_blockNumber"), 16)
    behind = min(50, head // 2)
    port = free_port()
    second = RpcProxy(devnet.url)
    try:
        setup = make_setup(extra=f'\n[agent.http]\nlisten = "127.0.0.1:{port}"\n')
        _with_second_url(setup, proxy, second)
        proxy.inject(f"lag:{behind}")
        d = start_daemon(setup)
        (lagging, *_) = d.wait_for("rpc.lagging", 1, timeout=240)
        assert lagging["lagging"] == ["rpc:devnet"] and lagging["best_head"] == head
        assert lagging["using"] == "rpc:devnet#2"
        first_tick = d.wait_for("tick.done", 1)[0]
        assert first_tick["block_number"] == head  # not head - 50
        status, body = _get(port, "/readyz")
        assert status == 200, body
        providers = body["rpc_providers"]["devnet"]  # type: ignore[index]
        assert providers["rpc:devnet"] == {
            "head": head - behind,
            "lag_blocks": behind,
            "active": False,
        }
        assert providers["rpc:devnet#2"]["active"] is True
        # the first recovers: it is the preferred URL again
        proxy.clear()
        calls = proxy.forwarded["eth_call"]
        rotated = d.wait_for("rpc.rotated", 2, timeout=60)
        assert [r["reason"] for r in rotated] == ["lagging", "recovered"]
        done = len(d.named("tick.done"))
        d.wait_for("tick.done", done + 1, timeout=60)
        assert proxy.forwarded["eth_call"] > calls
        # every URL now answers an older block: not ticked, and /readyz says why
        proxy.inject(f"lag:{behind}")
        second.inject(f"lag:{behind}")
        failed = d.wait_for("tick.failed", 1, timeout=60)[0]
        assert f"block {head - behind} is older than block {head}" in str(failed["error"])
        status, body = _get(port, "/readyz")
        rpc_dep = body["dependencies"]["rpc:devnet"]  # type: ignore[index]
        assert status == 503 and "is older than block" in rpc_dep["error"]
        proxy.clear()
        second.clear()
        done = len(d.named("tick.done"))
        d.wait_for("tick.done", done + 1, timeout=60)
        assert d.stop() == 0
        assert len(_assert_once(setup)) == PROPOSALS
    finally:
        second.close()


def test_hung_rpc_is_bounded_and_readiness_expires(
    proxy: RpcProxy, make_setup: Callable[..., Setup], start_daemon: Callable[..., Daemon]
) -> None:
    """24.8 and 24.10: an RPC that accepts and never answers, with the default timeouts: each
    request ends at its deadline (chain.request_deadline_s, every retry included), so the tick
    fails in well under the ~100 s it took; meanwhile /readyz turns 503 once the last check is
    older than agent.readiness_max_age_s, and green again when the RPC answers."""
    from agent.core.anvil import free_port

    port = free_port()
    setup = make_setup(
        extra_agent="readiness_max_age_s = 5",
        extra=f'\n[agent.http]\nlisten = "127.0.0.1:{port}"\n',
    )
    # no tick deadline short enough to hide the requests' own bound
    setup.config.write_text(
        setup.config.read_text().replace("tick_timeout_s = 60", "tick_timeout_s = 300")
    )
    d = start_daemon(setup)
    d.wait_for("tick.done", 1, timeout=240)
    assert _get(port, "/readyz")[0] == 200
    proxy.inject("hang")
    t0 = time.monotonic()
    status, body = 200, {}
    while status == 200 and time.monotonic() - t0 < 20:
        time.sleep(0.5)
        status, body = _get(port, "/readyz")
    expired_after = time.monotonic() - t0
    assert status == 503, body
    assert "more than readiness_max_age_s (5s)" in body["dependencies"]["rpc:devnet"]["error"]  # type: ignore[index]
    assert expired_after < 5 + 1 + 3  # the age limit, one tick interval, slack
    failed = d.wait_for("tick.failed", 1, timeout=120)
    took = time.monotonic() - t0
    assert "request deadline (12s" in str(failed[0]["error"]), failed[0]["error"]
    # Three requests in a row meet the hang (the snapshot, the head for the liquidation scan,
    # the failed snapshot's diagnosis), 12 s each; before: 3 x (3 attempts x 10 s) ~ 95 s.
    assert took < 45, took
    proxy.clear()
    done = len(d.named("tick.done"))
    d.wait_for("tick.done", done + 1, timeout=60)
    assert _get(port, "/readyz")[0] == 200
    assert d.stop() == 0
    assert len(_assert_once(setup)) == PROPOSALS


def test_chain_time_going_back_is_refused(
    devnet: Devnet,
    proxy: RpcProxy,
    make_setup: Callable[..., Setup],
    start_daemon: Callable[..., Daemon],
) -> None:
    """24.10: a node whose clock was set back mines a block two days before the last tick's
    (a higher block, an earlier time): the tick is refused with both times named (the session
    day would move back and Aave's index reads revert), and ticks resume once time is right."""
    from faults.proxy import rpc

    setup = make_setup()
    d = start_daemon(setup)
    d.wait_for("tick.done", 1, timeout=240)
    ticked = d.named("tick.done")[-1]["block_number"]
    ts = int(rpc(devnet.url, "eth_getBlockByNumber", [hex(ticked), False])["timestamp"], 16)
    try:
        rpc(devnet.url, "anvil_setTime", [ts - 2 * 86_400])
        rpc(devnet.url, "evm_mine")
        failed = d.wait_for("tick.failed", 1, timeout=60)[0]
        assert f"chain time went back: block {ticked + 1} has timestamp {ts - 2 * 86_400}" in str(
            failed["error"]
        ), failed["error"]
        assert f"block {ticked} ticked before had {ts}" in str(failed["error"])
    finally:
        rpc(devnet.url, "anvil_setTime", [ts + 60])  # later tests start from a sane clock
        rpc(devnet.url, "evm_mine")
    done = len(d.named("tick.done"))
    d.wait_for("tick.done", done + 1, timeout=60)
    assert d.named("tick.done")[-1]["block_number"] == ticked + 2
    assert d.stop() == 0
    assert len(_assert_once(setup)) == PROPOSALS


def test_reorg_at_the_forks_height_is_simulated_on_the_new_block(devnet: Devnet) -> None:
    """24.5: the chain's head block is replaced at the same height (anvil_reorg) by one where
    ETH fell 20%. The fork, already at that height, must simulate on the new block: the
    health factor it reads equals the chain's after the reorg, not the replaced block's.

    Keep it the module's last test on ``devnet``: anvil_reorg drops the module devnet's
    evm_snapshot, so a later test could not be reset to the stressed state."""
    import asyncio

    from eth_abi.abi import encode as abi_encode
    from eth_utils.crypto import keccak

    from agent.core.abi import load_abi
    from agent.core.rpc_pool import RpcPool
    from agent.simulator.fork import ForkSimulator
    from faults.proxy import rpc

    dep = devnet.dep
    safe, pool_addr = dep["safe"]["address"], dep["aave"]["pool"]
    pool = load_abi("Pool")
    feed = load_abi("AggregatorV3")

    def chain_hf() -> int:
        raw = rpc(
            devnet.url,
            "eth_call",
            [{"to": pool_addr, "data": pool.encode_hex("getUserAccountData", safe)}, "latest"],
        )
        return int(pool.decode_output("getUserAccountData", bytes.fromhex(raw[2:]))[5])

    eth_usd = dep["chainlink"]["ETH/USD"]
    raw = rpc(
        devnet.url,
        "eth_call",
        [{"to": eth_usd, "data": feed.encode_hex("latestRoundData")}, "latest"],
    )
    answer = int(feed.decode_output("latestRoundData", bytes.fromhex(raw[2:]))[1])
    deployer = dep["accounts"]["deployer"]

    def reorg_to(price: int) -> None:
        """Replace the head block (same height, a new hash) by one setting the ETH price."""
        head = int(rpc(devnet.url, "eth_blockNumber"), 16)
        old_hash = rpc(devnet.url, "eth_getBlockByNumber", [hex(head), False])["hash"]
        data = keccak(text="updateAnswer(int256)")[:4] + abi_encode(["int256"], [price])
        tx = {"from": deployer, "to": eth_usd, "data": "0x" + data.hex()}
        rpc(devnet.url, "anvil_reorg", [1, [[tx, 0]]])
        assert int(rpc(devnet.url, "eth_blockNumber"), 16) == head
        assert rpc(devnet.url, "eth_getBlockByNumber", [hex(head), False])["hash"] != old_hash

    async def run() -> tuple[int, int, int, int, int]:
        # Two forks at the head: one dry-runs (the hash is checked while it runs), one is
        # asked through ensure() (the hash is checked before).
        # (each on its own upstream pool, as App gives a fork its chain's pool)
        async with (
            RpcPool([devnet.url], source="fork:upstream", timeout_s=20.0) as up_run,
            RpcPool([devnet.url], source="fork:upstream", timeout_s=20.0) as up_ensure,
        ):
            by_run = ForkSimulator(up_run, pool=pool_addr, chain_id=int(dep["chain_id"]))
            by_ensure = ForkSimulator(up_ensure, pool=pool_addr, chain_id=int(dep["chain_id"]))
            try:
                head = int(rpc(devnet.url, "eth_blockNumber"), 16)
                await by_run.ensure(head)
                fork = await by_ensure.ensure(head)
                hf0 = (await by_ensure.account_view(fork, safe)).health_factor_wad
                chain0 = chain_hf()
                reorg_to(answer * 8 // 10)  # ETH falls 20% in a block replacing the head
                res = await by_run.simulate_eoa(head, deployer, [], safe)
                assert res.success and res.before is not None, res.error
                fork = await by_ensure.ensure(head)
                hf2 = (await by_ensure.account_view(fork, safe)).health_factor_wad
                return hf0, chain0, res.before.health_factor_wad, hf2, chain_hf()
            finally:
                await by_run.stop()
                await by_ensure.stop()

    hf0, chain0, by_run, by_ensure, chain1 = asyncio.run(run())
    assert hf0 == chain0
    assert chain1 < chain0  # the replacing block holds the fall
    # what a proposal records as "before", and what ensure() gives: the new block's
    assert by_run == chain1, f"simulated on the replaced block: HF {by_run} vs {chain1}"
    assert by_ensure == chain1, f"simulated on the replaced block: HF {by_ensure} vs {chain1}"
