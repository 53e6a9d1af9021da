"""A managed Anvil fork of the chain, reused across proposals.

One fork per chain, forked ``block_lag`` blocks behind the tip. Each proposal runs between an
``evm_snapshot`` and an ``evm_revert`` (a snapshot is consumed by the revert, so a fresh one is
taken every time). When the chain moves on, the fork follows with ``anvil_reset``; if the
process died, it is restarted.

The fork reads its upstream through a relay on loopback (``relay.py``) that keeps the state
read at the fork's block and fetches it in batches at the next block. The upstream is the
chain's RPC client: with several URLs (``RpcPool``) the relay forwards to the one the chain's
reads use and rotates with them. The fork's block is the block with the hash the upstream
names at its height when the fork moves: a reorg that replaces it at the same height moves the
fork (``anvil_reset``) like a new block does, instead of simulating on the replaced block.
Before a proposal's
snapshot the fork loads that state from the relay, because anvil forgets on ``evm_revert``
whatever it fetched after the snapshot. A warm proposal then makes one upstream request, the
block's hash (sent while it runs: a reorg at the same height is noticed).

A Safe proposal is executed as the owners will sign it: one ``execTransaction`` (a
``MultiSendCallOnly`` batch when there are several calls), with the owners impersonated and
approving the Safe transaction hash on chain (``approveHash``), so the signatures are Safe's
"approved hash" kind (``r = owner, s = 0, v = 1``). When the Safe transaction carries a nonce
(the next free one after the Transaction Service's queue), it executes at that nonce.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from agent.core.abi import ContractAbi, DecodedCall, decode_revert, load_abi, revert_data_from_rpc
from agent.core.anvil import AnvilProcess
from agent.core.errors import (
    ExecutionReverted,
    RpcError,
    SimulationError,
    SourceError,
    TransportError,
)
from agent.core.multicall import Call
from agent.core.rpc import RpcClient
from agent.core.rpc_pool import RpcPool
from agent.core.tasks import all_at_once
from agent.planner.safe import SafeTx
from agent.planner.tx import PlannedTx
from agent.simulator.relay import ForkRelay, RelayStats

GAS_FUNDING_WEI = 10 * 10**18
PRIME_LANES = 4  # concurrent batches when the fork loads its working set
PRIME_BATCH = 10  # reads per batch
SAFE_NONCE_SLOT = 5  # SafeStorage: singleton, modules, owners, ownerCount, threshold, nonce
T = TypeVar("T")
FORK_SOURCE = "fork"

# What anvil answers when its upstream (the chain RPC it forks from) fails: a JSON-RPC error
# object about fetching state, not a revert of the proposal.
_UPSTREAM_FAILURE = (
    "error sending request",
    "failed to get",
    "fetching",
    "backend",
    "http error",
    "connection",
    "timed out",
    "timeout",
    "rate limit",
    "429",
    "502",
    "503",
    "504",
)


class ForkUnavailable(TransportError):
    """The fork (or the chain it forks from) could not answer: infrastructure, not a verdict
    on the proposal. The tick fails and is retried; nothing is journaled, so the proposal's
    idempotency key is not spent on it."""


def is_upstream_failure(exc: RpcError) -> bool:
    """A fork JSON-RPC error that reports its upstream failing, as opposed to a revert."""
    if isinstance(exc, ExecutionReverted) or "revert" in exc.rpc_message.lower():
        return False
    msg = exc.rpc_message.lower()
    return any(s in msg for s in _UPSTREAM_FAILURE)


@dataclass(frozen=True)
class AccountView:
    total_collateral_base: int
    total_debt_base: int
    health_factor_wad: int


@dataclass(frozen=True)
class TxOutcome:
    description: str
    success: bool
    gas_used: int | None
    tx_hash: str | None
    events: tuple[DecodedCall, ...] = ()
    revert_reason: str | None = None


@dataclass(frozen=True)
class SimulationResult:
    success: bool
    fork_block: int
    before: AccountView | None
    after: AccountView | None
    transactions: tuple[TxOutcome, ...]
    error: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Post-execution reads (tag -> decoded outputs), taken on the fork before it is reverted.
    reads: dict[str, tuple[Any, ...]] = field(default_factory=dict)


class ForkSimulator:
    def __init__(
        self,
        upstream: RpcClient,
        *,
        pool: str,
        block_lag: int = 0,
        chain_id: int | None = None,
        call_timeout_s: float = 20.0,
        pid_dir: str | None = None,
    ) -> None:
        # The chain's client, built and closed by its owner (``App``: the chain's pool); the
        # simulator builds only the client of the anvil it starts.
        self.upstream = upstream
        # A frozen fork (alive, not answering) costs at most this per call, then is replaced.
        self.call_timeout_s = call_timeout_s
        self.pid_dir = pid_dir
        self.pool = pool
        self.block_lag = block_lag
        self.chain_id = chain_id
        self._anvil: AnvilProcess | None = None
        self._rpc: RpcClient | None = None
        self._fork_block: int | None = None
        self._fork_hash: str | None = None
        self._in_sequence = False
        # What the fork loaded at its block before any snapshot (accounts, (account, slot)).
        self._primed: tuple[set[str], set[tuple[str, str]]] = (set(), set())
        # Between the fork and the upstream: remembers the state read at the fork's block
        # (reverts and restarts do not fetch it again) and prefetches it when the fork moves.
        pooled = self.upstream if isinstance(self.upstream, RpcPool) else None
        self._relay = ForkRelay(
            pooled or self.upstream.url,
            timeout_s=call_timeout_s,
            upstream_timeout_s=min(call_timeout_s, pooled.timeout_s) if pooled else None,
        )
        self._abis = [
            load_abi(n)
            for n in (
                "ERC20",
                "Pool",
                "Safe",
                "AToken",
                "VariableDebtToken",
                "MultiSendCallOnly",
                "PremiaPool",
                "PremiaPoolFactory",
                "SwapRouter02",
                "UniswapV3Pool",
            )
        ]

    @property
    def url(self) -> str | None:
        return self._anvil.url if self._anvil else None

    @property
    def pid(self) -> int | None:
        """The fork anvil's process id while it runs (memory watch, recycling)."""
        return self._anvil.pid if self._anvil and self._anvil.alive() else None

    @property
    def relay_stats(self) -> RelayStats:
        """What the upstream relay served from memory, forwarded and prefetched."""
        return self._relay.stats

    async def keep_warm(self) -> None:
        """Between simulations: have a fork process that answers, without moving it (no
        upstream read). A frozen fork costs one call timeout here and is replaced, instead of
        surprising the next proposal; a dead one is started again."""
        if self._anvil is None or not self._anvil.alive():
            await self._start()
            return
        assert self._rpc is not None
        await self._guard(self._rpc.request("eth_chainId"))

    @property
    def upstream_url(self) -> str:
        """The URL the fork reads now (the chain pool's current one)."""
        return self._relay.upstream_url

    async def _block_hash(self, number: int) -> str:
        """The hash of the chain's block ``number`` now (one upstream request)."""
        try:
            block = await self.upstream.get_block(number)
        except (SourceError, RpcError) as exc:
            raise ForkUnavailable(FORK_SOURCE, f"the fork's upstream failed: {exc}") from None
        return str(block.get("hash", "")).lower()

    async def ensure(self, head_block: int) -> RpcClient:
        """Have a live fork at ``head_block - block_lag``, on the block the chain has at that
        height now (a block replaced by a reorg at the same height is a new block)."""
        target = max(0, head_block - self.block_lag)
        if self._in_sequence and self._fork_block == target:
            # pinned by the sequence: its proposals build on it
            return await self._ensure_at(target, self._fork_hash)
        alive = self._anvil is not None and self._anvil.alive()
        if alive and self._fork_block == target:
            # The block's hash is asked while the fork loads its working set (no added round
            # trip); a block replaced meanwhile is forked again by ``_ensure_at``.
            check = asyncio.ensure_future(self._block_hash(target))
            try:
                if self._rpc is not None:
                    await self._guard(self._prime(self._rpc))
                return await self._ensure_at(target, await check)
            finally:
                check.cancel()
        # Moving: the block's hash is asked while the fork resets (no added round trip).
        pending = asyncio.ensure_future(self._block_hash(target))
        try:
            return await self._ensure_at(target, None, pending)
        finally:
            pending.cancel()

    async def _verified(
        self, head_block: int, run: Callable[[RpcClient], Awaitable[SimulationResult]]
    ) -> SimulationResult:
        """``run`` a dry-run on the fork at the block. When the fork already stands there, the
        chain's hash for that height is asked while the dry-run runs (a warm dry-run waits for
        no upstream request), and a block replaced meanwhile (a reorg) is forked and the
        dry-run run again on the new block."""
        target = max(0, head_block - self.block_lag)
        for _ in range(2):
            known = self._fork_hash
            warm = (
                not self._in_sequence
                and self._fork_block == target
                and known is not None
                and self._anvil is not None
                and self._anvil.alive()
            )
            if not warm:
                return await run(await self.ensure(head_block))
            check = asyncio.ensure_future(self._block_hash(target))
            try:
                res = await run(await self._ensure_at(target, known))
                now = await check
            finally:
                check.cancel()
            if now == known:
                return res
            self._fork_hash = None  # replaced during the dry-run: the next ensure resets
        raise ForkUnavailable(FORK_SOURCE, f"block {target} kept being replaced (reorgs)")

    async def _ensure_at(
        self, target: int, block_hash: str | None, pending: asyncio.Future[str] | None = None
    ) -> RpcClient:
        """The fork at block ``target`` with ``block_hash`` (or the hash ``pending`` gives,
        asked while the fork moves)."""
        if self._anvil is None or not self._anvil.alive():
            await self._start()
        if pending is not None or self._fork_block != target or self._fork_hash != block_hash:
            assert self._rpc is not None
            self._primed = (set(), set())
            self._fork_block = self._fork_hash = None
            # The last block's working set is fetched at the new block (in batches) while the
            # fork resets, so the proposal finds it in the relay instead of one round trip each.
            prefetch = asyncio.ensure_future(self._relay.move_to(target, block_hash))
            try:
                await self._guard(
                    self._rpc.request(
                        "anvil_reset",
                        [{"forking": {"jsonRpcUrl": self._relay.url, "blockNumber": target}}],
                    )
                )
                await prefetch
            finally:
                prefetch.cancel()
            if pending is not None:
                block_hash = await pending
                self._relay.pin(block_hash)
            if self._relay.replaced:
                raise ForkUnavailable(
                    FORK_SOURCE,
                    f"block {target} was replaced (a reorg) while the fork moved to it: "
                    "forked again at the next tick",
                )
            self._fork_block, self._fork_hash = target, block_hash
        assert self._rpc is not None
        if not self._in_sequence:
            await self._guard(self._prime(self._rpc))
        return self._rpc

    async def _prime(self, rpc: RpcClient) -> None:
        """Have the fork load, before the proposal's snapshot, the accounts and slots it read at
        this block: anvil keeps what it loaded before a snapshot across ``evm_revert``, and
        forgets what it loaded after. Served by the relay from memory. Only a speed-up: a read
        the fork refuses is left to the proposal (an upstream failure still replaces it)."""
        accounts, slots = self._relay.working_set()
        accounts -= self._primed[0]
        slots -= self._primed[1]
        if not accounts and not slots:
            return
        calls: list[tuple[str, list[Any]]] = [
            ("eth_getBalance", [a, "latest"]) for a in sorted(accounts)
        ]
        calls += [("eth_getStorageAt", [a, k, "latest"]) for a, k in sorted(slots)]
        # JSON-RPC batches of PRIME_BATCH reads, PRIME_LANES batches at a time: one request
        # per read cost ~1 ms of this process's CPU each (168 reads: ~390 ms against ~180 ms
        # batched, under load). Not all at once: a thread per read in flight grew the fork's
        # memory (glibc arenas) by ~25 MB at once; 4 x 10: +1 MB over 40 loads.
        lanes = asyncio.Semaphore(PRIME_LANES)

        async def load(chunk: list[tuple[str, list[Any]]]) -> None:
            async with lanes:
                answers = await rpc.batch(chunk)
            for a in answers:
                if isinstance(a, RpcError) and is_upstream_failure(a):
                    raise a

        chunks = [calls[i : i + PRIME_BATCH] for i in range(0, len(calls), PRIME_BATCH)]
        await all_at_once(load(c) for c in chunks)
        self._primed[0].update(accounts)
        self._primed[1].update(slots)

    async def prime(self) -> tuple[int, int]:
        """Load the working set the fork read at its block into the fork now, outside any
        snapshot (start-up priming: the simulations that taught it were reverted, and anvil
        forgets on revert what it loaded after the snapshot). A proposal at this block then
        loads nothing, and a move to a later block fetches the same set in batches. Returns
        how many accounts and slots the fork holds from before any snapshot."""
        if self._rpc is not None and not self._in_sequence and self._anvil and self._anvil.alive():
            await self._guard(self._prime(self._rpc))
        return len(self._primed[0]), len(self._primed[1])

    async def _start(self) -> None:
        """A new fork process (not yet forking: ``ensure`` points it at the upstream)."""
        await self.stop()
        # The fork reads the upstream through the relay (on loopback): the upstream URL (an
        # API key in it, often) stays in this process, never on a command line.
        try:
            await self._relay.start()
        except OSError as exc:
            raise ForkUnavailable(FORK_SOURCE, f"cannot start the fork relay: {exc}") from None
        self._anvil = AnvilProcess(
            chain_id=self.chain_id,
            pid_dir=self.pid_dir,
            die_with_parent=True,
        )
        try:
            self._anvil.spawn()  # in this thread: the fork dies with the daemon (pdeathsig)
            await asyncio.to_thread(self._anvil.wait_ready)
        except Exception as exc:
            self._anvil.stop()
            self._anvil = None
            raise ForkUnavailable(FORK_SOURCE, f"cannot start the fork: {exc}") from None
        # The fork is local: one attempt (retries would only hide a dead process).
        self._rpc = self._anvil.client(source=FORK_SOURCE, timeout_s=self.call_timeout_s)
        self._fork_block = self._fork_hash = None
        self._primed = (set(), set())

    @contextlib.asynccontextmanager
    async def sequence(self, head_block: int) -> AsyncIterator[RpcClient]:
        """Simulate several proposals in order on one fork state: each successful one stays
        applied, so the next sees its effects (as the signers will when they execute them in
        order); failed ones are rolled back. The fork is reverted when the block ends. Yields
        the fork's RPC so planners can read the state the next proposal will meet."""
        rpc = await self.ensure(head_block)
        snap = await self._guard(rpc.request("evm_snapshot"))
        self._in_sequence = True
        try:
            yield rpc
        finally:
            self._in_sequence = False
            if self._rpc is rpc:  # not replaced after a failure
                await self._guard(rpc.request("evm_revert", [snap]))

    async def _guard(self, call: Awaitable[T]) -> T:
        """Await a fork call; a transport failure or an upstream failure replaces the fork
        and raises ``ForkUnavailable`` (retried by the next tick)."""
        try:
            return await call
        except ForkUnavailable:
            await self.stop()
            raise
        except SourceError as exc:
            await self.stop()
            raise ForkUnavailable(FORK_SOURCE, f"fork unavailable: {exc}") from None
        except RpcError as exc:
            if is_upstream_failure(exc):
                await self.stop()
                raise ForkUnavailable(
                    FORK_SOURCE, f"the fork's upstream failed: {exc.rpc_message}"
                ) from None
            raise

    async def stop(self) -> None:
        """Stop the fork (its anvil, its client, the relay); the upstream is its owner's."""
        if self._rpc is not None:
            await self._rpc.close()
            self._rpc = None
        if self._anvil is not None:
            await asyncio.to_thread(self._anvil.stop)
            self._anvil = None
        await self._relay.stop()

    # -- reads -------------------------------------------------------------------------

    async def account_view(self, rpc: RpcClient, account: str) -> AccountView:
        pool = load_abi("Pool")
        raw = await rpc.eth_call(self.pool, pool.encode_hex("getUserAccountData", account))
        out = pool.decode_output("getUserAccountData", raw)
        return AccountView(int(out[0]), int(out[1]), int(out[5]))

    async def _call(
        self, rpc: RpcClient, abi: ContractAbi, to: str, fn: str, *args: Any
    ) -> tuple[Any, ...]:
        return abi.decode_output(fn, await rpc.eth_call(to, abi.encode_hex(fn, *args)))

    # -- execution ---------------------------------------------------------------------

    async def _send(
        self, rpc: RpcClient, sender: str, to: str, data: str, value: int, label: str
    ) -> TxOutcome:
        tx = {"from": sender, "to": to, "data": data, "value": hex(value)}
        try:
            gas = int(await rpc.request("eth_estimateGas", [tx]), 16)
        except RpcError as exc:
            if is_upstream_failure(exc):
                raise ForkUnavailable(
                    FORK_SOURCE, f"the fork's upstream failed: {exc.rpc_message}"
                ) from None
            raw = revert_data_from_rpc(exc.data)
            reason = decode_revert(raw, self._abis) if raw is not None else exc.rpc_message
            return TxOutcome(label, False, None, None, revert_reason=reason)
        tx["gas"] = hex(gas + gas // 5)
        tx_hash = await rpc.request("eth_sendTransaction", [tx])
        self._relay.local_tx(str(tx_hash))  # its receipt is the fork's, never the upstream's
        receipt = await self._receipt(rpc, str(tx_hash))
        ok = receipt.get("status") == "0x1"
        return TxOutcome(
            label,
            ok,
            int(receipt["gasUsed"], 16),
            str(tx_hash),
            self._decode_logs(receipt.get("logs", [])),
            None if ok else "reverted on execution",
        )

    async def _receipt(
        self, rpc: RpcClient, tx_hash: str, timeout_s: float = 30.0
    ) -> dict[str, Any]:
        # Anvil mines on submission, but the receipt can lag the hash by a moment.
        # It is there within a few milliseconds: poll soon, then back off.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pause = 0.002
        while True:
            receipt = await rpc.request("eth_getTransactionReceipt", [tx_hash])
            if isinstance(receipt, dict):
                return receipt
            if loop.time() > deadline:
                raise SimulationError(f"fork did not mine {tx_hash} within {timeout_s:.0f}s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _decode_logs(self, logs: Sequence[dict[str, Any]]) -> tuple[DecodedCall, ...]:
        out = []
        for log in logs:
            topics = [bytes.fromhex(t[2:]) for t in log.get("topics", [])]
            data = bytes.fromhex(str(log.get("data", "0x"))[2:])
            for abi in self._abis:
                ev = abi.decode_event(topics, data)
                if ev is not None:
                    out.append(ev)
                    break
        return tuple(out)

    async def _impersonate(self, rpc: RpcClient, who: str) -> None:
        await rpc.request("anvil_impersonateAccount", [who])
        await rpc.request("anvil_setBalance", [who, hex(GAS_FUNDING_WEI)])

    async def simulate_safe(
        self,
        head_block: int,
        safe_tx: SafeTx,
        account: str,
        label: str,
        *,
        inner: Sequence[PlannedTx] = (),
        reads: Sequence[Call] = (),
    ) -> SimulationResult:
        """Execute ``safe_tx`` as the owners will. ``inner`` (the batched calls) lets a failed
        batch be replayed call by call from the Safe to name the call that reverts and why
        (the Safe itself only reports GS013); ``reads`` run on the fork after success."""
        return await self._guard(
            self._verified(
                head_block,
                lambda rpc: self._simulate_safe_at(rpc, safe_tx, account, label, inner, reads),
            )
        )

    async def _simulate_safe_at(
        self,
        rpc: RpcClient,
        safe_tx: SafeTx,
        account: str,
        label: str,
        inner: Sequence[PlannedTx],
        reads: Sequence[Call],
    ) -> SimulationResult:
        snap = await rpc.request("evm_snapshot")
        keep = False
        try:
            res = await self._simulate_safe(rpc, safe_tx, account, label)
            if not res.success and inner:
                await rpc.request("evm_revert", [snap])
                snap = await rpc.request("evm_snapshot")
                why = await self._diagnose(rpc, safe_tx.safe, inner)
                if why:
                    res = replace(res, error=f"{res.error}; {why}")
            elif res.success and reads:
                res = replace(res, reads=await self._reads(rpc, reads))
            keep = res.success and self._in_sequence
            return res
        except (RpcError, SimulationError) as exc:
            if isinstance(exc, RpcError) and is_upstream_failure(exc):
                raise
            return SimulationResult(False, self._fork_block or 0, None, None, (), error=str(exc))
        finally:
            if not keep and self._rpc is rpc:
                await rpc.request("evm_revert", [snap])

    async def _simulate_safe(
        self, rpc: RpcClient, st: SafeTx, account: str, label: str
    ) -> SimulationResult:
        safe = load_abi("Safe")
        before = await self.account_view(rpc, account)
        if st.nonce is not None:
            await self._set_safe_nonce(rpc, st.safe, st.nonce)
        (nonce,) = await self._call(rpc, safe, st.safe, "nonce")
        (owners,) = await self._call(rpc, safe, st.safe, "getOwners")
        (threshold,) = await self._call(rpc, safe, st.safe, "getThreshold")
        data = bytes.fromhex(st.data[2:])
        tx_fields = (
            st.to,
            st.value,
            data,
            st.operation,
            st.safe_tx_gas,
            st.base_gas,
            st.gas_price,
            st.gas_token,
            st.refund_receiver,
        )
        (tx_hash,) = await self._call(rpc, safe, st.safe, "getTransactionHash", *tx_fields, nonce)
        # Safe requires signatures sorted by owner address.
        signers = sorted((str(o) for o in owners), key=lambda a: int(a, 16))[: int(threshold)]
        outcomes: list[TxOutcome] = []
        for owner in signers:
            await self._impersonate(rpc, owner)
            res = await self._send(
                rpc,
                owner,
                st.safe,
                safe.encode_hex("approveHash", tx_hash),
                0,
                f"approveHash by owner {owner}",
            )
            if not res.success:
                return SimulationResult(
                    False, self._fork_block or 0, before, None, (res,), error=res.revert_reason
                )
        sigs = b"".join(int(o, 16).to_bytes(32, "big") + b"\x00" * 32 + b"\x01" for o in signers)
        exec_data = safe.encode_hex("execTransaction", *tx_fields, sigs)
        res = await self._send(rpc, signers[0], st.safe, exec_data, 0, label)
        outcomes.append(res)
        if res.success and any(e.method == "ExecutionFailure" for e in res.events):
            res = TxOutcome(
                res.description,
                False,
                res.gas_used,
                res.tx_hash,
                res.events,
                "Safe reported ExecutionFailure",
            )
            outcomes[-1] = res
        after = await self.account_view(rpc, account) if res.success else None
        return SimulationResult(
            res.success,
            self._fork_block or 0,
            before,
            after,
            tuple(outcomes),
            error=res.revert_reason,
        )

    async def _set_safe_nonce(self, rpc: RpcClient, safe_addr: str, nonce: int) -> None:
        """Run at the nonce the signers will see: when the Transaction Service already queues
        transactions at the on-chain nonce and above, the proposal executes after them, so the
        fork's Safe is moved to that nonce (the queued transactions' own effects are not
        replayed: they may never execute). Safe 1.3-1.5 keep ``nonce`` in storage slot 5; the
        read-back catches any other layout."""
        safe = load_abi("Safe")
        (current,) = await self._call(rpc, safe, safe_addr, "nonce")
        if int(current) == nonce:
            return
        await rpc.request(
            "anvil_setStorageAt",
            [safe_addr, hex(SAFE_NONCE_SLOT), "0x" + nonce.to_bytes(32, "big").hex()],
        )
        (after,) = await self._call(rpc, safe, safe_addr, "nonce")
        if int(after) != nonce:
            raise SimulationError(
                f"could not move Safe {safe_addr} to nonce {nonce} on the fork (it reads {after}): "
                "unknown Safe storage layout"
            )

    async def _diagnose(self, rpc: RpcClient, safe: str, inner: Sequence[PlannedTx]) -> str | None:
        """Replay the batch's calls one by one as the Safe (impersonated) to find the failing one."""
        await self._impersonate(rpc, safe)
        for i, tx in enumerate(inner, 1):
            res = await self._send(rpc, safe, tx.to, tx.data, tx.value, tx.human)
            if not res.success:
                return f"call {i} ({tx.human}) reverts: {res.revert_reason}"
        return None

    async def _reads(self, rpc: RpcClient, reads: Sequence[Call]) -> dict[str, tuple[Any, ...]]:
        out = {}
        for c in reads:
            out[c.tag] = c.abi.decode_output(
                c.fn, await rpc.eth_call(c.target, c.abi.encode_hex(c.fn, *c.args))
            )
        return out

    async def simulate_eoa(
        self,
        head_block: int,
        sender: str,
        txs: Sequence[PlannedTx],
        account: str,
        *,
        reads: Sequence[Call] = (),
    ) -> SimulationResult:
        return await self._guard(
            self._verified(
                head_block, lambda rpc: self._simulate_eoa_at(rpc, sender, txs, account, reads)
            )
        )

    async def _simulate_eoa_at(
        self,
        rpc: RpcClient,
        sender: str,
        txs: Sequence[PlannedTx],
        account: str,
        reads: Sequence[Call],
    ) -> SimulationResult:
        snap = await rpc.request("evm_snapshot")
        keep = False
        try:
            before = await self.account_view(rpc, account)
            await self._impersonate(rpc, sender)
            outcomes: list[TxOutcome] = []
            for tx in txs:
                res = await self._send(rpc, sender, tx.to, tx.data, tx.value, tx.human)
                outcomes.append(res)
                if not res.success:
                    return SimulationResult(
                        False,
                        self._fork_block or 0,
                        before,
                        None,
                        tuple(outcomes),
                        error=res.revert_reason,
                    )
            after = await self.account_view(rpc, account)
            keep = self._in_sequence
            return SimulationResult(
                True,
                self._fork_block or 0,
                before,
                after,
                tuple(outcomes),
                reads=await self._reads(rpc, reads),
            )
        except (ExecutionReverted, RpcError, SimulationError) as exc:
            if isinstance(exc, RpcError) and is_upstream_failure(exc):
                raise
            return SimulationResult(False, self._fork_block or 0, None, None, (), error=str(exc))
        finally:
            if not keep and self._rpc is rpc:
                await rpc.request("evm_revert", [snap])
