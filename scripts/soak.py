"""Soak: run the daemon against a fresh devnet for a wall-clock duration at a short tick interval
while a block is mined every few seconds and a simulator fork (the agent's own ``ForkSimulator``)
follows the chain and reads the Safe at each new block; print, at intervals, the resident memory
and open files of the agent and of the fork, and at the end the growth per tick and per fork
move over the first and the second half (a leak keeps growing in the second half; a cache that
fills levels off). Everything it starts is stopped.

    .venv/bin/python scripts/soak.py --minutes 60 [--every 120] [--interval 0.05] [--move-every 5]

The daemon runs as ``hedge-agent run`` would (a subprocess, logs at WARNING into the work
folder); its ticks are read from its own ``/metrics``. The fork is driven from this process
because on the devnet the daemon proposes once per session and then never moves its own fork.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from agent.core.anvil import free_port
from agent.core.rpc import RpcClient
from agent.ops.procmem import rss_bytes
from agent.simulator.fork import ForkSimulator

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


def open_files(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _mb(v: int | None) -> str:
    return "n/a" if v is None else f"{v / 2**20:.1f}"


@dataclass
class Sample:
    t_s: float
    ticks: int
    agent_rss: int | None
    agent_fds: int | None
    moves: int
    fork_rss: int | None
    fork_fds: int | None
    devnet_rss: int | None


class ForkDriver:
    """Mine a devnet block and move the fork to it, every ``every_s`` seconds."""

    def __init__(self, upstream: str, pool: str, safe: str, every_s: float) -> None:
        self.upstream = RpcClient(upstream, source="soak-devnet")
        self.sim = ForkSimulator(self.upstream, pool=pool)  # the fork reads through it
        self.safe = safe
        self.every_s = every_s
        self.moves = 0
        self.errors = 0

    async def run(self) -> None:
        while True:
            try:
                await self.upstream.request("evm_mine")
                head = int(await self.upstream.request("eth_blockNumber"), 16)
                async with self.sim.sequence(head) as rpc:
                    await self.sim.account_view(rpc, self.safe)
                self.moves += 1
            except Exception as exc:  # keep soaking; the count of errors is printed
                self.errors += 1
                print(f"  fork driver: {type(exc).__name__}: {exc}", flush=True)
            await asyncio.sleep(self.every_s)

    async def close(self) -> None:
        await self.sim.stop()
        await self.upstream.close()


def _start_daemon(config: Path, work: Path) -> subprocess.Popen[bytes]:
    log = (work / "agent.log").open("wb")
    return subprocess.Popen(
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


def _stop(proc: subprocess.Popen[bytes] | None, dep: Path) -> None:
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


def _per(a: Sample, b: Sample, rss: str, count: str) -> str:
    ra, rb = getattr(a, rss), getattr(b, rss)
    n = getattr(b, count) - getattr(a, count)
    if ra is None or rb is None or n <= 0:
        return "n/a"
    return f"{(rb - ra) / n / 1024:+.2f} kB over {n:,}"


async def soak(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="hedge-soak-"))
    dep = work / "deployment.json"
    print(f"work folder {work}; devnet up and stress scenario ...", flush=True)
    await asyncio.to_thread(_cli, "devnet", "up", "--deployment", str(dep))
    proc: subprocess.Popen[bytes] | None = None
    driver: ForkDriver | None = None
    driver_task: asyncio.Task[None] | None = None
    samples: list[Sample] = []
    try:
        feed = work / "feed.json"
        await asyncio.to_thread(
            _cli, "devnet", "play", "stress", "--deployment", str(dep), "--feed", str(feed)
        )
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
        proc = _start_daemon(config, work)
        upstream = str(deployment["rpc_url"])
        devnet_pid = int(deployment["anvil_pid"])
        driver = ForkDriver(
            upstream,
            str(deployment["aave"]["pool"]),
            str(deployment["safe"]["address"]),
            args.move_every,
        )

        async def ticks() -> int:
            return int(_metric(await asyncio.to_thread(_scrape, port), "hedge_agent_ticks_total"))

        while await ticks() < args.warmup:
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited ({proc.returncode}); see {work}/agent.log")
            await asyncio.sleep(0.5)
        driver_task = asyncio.create_task(driver.run(), name="fork-driver")
        t0 = time.monotonic()
        print(
            f"{'min':>6} {'ticks':>8} {'agent MB':>9} {'agent fds':>9} {'moves':>6}"
            f" {'fork MB':>8} {'fork fds':>8} {'devnet MB':>9}",
            flush=True,
        )
        end = t0 + args.minutes * 60
        while True:
            s = Sample(
                time.monotonic() - t0,
                await ticks(),
                rss_bytes(proc.pid),
                open_files(proc.pid),
                driver.moves,
                rss_bytes(driver.sim.pid) if driver.sim.pid else None,
                open_files(driver.sim.pid),
                rss_bytes(devnet_pid),
            )
            samples.append(s)
            print(
                f"{s.t_s / 60:6.1f} {s.ticks:8,} {_mb(s.agent_rss):>9} {s.agent_fds!s:>9}"
                f" {s.moves:6,} {_mb(s.fork_rss):>8} {s.fork_fds!s:>8} {_mb(s.devnet_rss):>9}",
                flush=True,
            )
            if proc.poll() is not None:
                print(f"the daemon exited ({proc.returncode}); see {work}/agent.log")
                break
            if time.monotonic() >= end:
                break
            await asyncio.sleep(min(args.every, max(0.0, end - time.monotonic())))
        metrics = await asyncio.to_thread(_scrape, port)
        failed = _metric(metrics, "hedge_agent_ticks_total", 'outcome="failed"')
        recycled = _metric(metrics, "hedge_agent_forks_recycled_total")
    finally:
        if driver_task is not None:
            driver_task.cancel()
            await asyncio.gather(driver_task, return_exceptions=True)
        if driver is not None:
            await driver.close()
        await asyncio.to_thread(_stop, proc, dep)

    if len(samples) < 3:
        print("too short to compare halves")
        return 1
    first, mid, last = samples[0], samples[len(samples) // 2], samples[-1]
    # The fork starts with the first move: its figures start at the first sample it is in.
    forked = [s for s in samples if s.fork_rss is not None] or samples
    f0, fmid = forked[0], forked[len(forked) // 2]
    span = last.t_s - first.t_s
    print(f"ticks {first.ticks:,} -> {last.ticks:,} in {span:,.0f} s; failed ticks {int(failed)}")
    print(
        f"fork moves {last.moves:,} (errors {driver.errors if driver else 0}); "
        f"daemon forks recycled {int(recycled)}"
    )
    print(
        f"agent growth per tick: whole {_per(first, last, 'agent_rss', 'ticks')}, "
        f"1st half {_per(first, mid, 'agent_rss', 'ticks')}, "
        f"2nd half {_per(mid, last, 'agent_rss', 'ticks')}"
    )
    print(
        f"fork growth per move:  whole {_per(f0, last, 'fork_rss', 'moves')}, "
        f"1st half {_per(f0, fmid, 'fork_rss', 'moves')}, "
        f"2nd half {_per(fmid, last, 'fork_rss', 'moves')}"
    )
    print(
        f"open files: agent {first.agent_fds} -> {last.agent_fds}, "
        f"fork {f0.fork_fds} -> {last.fork_fds}"
    )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="how long to soak")
    ap.add_argument("--every", type=float, default=120.0, help="seconds between samples")
    ap.add_argument("--warmup", type=int, default=100, help="daemon ticks before the first sample")
    ap.add_argument("--interval", type=float, default=0.05, help="agent.tick_interval_s")
    ap.add_argument("--move-every", type=float, default=5.0, help="seconds between fork moves")
    ap.add_argument("--recycle-mb", type=int, default=1024, help="simulator.recycle_rss_mb")
    return asyncio.run(soak(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
