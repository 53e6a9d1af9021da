"""``Halt`` stands outside the ``AgentError`` tree (issue 21 item 5): no ``except AgentError`` (or
``except Exception``) site can swallow a deliberate stop.

Two checks: every ``except`` clause in ``agent/`` is read from the source and none that could
catch a ``Halt`` keeps it (a new site is checked the day it is written); and a ``Halt`` raised
inside the sites on the daemon's path, run as the daemon's tick, ends the tick loop at once
with the error budget untouched (the loop that ``hedge-agent run`` runs)."""

from __future__ import annotations

import ast
import asyncio
import builtins
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import agent.core.errors as errors
from agent.core.errors import AgentError, Halt
from agent.pipeline.runner import tick_loop
from agent.sinks.live import LiveRefused

ROOT = Path(__file__).resolve().parents[2] / "agent"
KNOWN: dict[str, Any] = {
    **{k: v for k, v in vars(builtins).items() if isinstance(v, type)},
    **{k: v for k, v in vars(errors).items() if isinstance(v, type)},
    "LiveRefused": LiveRefused,
}


def test_halt_is_outside_the_agent_error_tree() -> None:
    assert not issubclass(Halt, AgentError) and not issubclass(Halt, Exception)
    assert issubclass(LiveRefused, Halt)
    assert str(Halt("budget spent")) == "budget spent"


def _caught(handler: ast.ExceptHandler) -> list[str]:
    t = handler.type
    if t is None:
        return ["BaseException"]  # a bare except
    elts = t.elts if isinstance(t, ast.Tuple) else [t]
    return [e.attr if isinstance(e, ast.Attribute) else getattr(e, "id", "?") for e in elts]


def _reraises(handler: ast.ExceptHandler) -> bool:
    """The handler ends with a bare ``raise`` (a clean-up that lets everything through)."""
    last = handler.body[-1]
    return isinstance(last, ast.Raise) and last.exc is None


def _sites() -> tuple[list[str], list[str]]:
    agent_error_sites, swallowing = [], []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ExceptHandler):
                continue
            where = f"{path.relative_to(ROOT.parent)}:{node.lineno}"
            names = _caught(node)
            if "AgentError" in names:
                agent_error_sites.append(where)
            if "Halt" in names or "LiveRefused" in names or _reraises(node):
                continue
            for name in names:
                cls = KNOWN.get(name)
                if isinstance(cls, type) and issubclass(Halt, cls):
                    swallowing.append(f"{where} (except {name})")
    return agent_error_sites, swallowing


def test_no_except_clause_in_the_agent_can_swallow_a_halt() -> None:
    agent_error_sites, swallowing = _sites()
    assert len(agent_error_sites) >= 10, agent_error_sites  # the scan does see the sites
    assert swallowing == []


# -- a Halt raised inside a site on the daemon's path, run as the daemon's tick -------------


async def _as_tick(site: Callable[[], Awaitable[object]]) -> list[int]:
    """Run ``site`` as every tick of the daemon's loop (budget 100): the ticks that ran."""
    stop = asyncio.Event()
    seen: list[int] = []

    async def tick(tick_id: int) -> None:
        seen.append(tick_id)
        if tick_id == 3:  # a swallowed Halt would leave the loop ticking on
            stop.set()
        await site()

    with pytest.raises(Halt, match="stop now"):
        await tick_loop(tick, stop=stop, interval_s=0, error_budget=100)
    return seen


def _halt(*args: object, **kwargs: object) -> Any:
    raise Halt("stop now")


async def _ahalt(*args: object, **kwargs: object) -> Any:
    raise Halt("stop now")


async def test_safe_service_sites(monkeypatch: pytest.MonkeyPatch) -> None:
    # reserve_nonce and submit turn every AgentError into a note on the record.
    import agent.sinks.safe_service as svc

    sink = svc.SafeServiceSink.__new__(svc.SafeServiceSink)
    sink.client, sink.chain_id, sink._posted = None, 1, {}  # type: ignore[assignment]
    st = SimpleNamespace(safe="0x000000000000000000000000000000000000dEaD")
    monkeypatch.setattr(svc, "plan_nonce", _ahalt)
    monkeypatch.setattr(svc, "propose", _ahalt)
    assert await _as_tick(lambda: sink.reserve_nonce(st, None, 1)) == [1]  # type: ignore[arg-type]
    assert await _as_tick(lambda: sink.submit(st, 1)) == [1]  # type: ignore[arg-type]


async def test_planner_site() -> None:
    # exposure_contracts: an unknown reserve (AgentError) means "no exposure"; a Halt stops.
    from agent.planner.draft import exposure_contracts

    snap = SimpleNamespace(accounts={}, reserves={})
    layout = SimpleNamespace(reserve=_halt)

    async def site() -> object:
        return exposure_contracts(snap, layout, "0xabc", "WETH")  # type: ignore[arg-type]

    assert await _as_tick(site) == [1]


async def test_check_sites() -> None:
    # hedge-agent check: an unreachable RPC (AgentError) is a failed line; a Halt stops.
    from agent.ops import check

    rpc = SimpleNamespace(chain_id=_ahalt, request=_ahalt, url="http://127.0.0.1:1")
    ck = check.Checks()
    s = SimpleNamespace(chain=SimpleNamespace(chain_id=1))
    assert await _as_tick(lambda: check._check_rpc(ck, s, rpc, "chain.rpc_url")) == [1]  # type: ignore[arg-type]
    assert await _as_tick(lambda: check._check_code(ck, rpc, "pool", "0x" + "11" * 20)) == [1]  # type: ignore[arg-type]
