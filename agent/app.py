"""The composition root: the one place the agent's parts are built from the settings.

The daemon's operations side (metrics/health server, notifier, pause switch) is
``App.ops``, built on first use like the rest; its server and notifier run as tasks of the
daemon's task group (``agent.commands.run``) and are closed here.

Every command (``run``, ``collect``, ``backfill``, ``proposals``, ``series``) opens an ``App``
and takes its parts from it: the shared HTTP client (with the configured timeouts, retries and
rate limits), one RPC client per chain, the store, the proposals journal, the fork simulator
and the proposal sinks. Each part is built on first use, so a command that only reads the
journal opens no connection, and everything built is closed once, in reverse order, when the
``async with`` block ends (also on errors and cancellation).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp
from pydantic import SecretStr

from agent.config import Settings
from agent.core.errors import AgentError
from agent.core.http import HttpClient, bare_session
from agent.core.lock import ExclusiveLock
from agent.core.market import MarketLayout
from agent.core.rpc import RetryPolicy, RpcClient, send_client
from agent.core.rpc_pool import RpcPool
from agent.ops.daemon import Operations
from agent.pipeline.parts import Chain, Parts, Position, PutLadder, build_parts
from agent.pipeline.propose import Proposer
from agent.pipeline.runner import DaemonParts
from agent.simulator.fork import ForkSimulator
from agent.sinks import recovery
from agent.sinks.journal import ProposalJournal
from agent.sinks.publish import ProposalSinks
from agent.store.ledger import ProposalLedger
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
        # The typed chains, positions and put ladder every stage takes, built once here.
        self.parts: Parts = build_parts(settings)
        self.chains: dict[str, Chain] = {c.name: c for c in self.parts.chains}
        self.positions: tuple[Position, ...] = self.parts.positions
        self._http: HttpClient | None = None
        self._rpcs: dict[str, RpcClient] = {}
        self._probes: list[RpcClient] = []
        self._sends: dict[str, RpcClient] = {}  # private send URL -> its one-attempt client
        self._store: Store | None = None
        self._ledger: ProposalLedger | None = None
        self._journal: ProposalJournal | None = None
        self._simulators: dict[str, ForkSimulator] = {}
        self._sinks: dict[str, ProposalSinks] = {}
        self._ops: Operations | None = None
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
        if (
            self._http is not None
            or self._rpcs
            or self._sends
            or self._simulators
            or self._ops is not None
        ):
            raise RuntimeError("network parts need `async with App(...)` to be closed")
        if self._store is not None:
            self._store.close()
            self._store = self._ledger = None

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
            h = self.settings.collectors.http
            self._http = HttpClient(
                timeout_s=h.timeout_s,
                retry=h.retry_policy(),
                rate_limits=h.limits(),
                record_path=h.record_path,
                user_agent=h.user_agent,
                max_body_bytes=h.max_body_bytes,
            )
        return self._http

    def rpc(self, chain: Chain) -> RpcClient:
        """The RPC client of ``chain``, one per chain: ``rpc_url`` alone, or with ``rpc_urls`` a
        pool rotated on failure (counted in ops)."""
        client = self._rpcs.get(chain.name)
        if client is None:
            if not chain.has_rpc:
                what = (
                    f"the rpc_url of chain {chain.name!r}"
                    if self.settings.multi_chain
                    else "chain.rpc_url"
                )
                raise AgentError(f"{self.settings.origin}: {what} is not set")
            cfg = chain.config
            urls = [u.get_secret_value() for u in (cfg.rpc_url, *cfg.rpc_urls)]
            if cfg.rpc_urls:  # with fallback URLs, rotations and head checks are counted in ops
                rotated, heads = self.ops.rpc_hooks(cfg)
                client = RpcPool(
                    urls,
                    source=f"rpc:{chain.name}",
                    timeout_s=cfg.timeout_s,
                    deadline_s=cfg.request_deadline_s,
                    max_lag_blocks=cfg.max_lag_blocks,
                    on_rotate=rotated,
                    on_heads=heads,
                )
            else:
                client = RpcPool(
                    urls,
                    source=f"rpc:{chain.name}",
                    timeout_s=cfg.timeout_s,
                    deadline_s=cfg.request_deadline_s,
                )
            self._rpcs[chain.name] = client
        return client

    def probe_rpc(self, url: str, *, timeout_s: float) -> RpcClient:
        """A client of one URL with one attempt (``hedge-agent check`` reads each URL on its
        own, not through the pool); closed when the app closes."""
        client = RpcClient(url, source="check", retry=RetryPolicy(attempts=1), timeout_s=timeout_s)
        self._probes.append(client)
        return client

    def probe_session(self, timeout_s: float) -> aiohttp.ClientSession:
        """A bare HTTP session for reachability probes (one request each, no retries or rate
        limits); the caller closes it (``async with``)."""
        return bare_session(timeout_s)

    def send_rpc(self, url: SecretStr | None) -> RpcClient | None:
        """The client of a private send URL (``sinks.live`` / ``sinks.autonomous``
        ``private_rpc_url``; None when unset): one attempt, never retried, one per URL;
        closed when the app closes."""
        if url is None or not url.get_secret_value():
            return None
        key = url.get_secret_value()
        client = self._sends.get(key)
        if client is None:
            client = self._sends[key] = send_client(key)
        return client

    @property
    def ops(self) -> Operations:
        """Telemetry (/metrics, /healthz, /readyz), notifications and the pause switch."""
        if self._ops is None:
            self._ops = Operations(self.settings)
        return self._ops

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self._store_path, synchronous=self._store_synchronous)
        return self._store

    @property
    def ledger(self) -> ProposalLedger:
        """The proposal ledger (outbox, spends, live sends), in the store's database."""
        if self._ledger is None:
            self._ledger = ProposalLedger(self.store.db)
        return self._ledger

    @property
    def journal(self) -> ProposalJournal:
        if self._journal is None:
            self._journal = ProposalJournal(self._journal_path)
        return self._journal

    def simulator(self, chain: Chain, layout: MarketLayout) -> ForkSimulator | None:
        """The fork simulator of ``chain``, one per chain (None when ``simulator.enabled`` is
        off); its anvil starts on the first simulation and stops when the app closes."""
        if not chain.fork.enabled:
            return None
        sim = self._simulators.get(chain.name)
        if sim is None:
            sim = ForkSimulator(
                self.rpc(chain),  # the fork reads through the chain's pool and rotates with it
                pool=layout.pool,
                block_lag=chain.fork.block_lag,
                chain_id=chain.chain_id,
                call_timeout_s=chain.fork.call_timeout_s,
                pid_dir=str(recovery.fork_pid_dir(self._store_path)),
            )
            self._simulators[chain.name] = sim
        return sim

    def sinks(self, chain: Chain) -> ProposalSinks:
        """The sinks of one chain: its Safe files (chain id), Safe service and live sender;
        the journal, the store (ledger, outbox) and the notifications are shared."""
        got = self._sinks.get(chain.name)
        if got is None:
            got = ProposalSinks(
                chain.sinks,
                journal=self.journal,
                ledger=self.ledger,
                rpc=self.rpc(chain),
                http=self.http,
                chain_id=chain.chain_id,
                console=self.settings.agent.log_format == "console",
                on_published=self._published,
                live_send=self.send_rpc(chain.sinks.live.private_rpc_url)
                if chain.sinks.live.enabled
                else None,
            )
            self._sinks[chain.name] = got
        return got

    def _published(self, record: Mapping[str, Any]) -> None:
        # Each journalled proposal or advisory ticket is counted and notified, when the
        # daemon's operations side exists (one-shot commands build none).
        if self._ops is not None:
            self._ops.proposals([record])

    def proposer(
        self, position: Position, layout: MarketLayout, puts: PutLadder | None = None
    ) -> Proposer:
        """The proposer of one position (and of the put ladder when ``puts`` is given), on its
        chain's RPC, fork and sinks."""
        chain = position.chain
        sinks = self.sinks(chain)
        if sinks.executor is None:
            self._attach_executor(sinks, chain, layout)
        return Proposer(
            position,
            layout,
            policy=self.settings.policy,
            puts=puts,
            rpc=self.rpc(chain),
            ledger=self.ledger,
            simulator=self.simulator(chain, layout),
            sinks=sinks,
        )

    def daemon_parts(self) -> DaemonParts:
        """What the daemon's pipeline takes (``agent.pipeline.runner.Agent``): every chain's RPC
        client and sinks built now; the fork and the proposers once its market is discovered."""
        chains = self.parts.chains
        return DaemonParts(
            settings=self.settings,
            parts=self.parts,
            store=self.store,
            ledger=self.ledger,
            journal=self.journal,
            http=self.http,
            ops=self.ops,
            rpcs={c.name: self.rpc(c) for c in chains},
            sinks={c.name: self.sinks(c) for c in chains},
            simulator=self.simulator,
            proposer=self.proposer,
        )

    def autonomous_accounts(self, chain: str) -> frozenset[str]:
        """The positions on ``chain`` with ``execution = "autonomous"`` (lower-case accounts)."""
        return frozenset(
            str(p.account).lower()
            for p in self.positions
            if p.chain.name == chain and p.execution == "autonomous"
        )

    def _attach_executor(self, sinks: ProposalSinks, chain: Chain, layout: MarketLayout) -> None:
        """Autonomous execution on this chain (issue 23), when a position on it asks for it:
        the executor gets the chain's RPC (or the private send URL), the Pool of its market,
        the guardians of its autonomous positions and the roles on their Safes."""
        accounts = self.autonomous_accounts(chain.name)
        settings = self.settings
        if not accounts:
            return
        from agent.commands.roles import role_module
        from agent.sinks.autonomous import AutonomousExecutor

        mine = [p for p in self.positions if p.chain.name == chain.name]
        guardians, roles = {}, []
        for p in mine:
            if p.execution != "autonomous":
                continue
            if p.guardian_config is None and p.role is None:
                raise AgentError(
                    f'{settings.origin}: position {p.name or p.account}: execution = "autonomous"'
                    " needs a guardian (top-ups, repays: [guardian], or positions[i].guardian"
                    " naming a [[guardians]] entry) or a role (deleverage: [roles], or the"
                    " position's [positions.roles])"
                )
            if p.guardian_config is not None:
                guardians[str(p.guardian_config.account).lower()] = p.guardian_config
            if p.role is not None:
                roles.append(role_module(settings, p))
        auto = chain.sinks.autonomous  # this chain's (its own private_rpc_url, if any)
        sinks.executor = AutonomousExecutor(
            auto,
            tuple(guardians.values()),
            tuple(roles),
            chain_id=chain.chain_id,
            rpc=self.rpc(chain),
            send_rpc=self.send_rpc(auto.private_rpc_url),
            pool=layout.pool,
        )
        sinks.autonomous_accounts = accounts

    # -- shutdown -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close everything that was built, users before what they use; every close runs even
        if an earlier one fails (the first error is raised after)."""
        closers = []
        if self._ops is not None:
            closers.append(self._ops.close)
        closers += [sim.stop for sim in self._simulators.values()]
        if self._http is not None:
            closers.append(self._http.close)
        clients = (*self._rpcs.values(), *self._probes, *self._sends.values())
        closers += [rpc.close for rpc in clients]
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
        self._http = self._store = self._ledger = self._ops = None
        self._sinks.clear()
        self._simulators.clear()
        self._rpcs.clear()
        self._probes.clear()
        self._sends.clear()
        if first is not None:
            raise first
