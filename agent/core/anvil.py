"""Start and stop a real ``anvil`` on loopback.

Each anvil runs in its own process group (``start_new_session``) so that stopping it kills
everything it started, and nothing is left behind by tests, the simulator or the devnet.

An anvil that belongs to a daemon (the simulator's fork) must not outlive it, even after a
``kill -9``: it is started with ``PR_SET_PDEATHSIG`` (Linux: the kernel kills it when the
daemon's thread that started it dies), and it leaves a pidfile in the daemon's var directory so
the next start reaps what is left on systems without that signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from agent.core.errors import DevnetError
from agent.core.rpc import RetryPolicy, RpcClient

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOOLCHAIN_BIN = PROJECT_ROOT / "toolchain" / "node_modules" / "@foundry-rs"


def find_tool(name: str) -> str:
    """Locate a Foundry binary: ``$HEDGE_AGENT_<NAME>``, the project's toolchain, then ``PATH``.

    The native binary is used, never the npm launcher (it sets ``TARGET_TOOL``, which breaks a
    ``cast`` started from inside ``forge``).
    """
    env = os.environ.get(f"HEDGE_AGENT_{name.upper()}")
    if env:
        return env
    local = TOOLCHAIN_BIN / f"{name}-linux-amd64" / "bin" / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    raise DevnetError(f"{name} not found: run `make toolchain` or set HEDGE_AGENT_{name.upper()}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str, timeout: float) -> bool:
    """Whether an anvil just started answers ``eth_chainId`` yet (a blocking readiness probe:
    ``start`` runs in a thread, before any event loop needs the process)."""
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}'
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return "result" in json.loads(resp.read())
    except (OSError, ValueError):
        return False


class AnvilProcess:
    """A managed anvil. Use as a context manager or call ``start``/``stop``."""

    def __init__(
        self,
        *,
        port: int | None = None,
        fork_url: str | None = None,
        fork_block_number: int | None = None,
        chain_id: int | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        detach: bool = False,
        die_with_parent: bool = False,
        pid_dir: str | Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.fork_url = fork_url
        self.fork_block_number = fork_block_number
        self.chain_id = chain_id
        self.extra_args = list(extra_args)
        self.log_path = log_path
        self.detach = detach
        self.die_with_parent = die_with_parent
        self.pid_dir = Path(pid_dir) if pid_dir else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        cmd = [find_tool("anvil"), "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        if self.fork_url:
            cmd += ["--fork-url", self.fork_url]
            if self.fork_block_number is not None:
                cmd += ["--fork-block-number", str(self.fork_block_number)]
        if self.chain_id is not None:
            cmd += ["--chain-id", str(self.chain_id)]
        return cmd + self.extra_args

    def start(self, timeout: float = 30.0) -> str:
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process (fast); ``wait_ready`` then waits until it answers."""
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT if self.log_path else subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        finally:
            if self.log_path and not isinstance(log, int):
                log.close()
        if self.pid_dir is not None:
            self._write_pidfile()

    def _pidfile(self) -> Path | None:
        if self.pid_dir is None or self.proc is None:
            return None
        return self.pid_dir / f"anvil-{self.proc.pid}.json"

    def _write_pidfile(self) -> None:
        path = self._pidfile()
        assert path is not None and self.proc is not None
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                json.dumps({"pid": self.proc.pid, "owner": os.getpid(), "port": self.port})
            )

    def wait_ready(self, timeout: float = 30.0) -> str:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DevnetError(
                    f"anvil exited with code {self.proc.returncode} on port {self.port}"
                    + (f" (see {self.log_path})" if self.log_path else "")
                )
            if _answers(self.url, timeout=1.0):
                return self.url
            time.sleep(0.05)
        self.stop()
        raise DevnetError(f"anvil did not answer on {self.url} within {timeout:.0f}s")

    def client(self, *, source: str, timeout_s: float = 10.0) -> RpcClient:
        """An RPC client of this anvil with one attempt: the process is local, so a retry
        would only hide that it died (the fork simulator replaces a fork that fails). The
        caller closes it with the process."""
        return RpcClient(
            self.url, source=source, retry=RetryPolicy(attempts=1), timeout_s=timeout_s
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        kill_process_group(self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        pidfile = self._pidfile()
        if pidfile is not None:
            with contextlib.suppress(OSError):
                pidfile.unlink()
        self.proc = None

    def __enter__(self) -> AnvilProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_anvil(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"anvil" in cmdline.split(b"\0", 1)[0]


def reap_orphans(pid_dir: str | Path) -> list[int]:
    """Kill the anvils a dead daemon left behind (its pidfiles in ``pid_dir``); returns their
    pids. A pidfile whose owner still runs is left alone."""
    reaped: list[int] = []
    d = Path(pid_dir)
    if not d.is_dir():
        return reaped
    for f in d.glob("anvil-*.json"):
        try:
            info = json.loads(f.read_text())
            pid, owner = int(info["pid"]), int(info["owner"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if owner != os.getpid() and _alive(owner):
            continue
        if _alive(pid) and _is_anvil(pid):
            kill_process_group(pid, grace=2.0)
            reaped.append(pid)
        with contextlib.suppress(OSError):
            f.unlink()
    return reaped


def kill_process_group(pid: int, grace: float = 5.0) -> None:
    """SIGTERM the process group led by ``pid``, then SIGKILL what is left after ``grace``."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        # Reap if it is our child, so it does not linger as a zombie.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
