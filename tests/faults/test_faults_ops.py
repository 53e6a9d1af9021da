"""Fault matrix rows of the operations side (issue 24 items 6 and 10; issue 21 item 5): real
daemon processes, real signals, a real misbehaving webhook on loopback."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from faults.conftest import Daemon, Setup, alive

pytestmark = pytest.mark.faults


class Trickle:
    """A webhook on loopback that answers 200 and then sends its body one byte a second for two
    minutes: every read answers within a second, so only a total deadline ends the call."""

    def __init__(self) -> None:
        self.requests = 0
        self.closing = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.requests += 1
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(200)
                self.send_header("Content-Length", "120")
                self.end_headers()
                for _ in range(120):
                    if outer.closing.wait(1.0):
                        return
                    try:
                        self.wfile.write(b" ")
                        self.wfile.flush()
                    except OSError:
                        return

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def trickle() -> Iterator[Trickle]:
    t = Trickle()
    try:
        yield t
    finally:
        t.close()


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (the notifier's child, fork anvils)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    out, frontier = [], {pid}
    while frontier:
        kids = {p for p, pp in parents.items() if pp in frontier}
        out += [k for k in kids if alive(k)]
        frontier = kids
    return out


# -- 9. operations: a slow webhook at shutdown ---------------------------------------------


def test_sigterm_with_a_trickling_webhook_exits_promptly(
    trickle: Trickle, make_setup: Callable[..., Setup], start_daemon: Callable[..., Daemon]
) -> None:
    # Issue 24 item 6: before, "agent.stopped" came 10 s after SIGTERM and the process was
    # still alive at 90 s (the notice was being sent in a thread that cannot be cancelled, by
    # an HTTP client whose timeout is per read).
    setup = make_setup(extra=f'\n[sinks.notify]\nurls = ["{trickle.url}"]\n')
    d = start_daemon(setup)
    d.wait_for("tick.done", 1, timeout=240)  # the first tick's proposals are being notified
    deadline = time.monotonic() + 30
    while trickle.requests == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert trickle.requests >= 1, "no notice reached the webhook"
    below = _descendants(d.proc.pid)
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM, timeout=60) == 0
    # up to notify's 10 s drain for the queued notices, then the delivery in flight is killed
    assert time.monotonic() - t0 < 15
    assert d.named("agent.stopped")
    deadline = time.monotonic() + 5
    while any(alive(p) for p in below) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in below if alive(p)] == []  # neither a notify child nor a fork remains
