"""The composition root: parts built once, on first use, shared by whoever needs them (the
proposal sinks use the one configured HTTP client and the chain's one RPC client) and all
closed when the app closes."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.app import App
from agent.config import Settings
from agent.core.errors import AgentError


def settings(tmp_path: Path, rpc_url: str = "http://127.0.0.1:9") -> Settings:
    return Settings(
        agent={"store_path": str(tmp_path / "a.sqlite"), "journal_path": str(tmp_path / "j.jsonl")},
        chain={"rpc_url": rpc_url},
    )


async def test_parts_are_built_once_shared_and_closed(tmp_path: Path) -> None:
    async with App(settings(tmp_path)) as app:
        (chain,) = app.chains.values()
        assert app.rpc(chain) is app.rpc(chain) and app.http is app.http
        assert app.store is app.store
        sinks = app.sinks(chain)
        assert sinks is app.sinks(chain)
        assert sinks.http is app.http and sinks.rpc is app.rpc(chain)
        assert sinks.journal is app.journal and sinks.ledger is app.ledger
        assert app.ledger.db is app.store.db  # one file, one connection
        session = app.http.session()  # opened on first use
        rpc = app.rpc(chain)
        store, ledger = app.store, app.ledger
    assert session.closed
    assert rpc._session is None
    with pytest.raises(Exception, match="closed"):
        store.keys()
    with pytest.raises(Exception, match="closed"):
        ledger.spend_count()


async def test_nothing_is_built_that_a_command_does_not_use(tmp_path: Path) -> None:
    with App(settings(tmp_path)) as app:
        assert app.journal.records() == []
    assert not (tmp_path / "a.sqlite").exists()  # the store was never opened


async def test_a_missing_rpc_url_is_a_one_line_error(tmp_path: Path) -> None:
    async with App(settings(tmp_path, rpc_url="")) as app:
        (chain,) = app.chains.values()
        assert not chain.has_rpc
        with pytest.raises(AgentError, match=r"chain\.rpc_url is not set"):
            app.rpc(chain)


async def test_synchronous_use_refuses_network_parts(tmp_path: Path) -> None:
    app = App(settings(tmp_path))
    with pytest.raises(RuntimeError, match="async with"), app:
        app.rpc(app.parts.chains[0])
    await app.aclose()
