"""Fixtures of the fault matrix: one devnet per module (started and stressed once, then every
test starts from the same ``evm_snapshot``), a fault-injecting proxy in front of it, and the
daemon as a real subprocess whose JSON log events are collected while it runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from faults.proxy import RpcProxy, rpc

ROOT = Path(__file__).resolve().parents[2]
# anvil's default mnemonic, account 1: the first devnet Safe owner (threshold 1).
OWNER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
OWNER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Devnet:
    dep: dict[str, Any]
    dep_path: Path
    feed: Path
    snapshot: str = ""

    @property
    def url(self) -> str:
        return str(self.dep["rpc_url"])

    def reset(self) -> None:
        """Back to the stressed state every test starts from."""
        if self.snapshot:
            try:
                reverted = rpc(self.url, "evm_revert", [self.snapshot])
            except AssertionError as e:  # anvil_reorg drops snapshots: see the reorg row
                raise AssertionError(
                    f"the devnet's snapshot is gone ({e}): an earlier test "
                    "in this module dropped it"
                ) from None
            assert reverted is True
        self.snapshot = str(rpc(self.url, "evm_snapshot"))

    def nonce(self, who: str = OWNER) -> int:
        return int(rpc(self.url, "eth_getTransactionCount", [who, "latest"]), 16)


@pytest.fixture(scope="module")
def devnet_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    d = tmp_path_factory.mktemp("devnet")
    dep = d / "deployment.json"
    up = _cli("devnet", "up", "--deployment", str(dep))
    assert up.returncode == 0, up.stderr
    try:
        played = _cli(
            "devnet", "play", "stress", "--deployment", str(dep), "--feed", str(d / "feed.json")
        )
        assert played.returncode == 0, played.stderr
        yield Devnet(json.loads(dep.read_text()), dep, d / "feed.json")
    finally:
        _cli("devnet", "down", "--deployment", str(dep), timeout=60)


@pytest.fixture
def devnet(devnet_module: Devnet) -> Devnet:
    devnet_module.reset()
    return devnet_module


@pytest.fixture
def proxy(devnet: Devnet) -> Iterator[RpcProxy]:
    p = RpcProxy(devnet.url)
    try:
        yield p
    finally:
        p.close()


@dataclass
class Setup:
    """One daemon's files: config, store, journal."""

    dir: Path
    config: Path
    store: Path
    journal: Path

    def observations(self) -> int:
        return self._count("SELECT COUNT(*) FROM observations")

    def spends(self) -> int:
        return self._count("SELECT COUNT(*) FROM spends")

    def live_sends(self) -> list[tuple[str, str, int]]:
        if not self.store.exists():
            return []
        with sqlite3.connect(f"file:{self.store}?mode=ro", uri=True) as c:
            return [tuple(r) for r in c.execute("SELECT tx_hash, status, nonce FROM live_sends")]  # type: ignore[misc]

    def _count(self, sql: str) -> int:
        if not self.store.exists():
            return 0
        with sqlite3.connect(f"file:{self.store}?mode=ro", uri=True) as c:
            return int(c.execute(sql).fetchone()[0])

    def records(self) -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        out = []
        for line in self.journal.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))  # every line must parse: no torn or glued lines
        return out

    def keys(self) -> list[str]:
        keys = [r["idempotency_key"] for r in self.records()]
        assert len(keys) == len(set(keys)), f"duplicated proposals: {keys}"
        return keys


@pytest.fixture
def make_setup(devnet: Devnet, proxy: RpcProxy, tmp_path: Path) -> Callable[..., Setup]:
    def make(
        *,
        live: bool = False,
        name: str = "run",
        interval: float = 1.0,
        extra_agent: str = "",
        extra: str = "",
        position: str = "",
    ) -> Setup:
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        text = (
            (ROOT / "config" / "devnet.toml")
            .read_text()
            .replace("out/devnet/deployment.json", str(devnet.dep_path))
            .replace("out/devnet/scenario_feed.json", str(devnet.feed))
            .replace("var/demo/", f"{d}/")
            .replace(
                "tick_interval_s = 5",
                f"tick_interval_s = {interval}\nerror_budget = 3\nerror_budget_s = 30\n"
                f"tick_timeout_s = 60\n{extra_agent}",
            )
            .replace('protocol = "aave-v3"', f'protocol = "aave-v3"\nrpc_url = "{proxy.url}"')
            .replace('kind = "safe"', f'kind = "safe"\n{position}')
        )
        if live:
            text += (
                f'\n[sinks.live]\nenabled = true\nsigner_key = "{OWNER_KEY}"\n'
                f'private_rpc_url = "{proxy.url}"\nreceipt_timeout_s = 20\n'
            )
        config = d / "agent.toml"
        config.write_text(text + extra)
        return Setup(d, config, d / "agent.sqlite", d / "proposals.jsonl")

    return make


def children(pid: int, name: str = "anvil") -> list[int]:
    """Processes whose parent is ``pid`` and whose program is ``name``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if ppid == pid and name in comm:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("event") == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 120) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.named(name)) < count:
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        got = self.named(name)
        if len(got) < count:
            tail = [e.get("event") for e in self.events][-25:]
            raise AssertionError(
                f"no {count}x {name!r} within {timeout}s (exit {self.proc.poll()}): {tail}\n"
                + "\n".join(x for x in self.lines[-5:] if not x.startswith("{"))
            )
        return got

    def forks(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)

    def last_line(self) -> str:
        return self.lines[-1] if self.lines else ""


@pytest.fixture
def start_daemon() -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(setup: Setup, *args: str, preexec: Callable[[], None] | None = None) -> Daemon:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(setup.config), *args],
            cwd=ROOT,
            env={**os.environ, "HEDGE_AGENT_AGENT__LOG_FORMAT": "json"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec,
        )
        d = Daemon(proc)
        started.append(d)
        return d

    yield start
    for d in started:
        forks = d.forks()
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(timeout=30)
        for pid in forks:  # never leave a fork behind, even when a test failed
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
