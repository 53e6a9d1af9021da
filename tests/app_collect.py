"""``collect_once`` with its clients from the composition root, as the commands call it; shared
by the unit (local HTTP servers) and integration (devnet) collection tests."""

from __future__ import annotations

from agent.app import App
from agent.config import Settings
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
