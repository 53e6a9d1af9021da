"""Operator notifications: one message per proposal, per halt, per data source failing for too
long, per pause/resume. Sent through apprise (one URL scheme for Slack, Telegram, Discord,
email, generic JSON webhooks).

Delivery never sits on the tick's path: ``submit`` only puts a notice on a bounded queue and
returns; one task of its own sends them, retried under the project's one retry policy
(``agent.core.retry``). Each attempt runs apprise in a short-lived child process
(``notify_child``) under a TOTAL deadline: apprise times out per read, so an endpoint trickling
one byte a second would otherwise hold the attempt for ever, and a thread cannot be cancelled
(the daemon could not exit). The child is killed at the deadline or when the notifier stops. A full queue drops the oldest non-proposal notice to make room for a
proposal (the proposal itself is always in the journal; the notice is how people hear of it).
The same key is not sent twice within the cooldown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from agent.core.errors import SourceError, TransportError
from agent.core.retry import RetryPolicy, retryable, with_retries
from agent.sinks.config import NotifyConfig

log = structlog.get_logger("agent.notify")

Kind = Literal[
    "proposal", "halt", "source_failing", "paused", "resumed", "source_recovered", "guard_critical"
]
Level = Literal["info", "success", "warning", "failure"]
# (title, body, level): delivered when it returns; raises a SourceError when not (retried as
# ``agent.core.retry`` decides).
Send = Callable[[str, str, Level], Awaitable[None]]
# (kind, outcome) -> None; how the exporter counts notifications.
Counter = Callable[[str, str], None]


@dataclass(frozen=True)
class Notice:
    kind: Kind
    key: str  # what deduplication compares (a proposal's idempotency key, a source name, ...)
    title: str
    body: str
    level: Level = "info"


def _usd(v: Any) -> str:
    return f"${float(v):,.2f}" if isinstance(v, int | float | str) and v != "" else "n/a"


def _hf(v: Any) -> str:
    return f"{float(v):.3f}" if isinstance(v, int | float) else "n/a"


def proposal_notice(record: Mapping[str, Any], *, top_reasons: int = 3) -> Notice:
    sim = record.get("simulation") or {}
    sizing = record.get("sizing") or {}
    size = _usd(sizing.get("spend_usd"))
    if sizing.get("amount") and sizing.get("asset"):
        size += f" ({sizing['amount']} {sizing['asset']} base units)"
    if isinstance(record.get("option"), Mapping):
        o = record["option"]
        size += f", put {o.get('horizon')} strike {o.get('strike')}"
    if not sim:
        sim_line = "not simulated"
    elif sim.get("success"):
        sim_line = f"success on fork block {sim.get('fork_block')}"
    else:
        sim_line = f"FAILED: {sim.get('error')}"
    reasons = [str(x) for x in (record.get("explanation") or [])][:top_reasons]
    lines = [
        f"action: {record.get('action')}  status: {record.get('status')}",
        (f"position: {record['position']}  " if record.get("position") else "")
        + f"account: {record.get('account')}  chain: {record.get('chain')}"
        + f" ({record.get('chain_id')})",
        f"size: {size}",
        f"health factor: {_hf(sim.get('health_factor_before'))} -> "
        f"{_hf(sim.get('health_factor_after'))}",
        f"simulation: {sim_line}",
        f"safe file: {record.get('safe_tx_builder_file') or 'none'}",
        f"proposal: {record.get('id')}  key: {record.get('idempotency_key')}",
    ]
    if record.get("error"):
        lines.append(f"error: {record['error']}")
    auto = record.get("autonomous")
    if isinstance(auto, Mapping):
        # Sent at once, not waiting for signers (issue 23): what, why, hash, HF before -> after.
        if auto.get("status") == "not_sent":
            lines.insert(0, f"NOT sent autonomously: {auto.get('why_not')}")
        else:
            lines[0:0] = [
                f"SENT autonomously by the {auto.get('mode')} {auto.get('sender')}: "
                f"{auto.get('status')}",
                f"tx: {', '.join(str(h) for h in auto.get('tx_hashes') or ()) or 'none'}",
                f"health factor on chain: {_hf(auto.get('health_factor_before'))} -> "
                f"{_hf(auto.get('health_factor_after'))}",
                f"why: {auto.get('why')}",
            ]
    ticket = record.get("ticket")
    if isinstance(ticket, Mapping):
        # An SPX advisory ticket: nothing is sent; a person places the order.
        legs = ticket.get("legs") or ()
        lines.append(f"advisory ticket: {len(legs)} leg(s), csv {ticket.get('csv') or 'none'}")
    if reasons:
        lines.append("why:")
        lines += [f"- {r}" for r in reasons]
    status = str(record.get("status"))
    level: Level = "success" if status == "simulated" else "warning"
    sent = isinstance(auto, Mapping) and auto.get("status") not in (None, "not_sent")
    if sent and isinstance(auto, Mapping) and auto.get("status") != "mined":
        level = "failure"  # sent but not (yet) mined: someone should look
    return Notice(
        "proposal",
        f"proposal:{record.get('idempotency_key')}",
        ("hedge-agent EXECUTED: " if sent else "hedge-agent proposal: ")
        + f"{record.get('action')} ({status})"
        + f" on {record.get('position') or record.get('chain')}",
        "\n".join(lines),
        level,
    )


def guard_critical_notice(position: str, lines: list[str]) -> Notice:
    """A position at or below its critical health factor (the liquidation guard)."""
    return Notice(
        "guard_critical",
        f"guard_critical:{position}",
        f"CRITICAL: {position} near liquidation",
        "\n".join(lines),
        "failure",
    )


def halt_notice(reason: str) -> Notice:
    return Notice("halt", f"halt:{reason}", "hedge-agent halted", reason, "failure")


def pause_notice(paused: bool, reason: str | None) -> Notice:
    if paused:
        return Notice(
            "paused",
            "pause",
            "hedge-agent paused",
            f"proposals are paused (collecting and evaluating go on); reason: {reason or 'none'}",
            "warning",
        )
    return Notice("resumed", "resume", "hedge-agent resumed", "proposals are enabled again")


class SourceWatch:
    """When each data source started failing; a notice once it has failed for ``after_s``."""

    def __init__(self, after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.after_s = after_s
        self.clock = clock
        self.failing_since: dict[str, float] = {}
        self.notified: set[str] = set()

    def failed(self, source: str, error: str) -> Notice | None:
        now = self.clock()
        since = self.failing_since.setdefault(source, now)
        if now - since < self.after_s or source in self.notified:
            return None
        self.notified.add(source)
        return Notice(
            "source_failing",
            f"source:{source}",
            f"hedge-agent: data source {source} failing",
            f"{source} has failed for {now - since:,.0f} s; last error: {error}",
            "warning",
        )

    def ok(self, source: str) -> Notice | None:
        self.failing_since.pop(source, None)
        if source not in self.notified:
            return None
        self.notified.discard(source)
        return Notice(
            "source_recovered",
            f"recovered:{source}",
            f"hedge-agent: data source {source} recovered",
            f"{source} answers again",
        )


SOURCE = "notify"


def apprise_sender(cfg: NotifyConfig) -> Send:
    """Check every URL with apprise now (a bad one is a config error naming only its scheme);
    the returned send delivers through a ``notify_child`` process within ``cfg.timeout_s``."""
    import apprise  # imported here: only daemons with notifications configured need it

    ap = apprise.Apprise()
    for url in cfg.urls:
        if not ap.add(url.get_secret_value()):
            # The URL may hold a token: name its scheme only.
            scheme = url.get_secret_value().split("://", 1)[0]
            raise ValueError(f"sinks.notify.urls: apprise does not accept a {scheme}:// URL")
    urls = [u.get_secret_value() for u in cfg.urls]

    async def send(title: str, body: str, level: Level) -> None:
        payload = {
            "urls": urls,
            "title": title,
            "body": body,
            "level": level,
            "deadline_s": cfg.timeout_s,
        }
        await deliver_in_child(json.dumps(payload).encode(), cfg.timeout_s)

    return send


async def deliver_in_child(payload: bytes, timeout_s: float) -> None:
    """One attempt: a ``notify_child`` process fed ``payload`` on stdin, killed (and reaped)
    at ``timeout_s`` or when the caller is cancelled."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.sinks.notify_child",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(timeout_s):
            await proc.communicate(payload)
    except TimeoutError:
        raise TransportError(SOURCE, f"no answer within {timeout_s:g} s") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode == 2:
        raise SourceError(SOURCE, "apprise rejected a URL")  # checked at start; not retried
    if proc.returncode != 0:
        raise TransportError(SOURCE, f"endpoint refused or failed (exit {proc.returncode})")


class Notifier:
    def __init__(
        self,
        cfg: NotifyConfig,
        *,
        send: Send | None = None,
        count: Counter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        # The one retry policy (core/retry.py): ``backoff_s`` doubling, with jitter.
        self._retry = RetryPolicy(
            attempts=cfg.attempts, base_delay_s=cfg.backoff_s, max_delay_s=max(cfg.backoff_s, 300.0)
        )
        self._sleep = sleep
        self.enabled = bool(cfg.urls) or send is not None
        self._send = send if send is not None else (apprise_sender(cfg) if cfg.urls else None)
        self._count = count or (lambda kind, outcome: None)
        self._clock = clock
        self._queue: deque[Notice] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while nothing is queued or being sent
        self._idle.set()
        self._last: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, notice: Notice) -> bool:
        """Queue a notice without waiting. False when deduplicated or dropped."""
        if not self.enabled:
            return False
        now = self._clock()
        last = self._last.get(notice.key)
        if last is not None and now - last < self.cfg.cooldown_s:
            self._count(notice.kind, "deduplicated")
            return False
        if len(self._queue) >= self.cfg.queue_size and not self._make_room(notice):
            self._count(notice.kind, "dropped")
            log.warning("notify.dropped", kind=notice.kind, key=notice.key, note="queue full")
            return False
        self._last[notice.key] = now
        if notice.kind == "guard_critical":  # the highest priority: out before anything queued
            self._queue.appendleft(notice)
        else:
            self._queue.append(notice)
        self._idle.clear()
        self._wake.set()
        return True

    def _make_room(self, incoming: Notice) -> bool:
        if incoming.kind not in ("proposal", "guard_critical"):
            return False
        # a critical health factor is the highest priority: it may push out anything else
        keep = ("guard_critical",) if incoming.kind == "guard_critical" else ("proposal",)
        for old in self._queue:
            if old.kind not in keep:
                self._queue.remove(old)
                self._count(old.kind, "dropped")
                log.warning(
                    "notify.dropped", kind=old.kind, key=old.key, note="room for a proposal"
                )
                return True
        return False

    def start(self, tasks: asyncio.TaskGroup | None = None) -> None:
        """Run the delivery task, in the daemon's task group when given one."""
        if self.enabled and self._task is None:
            spawn = tasks.create_task if tasks is not None else asyncio.create_task
            self._task = spawn(self._run(), name="notifier")

    async def stop(self, drain_s: float = 10.0) -> None:
        """Give queued notices up to ``drain_s`` to go out (a halt notice is sent this way)."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=drain_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        for n in self._queue:
            log.warning("notify.unsent", kind=n.kind, key=n.key, note="daemon stopped")

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._deliver(self._queue.popleft())

    async def _deliver(self, notice: Notice) -> None:
        send = self._send
        assert send is not None
        tries = 0

        async def attempt(n: int) -> None:
            nonlocal tries
            tries = n + 1
            try:
                await send(notice.title, notice.body, notice.level)
            except SourceError as exc:
                if tries < self.cfg.attempts and retryable(exc):
                    log.warning(
                        "notify.retry",
                        kind=notice.kind,
                        key=notice.key,
                        attempt=tries,
                        error=str(exc),
                    )
                raise

        try:
            await with_retries(
                attempt,
                self._retry,
                source=SOURCE,
                what=notice.kind,
                sleep=self._sleep,
            )
        except SourceError as exc:
            self._count(notice.kind, "failed")
            log.warning(
                "notify.failed", kind=notice.kind, key=notice.key, attempt=tries, error=str(exc)
            )
            # Allow the same notice again at once: it was never delivered.
            self._last.pop(notice.key, None)
            return
        self._count(notice.kind, "sent")
        log.info("notify.sent", kind=notice.kind, key=notice.key, attempt=tries)
