"""Notifications through apprise's generic JSON webhook (``json://``) to a real local HTTP server:
the message a proposal produces, deduplication, retries on a failing endpoint, and a slow
endpoint that never holds up the caller."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from agent.sinks.config import NotifyConfig
from agent.sinks.notify import (
    Level,
    Notice,
    Notifier,
    SourceWatch,
    halt_notice,
    proposal_notice,
)


@dataclass
class Hook:
    """A webhook receiver: answers ``status`` (a list is consumed per request), after ``delay_s``."""

    received: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    url: str = ""
    got: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.received.append(body)
            self.got.set()
        return web.Response(status=status, text="{}")


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()
    app = web.Application()
    app.router.add_post("/hook", h.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    h.url = f"json://127.0.0.1:{server.port}/hook"
    try:
        yield h
    finally:
        await server.close()


RECORD: dict[str, Any] = {
    "id": "abc123def456",
    "idempotency_key": "2026-11-30:protection:0xsafe",
    "status": "simulated",
    "action": "collateral_top_up",
    "account": "0x000000000000000000000000000000000000dEaD",
    "chain": "devnet",
    "sizing": {"spend_usd": 150000.0, "amount": "61234", "asset": "WETH"},
    "simulation": {
        "success": True,
        "fork_block": 321,
        "health_factor_before": 1.1234,
        "health_factor_after": 1.5001,
    },
    "safe_tx_builder_file": "var/demo/safe-tx-builder/abc123def456.json",
    "explanation": ["S1 firing: TVL -12% in 48h", "S2 firing: CPI rising", "gate passed", "extra"],
}


def _cfg(url: str, **kw: Any) -> NotifyConfig:
    return NotifyConfig(urls=(SecretStr(url),), backoff_s=0.05, **kw)


def test_proposal_message_holds_what_a_reviewer_needs() -> None:
    n = proposal_notice(RECORD)
    assert n.kind == "proposal" and n.key == "proposal:2026-11-30:protection:0xsafe"
    assert "collateral_top_up (simulated)" in n.title
    for part in (
        "action: collateral_top_up",
        "account: 0x000000000000000000000000000000000000dEaD",
        "size: $150,000.00 (61234 WETH base units)",
        "health factor: 1.123 -> 1.500",
        "simulation: success on fork block 321",
        "safe file: var/demo/safe-tx-builder/abc123def456.json",
        "- S1 firing: TVL -12% in 48h",
        "- gate passed",
    ):
        assert part in n.body, part
    assert "extra" not in n.body  # top three reasons only
    failed = proposal_notice(
        RECORD | {"status": "simulation_failed", "simulation": {"success": False, "error": "HF"}}
    )
    assert "simulation: FAILED: HF" in failed.body and failed.level == "warning"


def test_the_notice_names_the_chain_and_the_position() -> None:
    # one chain: the chain and its id; several: the position's name too, in the title as well
    one = proposal_notice(RECORD | {"chain_id": 31337})
    assert "account: 0x000000000000000000000000000000000000dEaD  chain: devnet (31337)" in one.body
    assert one.title.endswith("on devnet")
    two = proposal_notice(RECORD | {"chain": "devnet2", "chain_id": 31338, "position": "lean-safe"})
    assert "position: lean-safe  account: 0x" in two.body and "chain: devnet2 (31338)" in two.body
    assert two.title == "hedge-agent proposal: collateral_top_up (simulated) on lean-safe"


async def test_sent_to_a_local_webhook_once_within_the_cooldown(hook: Hook) -> None:
    counts: list[tuple[str, str]] = []
    notifier = Notifier(_cfg(hook.url), count=lambda k, o: counts.append((k, o)))
    notifier.start()
    try:
        assert notifier.submit(proposal_notice(RECORD))
        assert not notifier.submit(proposal_notice(RECORD))  # same key: deduplicated
        await asyncio.wait_for(hook.got.wait(), 10)
    finally:
        await notifier.stop()
    assert len(hook.received) == 1
    body = hook.received[0]
    assert body["title"].startswith("hedge-agent proposal: collateral_top_up")
    assert "health factor: 1.123 -> 1.500" in body["message"]
    assert body["type"] == "success"
    assert ("proposal", "deduplicated") in counts and ("proposal", "sent") in counts


async def test_a_failing_endpoint_is_retried_until_it_answers(hook: Hook) -> None:
    hook.statuses = [500, 503]
    counts: list[tuple[str, str]] = []
    notifier = Notifier(_cfg(hook.url, attempts=4), count=lambda k, o: counts.append((k, o)))
    notifier.start()
    try:
        notifier.submit(halt_notice("3 consecutive failed ticks"))
        await asyncio.wait_for(hook.got.wait(), 10)
    finally:
        await notifier.stop()
    assert [b["title"] for b in hook.received] == ["hedge-agent halted"]
    assert counts == [("halt", "sent")]


async def test_gives_up_after_its_attempts_and_may_send_again(hook: Hook) -> None:
    hook.statuses = [500, 500]
    counts: list[tuple[str, str]] = []
    notifier = Notifier(_cfg(hook.url, attempts=2), count=lambda k, o: counts.append((k, o)))
    notifier.start()
    try:
        notifier.submit(halt_notice("x"))
        await notifier.stop(drain_s=10)
        assert counts == [("halt", "failed")]
        notifier.start()
        assert notifier.submit(halt_notice("x"))  # never delivered: not deduplicated
        await asyncio.wait_for(hook.got.wait(), 10)
    finally:
        await notifier.stop()


async def test_a_slow_endpoint_never_holds_up_the_caller(hook: Hook) -> None:
    hook.delay_s = 3.0
    notifier = Notifier(_cfg(hook.url, timeout_s=0.3, attempts=1))
    notifier.start()
    try:
        t0 = time.perf_counter()
        for i in range(20):
            notifier.submit(Notice("proposal", f"k{i}", "t", "b"))
        elapsed = time.perf_counter() - t0
        # submit only queues: 20 notices to a 3-second endpoint take no measurable time
        assert elapsed < 0.05
        await asyncio.sleep(0.5)  # the worker is stuck on the slow endpoint, the loop is not
        t1 = time.perf_counter()
        await asyncio.sleep(0.01)
        assert time.perf_counter() - t1 < 0.2
    finally:
        await notifier.stop(drain_s=0.1)


async def _never_called(title: str, body: str, level: Level) -> None:
    raise AssertionError("not started: nothing is sent")


def _children() -> list[int]:
    """This process's notify_child processes still running."""
    me = str(os.getpid())
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if ppid == me and b"notify_child" in cmd and state != "Z":
            out.append(int(d.name))
    return out


@dataclass
class Trickle:
    url: str = ""
    arrived: list[float] = field(default_factory=list)
    got: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def trickle() -> AsyncIterator[Trickle]:
    """A webhook that answers 200 and then sends its body one byte a second for a minute (a
    per-read timeout never fires)."""
    t = Trickle()

    async def handle(request: web.Request) -> web.StreamResponse:
        t.arrived.append(time.monotonic())
        t.got.set()
        await request.read()
        resp = web.StreamResponse(status=200, headers={"Content-Length": "60"})
        await resp.prepare(request)
        for _ in range(60):
            await resp.write(b" ")
            await asyncio.sleep(1.0)
        return resp

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    t.url = f"json://127.0.0.1:{server.port}/hook"
    try:
        yield t
    finally:
        await server.close()


async def test_a_trickling_endpoint_is_cut_at_the_total_deadline(trickle: Trickle) -> None:
    # Each attempt ends at its 5 s TOTAL deadline (apprise alone would read one byte a second
    # for a minute), is retried under core/retry's policy, and the notice then counts failed.
    # 5 s, not less: the attempt's child process must start and import apprise before its
    # request arrives, which takes seconds on a loaded 2-core machine.
    counts: list[tuple[str, str]] = []
    done = asyncio.Event()

    def count(kind: str, outcome: str) -> None:
        counts.append((kind, outcome))
        done.set()

    notifier = Notifier(_cfg(trickle.url, timeout_s=5.0, attempts=2), count=count)
    notifier.start()
    t0 = time.monotonic()
    try:
        notifier.submit(halt_notice("x"))
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await notifier.stop(drain_s=0.1)
    assert counts == [("halt", "failed")]
    assert len(trickle.arrived) == 2
    # two 5 s attempts and one 0.05-0.1 s backoff: well under the two minutes the bodies take
    assert time.monotonic() - t0 < 25
    assert _children() == []


async def test_stop_kills_a_delivery_in_flight(trickle: Trickle) -> None:
    notifier = Notifier(_cfg(trickle.url, timeout_s=60.0, attempts=4))
    notifier.start()
    notifier.submit(halt_notice("x"))
    await asyncio.wait_for(trickle.got.wait(), 30)
    assert _children()  # the attempt is in flight, in its child
    t1 = time.monotonic()
    await notifier.stop(drain_s=0.5)
    assert time.monotonic() - t1 < 2.0
    assert _children() == []


def test_a_full_queue_keeps_proposals_and_drops_the_rest() -> None:
    counts: list[tuple[str, str]] = []
    notifier = Notifier(
        NotifyConfig(queue_size=2),
        send=_never_called,
        count=lambda k, o: counts.append((k, o)),
    )
    assert notifier.submit(Notice("source_failing", "s1", "t", "b"))
    assert notifier.submit(Notice("proposal", "p1", "t", "b"))
    assert not notifier.submit(Notice("source_failing", "s2", "t", "b"))  # full: dropped
    assert notifier.submit(Notice("proposal", "p2", "t", "b"))  # evicts s1
    assert notifier.depth == 2
    assert not notifier.submit(Notice("proposal", "p3", "t", "b"))  # only proposals left
    assert counts == [
        ("source_failing", "dropped"),
        ("source_failing", "dropped"),
        ("proposal", "dropped"),
    ]


def test_source_watch_notifies_once_after_the_configured_time() -> None:
    now = [1000.0]
    watch = SourceWatch(after_s=600, clock=lambda: now[0])
    assert watch.failed("api:defillama", "HTTP 500") is None
    now[0] += 599
    assert watch.failed("api:defillama", "HTTP 500") is None
    now[0] += 1
    n = watch.failed("api:defillama", "HTTP 502")
    assert n is not None and n.kind == "source_failing"
    assert "failed for 600 s; last error: HTTP 502" in n.body
    now[0] += 600
    assert watch.failed("api:defillama", "HTTP 502") is None  # once per failing stretch
    rec = watch.ok("api:defillama")
    assert rec is not None and rec.kind == "source_recovered"
    assert watch.ok("api:defillama") is None
    now[0] += 10
    assert watch.failed("api:defillama", "x") is None  # a new stretch starts its own clock


def test_an_unknown_url_scheme_is_a_config_error_naming_only_the_scheme() -> None:
    from agent.sinks.notify import apprise_sender

    with pytest.raises(ValueError, match=r"nosuch:// URL") as exc:
        apprise_sender(NotifyConfig(urls=(SecretStr("nosuch://secret-token@host"),)))
    assert "secret-token" not in str(exc.value)
