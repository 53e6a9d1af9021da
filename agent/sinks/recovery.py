"""What the daemon does for durability at start-up and at each tick, in one place, so the
runner has three call sites: ``take_locks`` (one daemon per store and journal), ``recover``
(before anything else) and ``each_tick``.

Start-up, in order: reap fork anvils a killed daemon left behind; reconcile every live send
without an outcome by hash and nonce; deliver committed proposals whose outside sinks did not
finish (the Safe Transaction Service post, found again by its safeTxHash, and the Builder file);
journal committed proposals whose line is missing (once their live sends have an outcome); put
journaled spends missing from the ledger back into it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from agent.core.anvil import reap_orphans
from agent.core.errors import AgentError
from agent.core.lock import ExclusiveLock
from agent.core.rpc import RpcClient
from agent.sinks.config import LiveConfig
from agent.sinks.journal import ProposalJournal
from agent.sinks.live import reconcile_live_sends
from agent.sinks.outbox import flush_outbox, reconcile_spends
from agent.sinks.publish import ProposalSinks
from agent.store.ledger import LiveSend, ProposalLedger

log = structlog.get_logger(__name__)


def _checked_parent(path: str, what: str) -> Path:
    p = Path(path)
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise AgentError(f"{what} {path}: {parent} is a file, not a directory")
    return p


def take_locks(store_path: str, journal_path: str) -> list[ExclusiveLock]:
    """Exclusive locks on the store and the journal; ``AlreadyRunning`` names the holder."""
    locks: list[ExclusiveLock] = []
    store = _checked_parent(store_path, "store path")
    journal = _checked_parent(journal_path, "journal path")
    if store_path != ":memory:":
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AgentError(f"store path {store_path}: {exc.strerror}") from None
        lock = ExclusiveLock(f"{store}.lock", "store")
        lock.acquire()
        locks.append(lock)
    # The journal file itself is locked (created if it can be; a read-only journal is still
    # locked, through a read-only descriptor).
    jlock = ExclusiveLock(journal, "journal")
    try:
        if not journal.exists():
            with contextlib.suppress(OSError):
                journal.parent.mkdir(parents=True, exist_ok=True)
                journal.touch()
        if jlock.acquire(create=False, note_pid=False):
            locks.append(jlock)
    except AgentError:
        for lock in locks:
            lock.release()
        raise
    return locks


def fork_pid_dir(store_path: str) -> Path:
    """Where the simulator's fork anvils leave their pidfiles (beside the store)."""
    return Path(store_path).resolve().parent / "forks"


def _live_give_up_s(live: LiveConfig) -> float:
    return 2 * live.receipt_timeout_s


def reap_forks(store_path: str) -> list[int]:
    reaped = reap_orphans(fork_pid_dir(store_path))
    if reaped:
        log.warning("fork.reaped", pids=reaped, note="fork anvils left by a killed daemon")
    return reaped


async def reconcile_each_chain(
    live: LiveConfig, rpcs: Mapping[int, RpcClient], ledger: ProposalLedger
) -> list[LiveSend]:
    """Every chain's open sends settled on that chain's own RPC (``rpcs`` by chain id); a send
    of a chain no longer configured waits (no RPC to read it on)."""
    changed: list[LiveSend] = []
    for chain_id, rpc in rpcs.items():
        changed += await reconcile_live_sends(
            ledger, rpc, give_up_after_s=_live_give_up_s(live), chain_id=chain_id
        )
    return changed


async def recover(
    live: LiveConfig,
    rpcs: Mapping[int, RpcClient],
    ledger: ProposalLedger,
    journal: ProposalJournal,
    sinks: Sequence[ProposalSinks] = (),
) -> None:
    """``rpcs``: every chain's RPC by chain id, each chain's live sends settled on its own;
    ``sinks``: every chain's sinks, to deliver what a crash left undelivered."""
    changed = await reconcile_each_chain(live, rpcs, ledger)
    open_sends = ledger.live_sends(open_only=True)
    delivered = [await s.deliver_pending() for s in sinks]
    flushed = flush_outbox(ledger, journal)
    added = reconcile_spends(ledger, journal.records())
    log.info(
        "recovery.done",
        live_reconciled=len(changed),
        live_open=len(open_sends),
        sinks_redelivered=sum(delivered),
        journal_recovered=flushed,
        spends_recovered=added,
    )


async def each_tick(
    live: LiveConfig,
    rpcs: Mapping[int, RpcClient],
    ledger: ProposalLedger,
    journal: ProposalJournal,
    sinks: Sequence[ProposalSinks] = (),
) -> None:
    """Open live sends get their outcome, each on its chain's RPC; outside sinks and journal
    lines that could not be written are retried."""
    if ledger.live_sends(open_only=True):
        await reconcile_each_chain(live, rpcs, ledger)
    for s in sinks:
        await s.deliver_pending()
    flush_outbox(ledger, journal)


async def settle_autonomous(sinks: ProposalSinks) -> None:
    """This chain's open autonomous sends get their outcome on the chain's own RPC."""
    ex = sinks.executor
    if ex is None or not sinks.ledger.live_sends(open_only=True):
        return
    await reconcile_live_sends(
        sinks.ledger, ex.rpc, give_up_after_s=2 * ex.cfg.receipt_timeout_s, chain_id=ex.chain_id
    )


async def recover_autonomous(sinks: ProposalSinks) -> None:
    """At start-up: settle this chain's autonomous sends, then broadcast again each fresh
    intent whose nonce is unused (a kill between the intent and the broadcast), once."""
    ex = sinks.executor
    if ex is None:
        return
    await settle_autonomous(sinks)
    sent = await ex.rebroadcast_fresh(sinks.ledger, now=time.time())
    if sent:
        log.warning("recovery.autonomous_rebroadcast", tx_hashes=sent)
