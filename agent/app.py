"""The composition root: the one place the agent's parts are built from the settings.

Every command (``run``, ``collect``, ``backfill``, ``proposals``, ``series``) opens an ``App``
and takes its parts from it: the shared HTTP client (with the configured timeouts, retries and
rate limits), one RPC client per chain, the store, the proposals journal, the fork simulator
and the proposal sinks. Each part is built on first use, so a command that only reads the
journal opens no connection, and everything built is closed once, in reverse order, when the
``async with`` block ends (also on errors and cancellation).
"""

from __future__ import annotations

from types import TracebackType

from agent.collectors.onchain import ChainConfig
from agent.config import Settings
from agent.core.errors import AgentError
from agent.core.http import HttpClient
from agent.core.lock import ExclusiveLock
from agent.core.market import MarketLayout
from agent.core.rpc import RpcClient
from agent.propose import Proposer
from agent.simulator.fork import ForkSimulator
from agent.sinks import recovery
from agent.sinks.journal import ProposalJournal
from agent.sinks.publish import ProposalSinks
from agent.store.sqlite import Store, Synchronous


class App:
    def __init__(
        self,
        settings: Settings,
        *,
        store_path: str | None = None,
        journal_path: str | None = None,
        store_synchronous: Synchronous = "FULL",
    ) -> None:
        self.settings = settings
        self._store_path = store_path or settings.agent.store_path
        self._journal_path = journal_path or settings.agent.journal_path
        self._store_synchronous: Synchronous = store_synchronous
        self._http: HttpClient | None = None
        self._rpcs: dict[str, RpcClient] = {}
        self._store: Store | None = None
        self._journal: ProposalJournal | None = None
        self._simulator: ForkSimulator | None = None
        self._sinks: ProposalSinks | None = None
        self._locks: list[ExclusiveLock] = []

    def __enter__(self) -> App:
        """For the synchronous commands (``proposals``, ``series``): local files only."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None or self._rpcs or self._simulator is not None:
            raise RuntimeError("network parts need `async with App(...)` to be closed")
        if self._store is not None:
            self._store.close()
            self._store = None

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def take_locks(self) -> None:
        """For the daemon: exclusive locks on the store and the journal (a second daemon on
        them refuses with one line), then the fork anvils a daemon killed with -9 left behind
        (found from their pidfiles beside the store) are stopped. Released when the app
        closes."""
        if not self._locks:
            self._locks = recovery.take_locks(self._store_path, self._journal_path)
            recovery.reap_forks(self._store_path)

    # -- parts ----------------------------------------------------------------------------

    @property
    def http(self) -> HttpClient:
        """The one HTTP client (collectors, Safe Transaction Service); build it inside the loop."""
        if self._http is None:
            self._http = self.settings.collectors.http.client()
        return self._http

    def has_rpc(self, chain: ChainConfig | None = None) -> bool:
        return bool((chain or self.settings.chain).rpc_url.get_secret_value())

    def rpc(self, chain: ChainConfig | None = None) -> RpcClient:
        """The RPC client of ``chain`` (the configured chain by default), one per chain."""
        chain = chain or self.settings.chain
        client = self._rpcs.get(chain.name)
        if client is None:
            if not self.has_rpc(chain):
                raise AgentError(f"{self.settings.origin}: chain.rpc_url is not set")
            client = self._rpcs[chain.name] = RpcClient(
                chain.rpc_url.get_secret_value(),
                source=f"rpc:{chain.name}",
                timeout_s=chain.timeout_s,
            )
        return client

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self._store_path, synchronous=self._store_synchronous)
        return self._store

    @property
    def journal(self) -> ProposalJournal:
        if self._journal is None:
            self._journal = ProposalJournal(self._journal_path)
        return self._journal

    def simulator(self, layout: MarketLayout) -> ForkSimulator | None:
        """The fork simulator (None when ``simulator.enabled`` is off); its anvil starts on the
        first simulation and stops when the app closes."""
        if not self.settings.simulator.enabled:
            return None
        if self._simulator is None:
            chain = self.settings.chain
            self._simulator = ForkSimulator(
                chain.rpc_url.get_secret_value(),
                pool=layout.pool,
                block_lag=self.settings.simulator.block_lag,
                chain_id=chain.chain_id,
                call_timeout_s=self.settings.simulator.call_timeout_s,
                pid_dir=str(recovery.fork_pid_dir(self._store_path)),
            )
        return self._simulator

    @property
    def sinks(self) -> ProposalSinks:
        if self._sinks is None:
            s = self.settings
            self._sinks = ProposalSinks(
                s.sinks,
                journal=self.journal,
                store=self.store,
                rpc=self.rpc(),
                http=self.http,
                chain_id=s.chain.chain_id,
                console=s.agent.log_format == "console",
            )
        return self._sinks

    def proposer(self, layout: MarketLayout) -> Proposer:
        return Proposer(
            self.settings,
            layout,
            rpc=self.rpc(),
            store=self.store,
            simulator=self.simulator(layout),
            sinks=self.sinks,
        )

    # -- shutdown -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close everything that was built, users before what they use; every close runs even
        if an earlier one fails (the first error is raised after)."""
        closers = []
        if self._sinks is not None:
            closers.append(self._sinks.close)
        if self._simulator is not None:
            closers.append(self._simulator.stop)
        if self._http is not None:
            closers.append(self._http.close)
        closers += [rpc.close for rpc in self._rpcs.values()]
        first: BaseException | None = None
        for close in closers:
            try:
                await close()
            except Exception as exc:
                first = first or exc
        if self._store is not None:
            self._store.close()
        for lock in self._locks:
            lock.release()
        self._locks = []
        self._sinks = self._simulator = self._http = self._store = None
        self._rpcs.clear()
        if first is not None:
            raise first
