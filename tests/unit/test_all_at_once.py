"""Work fanned out over several chains (or batches) leaves nothing running when one part
fails: the others are cancelled and awaited, and the first error is raised as one line.
Real JSON-RPC servers on loopback: one chain refuses, the other never answers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.app import App
from agent.config import Settings
from agent.core.errors import RpcError
from agent.core.tasks import all_at_once
from agent.pipeline.runner import Agent

SAFE = "0x" + "5a" * 20


async def test_the_first_error_is_raised_and_the_others_are_cancelled() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def fail() -> int:
        await started.wait()
        raise ValueError("chain one: no answer")

    async def hang() -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    async def two() -> int:
        return 2

    assert await all_at_once([two(), two()]) == [2, 2]
    with pytest.raises(ValueError, match=r"^chain one: no answer$"):  # itself, not a group
        await all_at_once([fail(), hang()])
    assert cancelled.is_set()


async def test_a_chain_failing_the_daemon_setup_leaves_no_other_chain_running(
    tmp_path: Path, refusing_and_silent_rpc: tuple[str, str, list[str]]
) -> None:
    """``Agent.setup`` checks every chain's id at once; one chain refusing cancels and awaits
    the other chain's check (never left running against the clients the daemon closes next)."""
    bad, slow, asked = refusing_and_silent_rpc
    settings = Settings(
        agent={"store_path": str(tmp_path / "a.sqlite"), "journal_path": str(tmp_path / "j.jsonl")},
        chains=[
            {"name": "bad", "chain_id": 1, "rpc_url": bad, "timeout_s": 30},
            {"name": "slow", "chain_id": 10, "rpc_url": slow, "timeout_s": 30},
        ],
        positions=[{"chain": "bad", "account": SAFE}, {"chain": "slow", "account": SAFE}],
        simulator={"enabled": False},
    )

    def running() -> list[asyncio.Task[Any]]:
        return [
            t
            for t in asyncio.all_tasks()
            if not t.done() and t is not asyncio.current_task() and "ensure_chain" in repr(t)
        ]

    async with App(settings) as app:
        agent = Agent(app.daemon_parts())
        with pytest.raises(RpcError, match="eth_chainId is not available"):
            await agent.setup()
        assert sorted(asked) == ["bad", "slow"]  # both chains were being checked
        assert running() == []  # the slow chain's check was cancelled, not left behind
