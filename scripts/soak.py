"""Soak: run the daemon against a fresh devnet for N ticks at a short interval and print the
resident memory of the agent and of each anvil (the devnet's and the simulator's fork) after a
warm-up and at the end, ticks per second and forks recycled. Everything it starts is stopped.

    .venv/bin/python scripts/soak.py --ticks 10000 [--interval 0.01] [--recycle-mb 1024]

The daemon runs as ``hedge-agent run`` would (a subprocess, logs at WARNING into the work
folder); ticks and recycles are read from its own ``/metrics``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from agent.core.anvil import free_port
from agent.ops.procmem import rss_bytes

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], cwd=ROOT, check=True, capture_output=True
    )


def _metric(text: str, name: str, labels: str = "") -> float:
    """Sum of the samples of ``name`` whose labels contain ``labels``."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE):
        if labels in (m.group(1) or ""):
            total += float(m.group(2))
    return total


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def _fork_pids(upstream: str) -> list[int]:
    """anvil processes forking the devnet (the simulator's), from /proc."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"anvil") and upstream.encode() in cmd:
            pids.append(int(d.name))
    return pids


def _mb(v: int | None) -> str:
    return "n/a" if v is None else f"{v / 2**20:8.1f} MB"


def _snapshot(agent_pid: int, devnet_pid: int, upstream: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {
        "agent": rss_bytes(agent_pid),
        "devnet anvil": rss_bytes(devnet_pid),
    }
    forks = _fork_pids(upstream)
    out["fork anvil"] = sum(rss_bytes(p) or 0 for p in forks) if forks else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ticks", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=50, help="ticks before the first measurement")
    ap.add_argument("--interval", type=float, default=0.01, help="agent.tick_interval_s")
    ap.add_argument("--recycle-mb", type=int, default=1024, help="simulator.recycle_rss_mb")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hedge-soak-"))
    dep = work / "deployment.json"
    print(f"work folder {work}; devnet up and stress scenario ...", flush=True)
    _cli("devnet", "up", "--deployment", str(dep))
    proc: subprocess.Popen[bytes] | None = None
    try:
        feed = work / "feed.json"
        _cli("devnet", "play", "stress", "--deployment", str(dep), "--feed", str(feed))
        deployment = json.loads(dep.read_text())
        port = free_port()
        config = work / "agent.toml"
        config.write_text(
            (ROOT / "config" / "devnet.toml")
            .read_text()
            .replace("out/devnet/deployment.json", str(dep))
            .replace("out/devnet/scenario_feed.json", str(feed))
            .replace("var/demo/", f"{work}/")
            .replace("tick_interval_s = 5", f"tick_interval_s = {args.interval}")
            .replace("[simulator]\n", f"[simulator]\nrecycle_rss_mb = {args.recycle_mb}\n")
            + f'\n[agent.http]\nlisten = "127.0.0.1:{port}"\n'
        )
        log = (work / "agent.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
            cwd=ROOT,
            env={
                **os.environ,
                "HEDGE_AGENT_AGENT__LOG_FORMAT": "json",
                "HEDGE_AGENT_AGENT__LOG_LEVEL": "WARNING",
            },
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        upstream = str(deployment["rpc_url"])
        devnet_pid = int(deployment["anvil_pid"])

        def ticks() -> float:
            return _metric(_scrape(port), "hedge_agent_ticks_total")

        def wait_ticks(n: int) -> None:
            while ticks() < n:
                if proc is not None and proc.poll() is not None:
                    raise SystemExit(f"the daemon exited ({proc.returncode}); see {work}/agent.log")
                time.sleep(0.5)

        wait_ticks(args.warmup)
        t0, n0 = time.monotonic(), ticks()
        start = _snapshot(proc.pid, devnet_pid, upstream)
        for n in range(args.warmup + 1000, args.ticks, 1000):  # progress lines
            wait_ticks(n)
            rss = rss_bytes(proc.pid)
            print(f"  tick {n:>6}: agent {_mb(rss)}, {time.monotonic() - t0:,.0f} s", flush=True)
        wait_ticks(args.ticks)
        t1, n1 = time.monotonic(), ticks()
        end = _snapshot(proc.pid, devnet_pid, upstream)
        metrics = _scrape(port)
        recycled = _metric(metrics, "hedge_agent_forks_recycled_total")
        failed = _metric(metrics, "hedge_agent_ticks_total", 'outcome="failed"')
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(
            [sys.executable, "-m", "agent.cli", "devnet", "down", "--deployment", str(dep)],
            cwd=ROOT,
            capture_output=True,
        )

    print(f"ticks {int(n0)} -> {int(n1)} in {t1 - t0:,.1f} s: {(n1 - n0) / (t1 - t0):.1f} ticks/s")
    print(f"failed ticks: {int(failed)}; forks recycled: {int(recycled)}")
    print(f"{'process':<14} {'after warm-up':>14} {'at the end':>14} {'growth':>12}")
    for name in start:
        a, b = start[name], end[name]
        growth = "n/a" if a is None or b is None else f"{(b - a) / 2**20:+9.1f} MB"
        print(f"{name:<14} {_mb(a):>14} {_mb(b):>14} {growth:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
