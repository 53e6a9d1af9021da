"""Fault matrix rows of the operations side (issue 24 items 6 and 10; issue 21 item 5): real
daemon processes, real signals, a real misbehaving webhook on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from faults.conftest import ROOT, Daemon, Devnet, Setup, alive
from faults.proxy import RpcProxy

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


# -- 10. operations: what an operator or a cron job is told ---------------------------------


def test_env_var_with_a_misspelt_section_is_one_line(make_setup: Callable[..., Setup]) -> None:
    # Before: HEDGE_AGENT_SINKZ__... was ignored without a word and the daemon ran.
    setup = make_setup()
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(setup.config)],
        cwd=ROOT,
        env={**os.environ, "HEDGE_AGENT_SINKZ__NOTIFY__COOLDOWN_S": "5"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: environment variable ")
    assert "HEDGE_AGENT_SINKZ__NOTIFY__COOLDOWN_S" in lines[0]
    assert "no configuration section [sinkz]" in lines[0] and "HEDGE_AGENT_SINKS__" in lines[0]
    assert not setup.store.exists()


def test_the_stop_line_after_a_halt_counts_the_ticks(
    proxy: RpcProxy, make_setup: Callable[..., Setup], start_daemon: Callable[..., Daemon]
) -> None:
    # Before: a halt raised out of the tick loop and the stop line said ticks=0.
    setup = make_setup()
    d = start_daemon(setup)
    d.wait_for("tick.done", 2, timeout=240)
    proxy.stop()  # connection refused from now on: the error budget (3 ticks, 30 s) runs out
    assert d.proc.wait(timeout=180) == 2
    d._reader.join(timeout=10)
    assert any(x.startswith("error: ") and "consecutive failed ticks" in x for x in d.lines)
    stopped = d.named("agent.stopped")
    assert len(stopped) == 1
    assert stopped[0]["ticks"] == len(d.named("tick.done")) >= 2
    assert stopped[0]["failed_ticks"] == len(d.named("tick.failed")) >= 3


def test_collect_once_with_a_part_failing_exits_non_zero(
    devnet: Devnet, make_setup: Callable[..., Setup]
) -> None:
    # Before: a stale oracle (read, but its prices left out) and collect --once exited 0.
    from faults.proxy import rpc

    setup = make_setup()
    ok = subprocess.run(
        [sys.executable, "-m", "agent.cli", "collect", "--config", str(setup.config), "--once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ok.returncode == 0, ok.stderr
    assert "collect:" not in ok.stderr
    rpc(devnet.url, "evm_increaseTime", [2 * 3600])  # past the feeds' 1 h heartbeat
    rpc(devnet.url, "evm_mine")
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "collect", "--config", str(setup.config), "--once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 1
    summary = [x for x in out.stderr.splitlines() if x.startswith("collect: ")]
    assert len(summary) == 1 and "read in part: onchain (" in summary[0], out.stderr
    assert "stale answer" in out.stdout  # the problems themselves, in the report


# -- 11. the benchmark stopped with SIGTERM ------------------------------------------------


def test_bench_stopped_with_sigterm_leaves_no_anvil() -> None:
    # Before: Python's default SIGTERM exit skipped every clean-up and the devnet anvil (and,
    # later in the run, the forks and the row-5 child's devnet) kept running.
    proc = subprocess.Popen(
        [sys.executable, "scripts/bench.py", "--rows", "1"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            seen |= {p for p in _descendants(proc.pid) if _is_anvil(p)}
            if seen:
                break
            time.sleep(0.1)
        assert seen, "the benchmark started no anvil"
        time.sleep(3)  # into the deployment
        seen |= {p for p in _descendants(proc.pid) if _is_anvil(p)}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
        deadline = time.monotonic() + 10
        while any(alive(p) for p in seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in seen if alive(p)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in seen:  # never leave one behind, even when the test failed
            if alive(p):
                os.kill(p, signal.SIGKILL)


def _is_anvil(pid: int) -> bool:
    try:
        return b"anvil" in Path(f"/proc/{pid}/comm").read_bytes()
    except OSError:
        return False
