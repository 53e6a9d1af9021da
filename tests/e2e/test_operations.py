"""Operating the daemon on the devnet, as a treasury would: metrics scraped over HTTP, health and
readiness probes, notifications received by a local webhook (apprise ``json://``), and the pause
switch across a restart. Real processes throughout: the devnet anvil, the daemon (a subprocess
started like ``hedge-agent run``), its fork anvil and a webhook server on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.core.anvil import free_port

if TYPE_CHECKING:
    from conftest import StressedDevnet  # tests/e2e/conftest.py (annotation only)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Webhook:
    """Collects the JSON bodies apprise posts."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(n))
                with hook.lock:
                    hook.bodies.append(body)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def titles(self) -> list[str]:
        with self.lock:
            return [str(b["title"]) for b in self.bodies]

    def wait_for(self, prefix: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for b in self.bodies:
                    if str(b["title"]).startswith(prefix):
                        return b
            time.sleep(0.1)
        raise AssertionError(f"no notification {prefix!r}; got {self.titles()}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


@pytest.fixture
def ops_config(
    tmp_path: Path, webhook: Webhook, stressed_devnet: StressedDevnet
) -> tuple[Path, int]:
    port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(
        stressed_devnet.config(tmp_path).replace("tick_interval_s = 5", "tick_interval_s = 0.5")
        + f'\n[agent.http]\nlisten = "127.0.0.1:{port}"\n'
        + f'\n[sinks.notify]\nurls = ["json://127.0.0.1:{webhook.port}/hook"]\n'
        + "backoff_s = 0.2\n"
    )
    return config, port


class Daemon:
    """The daemon as a subprocess; a thread drains its log (a full pipe would stall it)."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
            cwd=ROOT,
            env={**os.environ, "HEDGE_AGENT_AGENT__LOG_FORMAT": "json"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith("{"):
                self.events.put(json.loads(line))
        self.events.put(None)

    def until(self, done: str, count: int = 1, timeout: float = 120) -> list[dict[str, Any]]:
        """Events until ``count`` more ``done`` events arrived."""
        new: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                e = self.events.get(timeout=1)
            except queue.Empty:
                continue
            if e is None:
                break
            new.append(e)
            if sum(x.get("event") == done for x in new) >= count:
                return new
        raise AssertionError(f"no {count}x {done!r}: {[e.get('event') for e in new][-20:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                assert self.proc.wait(timeout=30) == 0
            finally:
                if self.proc.poll() is None:
                    os.killpg(self.proc.pid, signal.SIGKILL)


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _dashboard_metrics() -> set[str]:
    dash = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    names: set[str] = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            names |= set(re.findall(r"hedge_agent_[a-z0-9_]+", target["expr"]))
    return names


def _exposed(text: str) -> set[str]:
    """Every name a query can use: sample names, and the declared families with their suffixes
    (a labelled counter with no child yet is declared but has no sample)."""
    out: set[str] = set()
    for fam in text_string_to_metric_families(text):
        out |= {s.name for s in fam.samples}
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(fam.type, ("",))
        out |= {fam.name + s for s in suffixes}
    return out


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_metrics_notifications_and_pause_across_a_restart(
    ops_config: tuple[Path, int], webhook: Webhook
) -> None:
    config, port = ops_config
    out = _cli("pause", "--config", str(config), "--reason", "e2e maintenance").stdout
    assert "paused at" in out and "e2e maintenance" in out

    # 1. Paused from the start: collects and evaluates, proposes nothing, says so everywhere.
    daemon = Daemon(config)
    try:
        events = daemon.until("tick.done", 2)
        paused = [e for e in events if e.get("event") == "agent.paused"]
        assert paused and paused[0]["reason"] == "e2e maintenance"
        assert [e["proposals"] for e in events if e.get("event") == "tick.done"] == [0, 0]
        withheld = [e for e in events if e.get("event") == "proposals.paused"]
        assert withheld and withheld[0]["withheld"] >= 1  # the stress scenario triggers
        assert any(e.get("event") == "decision" and e["acted"] for e in events)
        status, text = _get(port, "/metrics")
        assert status == 200
        assert _samples(text)[("hedge_agent_paused", ())] == 1
        assert "e2e maintenance" in webhook.wait_for("hedge-agent paused")["message"]
    finally:
        daemon.stop()

    # 2. Restarted: still paused (the switch is a file next to the store).
    daemon = Daemon(config)
    try:
        events = daemon.until("tick.done", 1)
        assert any(e.get("event") == "agent.paused" for e in events)
        assert [e["proposals"] for e in events if e.get("event") == "tick.done"] == [0]
        # 3. Resumed while running: the next ticks propose, and people are told.
        _cli("resume", "--config", str(config))
        daemon.until("agent.resumed")
        events = daemon.until("tick.done", 2)
        proposals = [e for e in events if e.get("event") == "proposal"]
        assert proposals, [e.get("event") for e in events]
        webhook.wait_for("hedge-agent resumed")
        note = webhook.wait_for("hedge-agent proposal:")
        first = proposals[0]
        msg = note["message"]
        assert f"account: {first['account']}" in msg
        assert f"proposal: {first['id']}" in msg
        assert "health factor: " in msg and "simulation: success on fork block" in msg
        assert "safe file: " in msg and str(config.parent) in msg
        assert "\n- " in msg  # the top reasons

        # 4. What Prometheus scrapes: every metric the dashboard queries is there.
        status, text = _get(port, "/metrics")
        assert status == 200
        missing = _dashboard_metrics() - _exposed(text)
        assert not missing, f"dashboard queries metrics /metrics lacks: {sorted(missing)}"
        s = _samples(text)
        assert s[("hedge_agent_paused", ())] == 0
        assert s[("hedge_agent_ticks_total", (("outcome", "ok"),))] >= 4
        assert s[("hedge_agent_head_block", (("chain", "devnet"),))] > 0
        assert s[("hedge_agent_source_requests_total", (("source", "rpc:devnet"),))] > 0
        assert (
            s[("hedge_agent_signal_firing", (("signal", "S1"), ("subject", "aave-v3.devnet")))] == 1
        )
        simulated = sum(
            v
            for (name, labels), v in s.items()
            if name == "hedge_agent_proposals_total" and ("status", "simulated") in labels
        )
        assert simulated == len([p for p in proposals if p["status"] == "simulated"]) >= 1
        assert s[("hedge_agent_simulations_total", (("outcome", "success"),))] >= simulated
        assert s[("hedge_agent_session_spent_usd", ())] > 0
        assert s[("hedge_agent_error_budget_remaining", ())] == 5

        status, body = _get(port, "/healthz")
        assert status == 200 and json.loads(body)["alive"]
        status, body = _get(port, "/readyz")
        deps = json.loads(body)["dependencies"]
        assert status == 200, body
        assert {"rpc:devnet", "store", "fork", "liquidations"} <= set(deps)
    finally:
        daemon.stop()
    status_after = None
    with contextlib.suppress(urllib.error.URLError, ConnectionError):
        status_after, _ = _get(port, "/healthz")
    assert status_after is None  # the endpoint stops with the daemon

    # 5. Restarted after the proposals: it backfills only its downtime, evaluates at the current
    # time and proposes nothing the journal already holds.
    journal = config.parent / "proposals.jsonl"
    before = journal.read_text().splitlines()
    daemon = Daemon(config)
    try:
        events = daemon.until("tick.done", 2)
    finally:
        daemon.stop()
    backfill = [e for e in events if e.get("event") == "backfill.done"]
    assert backfill and backfill[0]["snapshots"] <= 1  # not the 60-hour window again
    assert [e["proposals"] for e in events if e.get("event") == "tick.done"] == [0, 0]
    assert journal.read_text().splitlines() == before
