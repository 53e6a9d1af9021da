"""The composition root: parts built once, on first use, shared by whoever needs them (the
proposal sinks use the one configured HTTP client and the chain's one RPC client) and all
closed when the app closes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from eth_account import Account

from agent.app import App
from agent.config import Settings
from agent.core.errors import AgentError, ConfigError, HttpStatusError
from agent.core.market import MarketLayout
from agent.sinks.autonomous import AutonomousExecutor
from agent.sinks.config import AutonomousConfig
from agent.sinks.guardian import GuardianConfig


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


@pytest.fixture
async def private_rpc() -> AsyncIterator[tuple[list[str], str]]:
    """A private send endpoint that answers every request with 503 and counts them."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((await request.json())["method"])
        return web.Response(status=503, text="busy")

    app = web.Application()
    app.router.add_post("/", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield seen, str(server.make_url("/"))
    finally:
        await server.close()


KEY = "0x" + "11" * 32


async def test_private_send_clients_are_apps_one_attempt_and_closed(
    tmp_path: Path, private_rpc: tuple[list[str], str]
) -> None:
    """The private send URL's client is built by App (not by a sink), once per URL, shared by
    the live sender and the autonomous executor, never retried, and closed with the app."""
    seen, url = private_rpc
    s = Settings(
        agent={"store_path": str(tmp_path / "a.sqlite"), "journal_path": str(tmp_path / "j.jsonl")},
        chain={"rpc_url": "http://127.0.0.1:9"},
        sinks={
            "live": {"enabled": True, "signer_key": KEY, "private_rpc_url": url},
            "autonomous": {"private_rpc_url": url},
        },
    )
    async with App(s) as app:
        (chain,) = app.chains.values()
        send = app.sinks(chain).live_send
        assert send is not None and send.url == url
        assert app.send_rpc(s.sinks.autonomous.private_rpc_url) is send  # one client per URL
        assert app.send_rpc(None) is None
        with pytest.raises(HttpStatusError, match="HTTP 503"):
            await send.request("eth_sendRawTransaction", ["0x00"])
        assert seen == ["eth_sendRawTransaction"]  # one attempt: a 503 is never re-sent
        assert send._session is not None
    assert send._session is None  # closed by App


async def test_the_executor_never_falls_back_to_the_public_rpc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With sinks.autonomous.private_rpc_url set, the executor sends on the client App gives
    it, and refuses to be built without one (it would send on the chain's RPC unnoticed)."""
    monkeypatch.setenv("G_KEY", KEY)
    guardian = GuardianConfig(account=Account.from_key(KEY).address, key_env="G_KEY")
    cfg = AutonomousConfig.model_validate({"private_rpc_url": "http://127.0.0.1:8"})
    async with App(settings(tmp_path)) as app:
        (chain,) = app.chains.values()
        rpc = app.rpc(chain)
        with pytest.raises(
            ConfigError, match="private_rpc_url is set for autonomous sends but no client"
        ):
            AutonomousExecutor(cfg, [guardian], (), chain_id=1, rpc=rpc)
        send = app.send_rpc(cfg.private_rpc_url)
        ex = AutonomousExecutor(cfg, [guardian], (), chain_id=1, rpc=rpc, send_rpc=send)
        assert ex.guardian is not None
        assert ex.guardian.send_rpc is send and ex.guardian.read is rpc
        plain = AutonomousExecutor(AutonomousConfig(), [guardian], (), chain_id=1, rpc=rpc)
        assert plain.guardian is not None and plain.guardian.send_rpc is rpc


async def test_the_fork_reads_through_the_chains_pool_which_only_app_closes(
    tmp_path: Path,
) -> None:
    """The simulator takes App's pool of its chain (it rotates with the chain's reads) and
    stopping the fork leaves that pool open: App closes it, once, with everything else."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": "0x1"})

    server_app = web.Application()
    server_app.router.add_post("/", handle)
    server = TestServer(server_app, host="127.0.0.1")
    await server.start_server()
    pool = "0x" + "11" * 20
    layout = MarketLayout("devnet", "aave-v3", pool, pool, pool, (), (), {}, {}, {})
    try:
        async with App(settings(tmp_path, rpc_url=str(server.make_url("/")))) as app:
            (chain,) = app.chains.values()
            sim = app.simulator(chain, layout)
            assert sim is not None and sim.upstream is app.rpc(chain)
            assert sim.upstream_url == app.rpc(chain).url  # the relay forwards to the pool's URL
            assert await app.rpc(chain).chain_id() == 1
            member = app.rpc(chain).members[0]  # type: ignore[attr-defined]
            session = member._session
            assert session is not None
            await sim.stop()  # the fork's parts only
            assert member._session is session and not session.closed
            assert await app.rpc(chain).chain_id() == 1
        assert session.closed and member._session is None
    finally:
        await server.close()
