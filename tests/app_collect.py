"""``collect_once`` and ``backfill`` with their clients from the composition root, as the commands
call them; shared by the unit (local HTTP servers) and integration (devnet) tests."""

from __future__ import annotations

from typing import Any

from agent.app import App
from agent.config import Settings
from agent.pipeline.backfill import BackfillReport, backfill
from agent.pipeline.collect import CollectReport, collect_once
from agent.store.sqlite import Store


async def collect_via_app(settings: Settings, store: Store) -> CollectReport:
    """``collect_once`` with its clients from the composition root (as the commands do)."""
    async with App(settings) as app:
        (chain,) = app.parts.chains
        return await collect_once(
            settings,
            store,
            chain=chain,
            http=app.http,
            rpc=app.rpc(chain) if chain.has_rpc else None,
        )


async def backfill_via_app(settings: Settings, store: Store, **kw: Any) -> BackfillReport:
    """``backfill`` with its clients from the composition root (as the command does); an
    ``http`` given is used instead of the app's."""
    async with App(settings) as app:
        (chain,) = app.parts.chains
        http = kw.pop("http", None) or app.http
        rpc = app.rpc(chain) if chain.has_rpc else None
        return await backfill(settings, store, chain=chain, http=http, rpc=rpc, **kw)
