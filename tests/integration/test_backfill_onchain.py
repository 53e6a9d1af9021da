"""On-chain backfill on the devnet (snapshots via ``backfill_snapshots`` and hourly liquidation
volume): resumable, and an interrupted run ends with exactly the rows of an uninterrupted one."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from app_collect import backfill_via_app
from test_liquidations import HOUR, liquidate_safe, usd_by_hand

from agent.app import App
from agent.collectors.onchain import discover
from agent.config import Settings, apply_deployment
from agent.devnet.chain import Chain
from agent.devnet.deploy import write_deployment
from agent.pipeline.backfill import startup_backfill
from agent.store.sqlite import Store

pytestmark = pytest.mark.integration


def rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as c:
        return c.execute(
            "SELECT key, ts, source, available_at, known_at, value, unit FROM observations "
            "ORDER BY key, ts, source, available_at"
        ).fetchall()


class Killed(Exception):
    pass


async def test_onchain_backfill_resumes_to_identical_rows(
    devnet: dict[str, Any], devnet_chain: Chain, tmp_path: Path
) -> None:
    c = devnet_chain
    since = c.timestamp() // HOUR * HOUR
    for _ in range(3):  # three hours of history, one block every 20 minutes
        for _ in range(3):
            c.mine(1200)
    event = liquidate_safe(c, devnet)
    for _ in range(3):
        c.mine(1200)
    dep = tmp_path / "deployment.json"
    write_deployment(devnet, dep)
    off = {k: {"enabled": False} for k in ("defillama", "hyperliquid", "dydx", "closes")}
    base = Settings(
        agent={"backfill_step_s": 1800},
        chain={"name": "devnet", "deployment": str(dep)},
        collectors=off | {"liquidations": {"backfill_segment_hours": 1}},
    )
    settings = apply_deployment(base, dep)

    ref = tmp_path / "ref.sqlite"
    with Store(ref) as store:
        report = await backfill_via_app(settings, store, since=since, segment_steps=2)
    assert report.errors == []
    assert report.tasks["onchain:devnet"].done and report.tasks["liquidations:devnet"].done
    assert report.tasks["onchain:devnet"].steps >= 4  # 2 steps of 30 min per segment
    reference = rows(ref)
    liq = [r for r in reference if r[0] == "liquidations.aave-v3.devnet"]
    hour = c.timestamp(event["block"]) // HOUR * HOUR
    assert [r[1] for r in liq] == list(range(since, liq[-1][1] + HOUR, HOUR))
    assert {r[1]: r[5] for r in liq}[hour] == float(usd_by_hand(c, devnet, event))
    tvl = [r for r in reference if r[0] == "tvl.aave-v3.devnet"]
    assert len(tvl) >= 8 and all(r[6] == "usd" for r in tvl)

    for kill_after in (1, 3):
        path = tmp_path / f"killed{kill_after}.sqlite"
        steps = 0

        def hook(task: str, step: int, n: int = kill_after) -> None:
            nonlocal steps
            steps += 1
            if steps == n:
                raise Killed(task)

        with Store(path) as store:
            with pytest.raises(Killed):
                await backfill_via_app(settings, store, since=since, segment_steps=2, on_step=hook)
            assert rows(path) != reference
            resumed = await backfill_via_app(settings, store, since=since, segment_steps=2)
        assert resumed.errors == []
        assert rows(path) == reference


async def test_the_daemons_start_up_backfill_is_the_commands_snapshot_task(
    devnet: dict[str, Any], devnet_chain: Chain, tmp_path: Path
) -> None:
    """One backfill: the daemon's start-up backfill runs the snapshot task of ``hedge-agent
    backfill`` (the same rows for the same window, checkpointed apart from the command's), and
    a restart reads only what is new since the store's last snapshot."""
    c = devnet_chain
    for _ in range(6):  # two hours, one block every 20 minutes
        c.mine(1200)
    dep = tmp_path / "deployment.json"
    write_deployment(devnet, dep)
    head_ts = c.timestamp()
    since = head_ts - 5400  # the window: 90 minutes back from the head
    off = {k: {"enabled": False} for k in ("defillama", "hyperliquid", "dydx", "closes")}
    base = Settings(
        agent={"backfill_step_s": 1800, "backfill_hours": 1.5},
        chain={"name": "devnet", "deployment": str(dep)},
        collectors=off
        | {"liquidations": {"enabled": False, "confirmations": 0}, "comet": {"enabled": False}},
    )
    settings = apply_deployment(base, dep)

    ref = tmp_path / "ref.sqlite"
    with Store(ref) as store:
        report = await backfill_via_app(settings, store, since=since, segment_steps=2)
        assert report.errors == [] and report.tasks["onchain:devnet"].done
    daemon = tmp_path / "daemon.sqlite"
    with Store(daemon) as store:
        async with App(settings) as app:
            (chain,) = app.parts.chains
            rpc = app.rpc(chain)
            layouts = {chain.name: await discover(rpc, chain.config)}
            stored = await startup_backfill(
                settings, store, (chain,), rpcs={chain.name: rpc}, layouts=layouts
            )
            first = rows(daemon)
            assert first == rows(ref) and stored == len(first) > 0
            assert [cp.name for cp in store.checkpoints()] == ["startup:onchain:devnet"]
            # a restart an hour later reads only what is after the last stored snapshot
            for _ in range(3):
                c.mine(1200)
            again = await startup_backfill(
                settings, store, (chain,), rpcs={chain.name: rpc}, layouts=layouts
            )
        after = rows(daemon)
        new = [r for r in after if r not in first]
        assert again == len(new) > 0 and set(first) <= set(after)
        assert min(r[1] for r in new) > max(r[1] for r in first)
