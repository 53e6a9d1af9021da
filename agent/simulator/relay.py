"""A loopback relay between the fork (anvil) and its upstream that remembers the chain state
the fork read at its block.

Why: anvil (1.7.1) keeps what it fetched from the upstream inside its snapshot, so
``evm_revert`` throws it away with the proposal's effects, and ``anvil_reset`` throws away
everything. Without the relay, each proposal on a reused fork fetched the same ~75 accounts and
storage slots again, one round trip each (measured: a warm fork was only 1.1x faster than a
fresh fork per proposal behind a 30 ms RPC).

What it does:

* Answers fixed by the fork's block are kept while the fork stays at that block and given again
  without an upstream request (proposals after the first, a fork replaced at the same block):
  state reads at that block number (``eth_getStorageAt``, ``eth_getBalance``,
  ``eth_getTransactionCount``, ``eth_getCode``, ``eth_getAccountInfo``), the block itself
  (``eth_getBlockByNumber``, also by its hash) and ``eth_chainId``.
* When the fork moves to a new block, what the fork asked at the last block (its working set:
  the Safe, the pool, the tokens, the oracle...) is fetched at the new block in JSON-RPC batches
  (one upstream request per ``batch_size`` reads) while anvil resets; the fork's own requests
  for them wait for the batches, so moving costs a round trip or two, not one per slot. What the
  fork does not ask for again drops out of the working set at the following block.
* ``working_set()`` names those accounts and slots, so the simulator can have the fork load
  them before its snapshot (anvil forgets on ``evm_revert`` what it fetched after one).
* Lookups of transactions the fork mined itself (``local_tx``) are answered "not found" without
  asking the upstream, which cannot know them.

Everything else (other blocks, receipts, reads at a tag such as ``latest``) is forwarded
unchanged, and the upstream's answer (status and body, errors included) goes back to the fork
as it came, so upstream failures still surface as the fork's errors. A failed prefetch is only
a missed optimisation: the fork then reads lazily, as without the relay. The upstream URL (often
with an API key in it) stays in this process; the fork only knows the loopback address.

The fork's block is named by its number and its hash: what is kept belongs to one block hash,
and a block replaced at the same height (a reorg) is a move like any other (``move_to`` with the
new hash forgets the old answers). A block answer whose hash is not the expected one (the block
was replaced while the fork moved to it) is not kept and marks the move ``replaced``, so the
simulator forks again instead of simulating on the replaced block.

The upstream is the chain's RPC pool (``agent.core.rpc_pool``): the relay forwards to the URL the
chain's reads use, and a URL that refuses, times out or answers 429/5xx is reported to the pool
(which moves on) and the request tried at the next URL, so the fork rotates with the reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from agent.core.http import bare_session
from agent.core.tasks import all_at_once

# Reads whose answer is fixed once the block is named: state at the block, the block itself.
AT_BLOCK = frozenset(
    {
        "eth_getStorageAt",
        "eth_getBalance",
        "eth_getTransactionCount",
        "eth_getCode",
        "eth_getAccountInfo",
        "eth_getBlockByNumber",
    }
)
ACCOUNT_READS = (
    "eth_getAccountInfo",
    "eth_getBalance",
    "eth_getTransactionCount",
    "eth_getCode",
)
# Asked by the fork at every reset; kept while the fork stays at its block.
PER_BLOCK = frozenset({"eth_chainId"})
# Transactions the fork mined itself: the upstream cannot know them, so the fork's lookups
# (a receipt polled before the fork has mined it) are answered "not found" locally.
BY_HASH = frozenset({"eth_getTransactionReceipt", "eth_getTransactionByHash"})
BLOCK = "<block>"  # stands for the fork's block in a remembered call
Key = tuple[str, str]  # (method, JSON of the parameters, the block as BLOCK)


class Upstream(Protocol):
    """Where the fork's reads go: the URL in use, told when it failed (``RpcPool``)."""

    @property
    def active_url(self) -> str: ...

    @property
    def size(self) -> int: ...  # how many URLs a request may try

    def failed(self, url: str, reason: str) -> None: ...


@dataclass(frozen=True)
class FixedUpstream:
    """One URL, never rotated."""

    url: str
    size: int = 1

    @property
    def active_url(self) -> str:
        return self.url

    def failed(self, url: str, reason: str) -> None:
        pass


def _failure_reason(status: int) -> str | None:
    """An upstream HTTP status another URL might not give."""
    if status == 429:
        return "429"
    if status == 408:
        return "timeout"
    return "5xx" if status >= 500 else None


@dataclass
class RelayStats:
    """Counters since the relay was created (they survive fork restarts)."""

    served: int = 0  # reads answered from memory
    forwarded: int = 0  # HTTP requests forwarded to the upstream for the fork
    prefetch_requests: int = 0  # upstream batch requests made when the fork moved
    prefetched: int = 0  # reads those batches returned


def _key(method: str, params: list[Any]) -> Key:
    return method, json.dumps(params, separators=(",", ":"))


def _at(key: Key, block: int) -> dict[str, Any]:
    """The call ``key`` stands for, at ``block``."""
    params = [hex(block) if p == BLOCK else p for p in json.loads(key[1])]
    return {"jsonrpc": "2.0", "method": key[0], "params": params}


class ForkRelay:
    def __init__(
        self,
        upstream: str | Upstream,
        *,
        timeout_s: float = 20.0,
        upstream_timeout_s: float | None = None,
        batch_size: int = 100,
    ):
        self.upstream: Upstream = FixedUpstream(upstream) if isinstance(upstream, str) else upstream
        self.timeout_s = timeout_s
        # One upstream URL's share: shorter than the fork's own call timeout, so a hung URL
        # leaves time for the next one.
        self.upstream_timeout_s = upstream_timeout_s or timeout_s
        self.batch_size = batch_size
        self.stats = RelayStats()
        self._block: int | None = None
        self._hash: str | None = None  # the fork's block is this one, not any block at its height
        self.replaced = False  # a block answer at the fork's height had another hash
        self._cache: dict[Key, Any] = {}  # answers at ``_block``
        self._used: set[Key] = set()  # what the fork asked for at ``_block``
        self._local_txs: set[str] = set()  # hashes of transactions the fork mined
        self._prefetching: asyncio.Event | None = None  # set when the move's batches are in
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def upstream_url(self) -> str:
        return self.upstream.active_url

    async def start(self) -> str:
        """Listen on a free loopback port (in the running event loop); returns the URL."""
        if self._runner is not None:
            return self.url
        self._session = bare_session(self.upstream_timeout_s)
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/", self._handle)
        # Stopping does not wait for requests in flight: the fork they came from is gone.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._port = int(runner.addresses[0][1])
        self._runner = runner
        return self.url

    async def stop(self) -> None:
        """Stop listening; what it remembers is kept for a fork started again at the block."""
        runner, self._runner = self._runner, None
        session, self._session = self._session, None
        if self._prefetching is not None:
            self._prefetching.set()
        if runner is not None:
            await runner.cleanup()
        if session is not None:
            await session.close()

    def working_set(self) -> tuple[set[str], set[tuple[str, str]]]:
        """Accounts and (account, slot) pairs the fork read at its block, or that were fetched
        for it when it moved there."""
        keys = {*self._used, *self._cache}
        accounts, slots = set(), set()
        for method, raw in keys:
            params = json.loads(raw)
            if method in ACCOUNT_READS and params:
                accounts.add(str(params[0]))
            elif method == "eth_getStorageAt" and len(params) == 3:
                slots.add((str(params[0]), str(params[1])))
        return accounts, slots

    def pin(self, block_hash: str) -> None:
        """The fork's block is the one with ``block_hash``, known only once the move began: a
        block answer kept meanwhile with another hash marks the move replaced."""
        pinned = block_hash.lower()
        if self._hash is not None and self._hash != pinned:
            self.replaced = True  # what is kept was for the block this one replaced
        self._hash = pinned
        for (method, _), value in list(self._cache.items()):
            if (
                method == "eth_getBlockByNumber"
                and isinstance(value, dict)
                and str(value.get("hash", "")).lower() != pinned
            ):
                self.replaced = True

    def local_tx(self, tx_hash: str) -> None:
        """``tx_hash`` was sent to the fork (not to the chain)."""
        self._local_txs.add(tx_hash.lower())

    async def move_to(self, block: int, block_hash: str | None = None) -> None:
        """The fork is about to fork at ``block`` (the block with ``block_hash``; None: any
        block at that height): forget the last block's answers and fetch what the fork asked
        for at the last block, at ``block``, in JSON-RPC batches (the fork's own requests for
        them wait for the batches). Never raises: best effort."""
        same = block_hash is None or block_hash.lower() == self._hash
        if block == self._block and same and not self.replaced:
            return  # (a hash to come is checked by ``pin``)
        work = sorted(self._used) if self._block is not None else []
        # anvil 1.7.1 reads an account either with eth_getAccountInfo or with three reads, and
        # which one changes from one reset to the next: an account read either way is fetched
        # both ways (more calls in the same batch requests, no more requests).
        extra = {
            _key(m, json.loads(k[1])) for k in work if k[0] in ACCOUNT_READS for m in ACCOUNT_READS
        }
        work = sorted({*work, *extra})
        self._block = block
        self._hash = block_hash.lower() if block_hash else None
        self.replaced = False
        self._cache = {}
        self._used = set()
        self._local_txs = set()
        if not work or self._session is None:
            return
        done = self._prefetching = asyncio.Event()
        try:
            chunks = [work[i : i + self.batch_size] for i in range(0, len(work), self.batch_size)]
            await all_at_once(self._prefetch(block, self._hash, c) for c in chunks)
        finally:
            done.set()
            if self._prefetching is done:
                self._prefetching = None

    async def _prefetch(self, block: int, block_hash: str | None, keys: list[Key]) -> None:
        body = [{**_at(k, block), "id": i} for i, k in enumerate(keys)]
        session = self._session
        if session is None:
            return
        self.stats.prefetch_requests += 1
        url = self.upstream.active_url
        try:
            async with session.post(url, json=body) as resp:
                if resp.status != 200:
                    reason = _failure_reason(resp.status)
                    if reason is not None:
                        self.upstream.failed(url, reason)
                    return
                answers = json.loads(await resp.read())
        except TimeoutError:
            self.upstream.failed(url, "timeout")
            return
        except aiohttp.ClientError:
            self.upstream.failed(url, "unreachable")
            return
        except (ValueError, RuntimeError):
            return  # RuntimeError: the session was closed (the fork was stopped meanwhile)
        if not isinstance(answers, list) or (self._block, self._hash) != (block, block_hash):
            return  # no batch support, or the fork moved on meanwhile
        for a in answers:
            i = a.get("id") if isinstance(a, dict) else None
            if isinstance(i, int) and 0 <= i < len(keys) and self._keep(keys[i], a):
                self.stats.prefetched += 1

    def _keep(self, key: Key, answer: dict[str, Any]) -> bool:
        """Remember a successful answer (a block also under its hash)."""
        if answer.get("error") is not None or "result" not in answer:
            return False
        result = answer["result"]
        if key[0] == "eth_getBlockByNumber" and result is None:
            return False  # not there yet: ask again next time
        if (
            key[0] == "eth_getBlockByNumber"
            and self._hash is not None
            and isinstance(result, dict)
            and str(result.get("hash", "")).lower() != self._hash
        ):
            self.replaced = True  # a reorg replaced the block while the fork moved to it
            return False
        self._cache[key] = result
        if key[0] == "eth_getBlockByNumber" and isinstance(result, dict) and "hash" in result:
            full = json.loads(key[1])[1:]
            self._cache[_key("eth_getBlockByHash", [result["hash"], *full])] = result
        return True

    def _key_of(self, call: Any) -> Key | None:
        """The key of a call the fork makes, if its answer is fixed at the fork's block."""
        if not isinstance(call, dict) or self._block is None:
            return None
        method, params = call.get("method"), call.get("params") or []
        if not isinstance(method, str) or not isinstance(params, list):
            return None
        if method in PER_BLOCK and not params:
            return _key(method, [])
        if method == "eth_getBlockByHash":
            return _key(method, params)  # answered only when the block's number was asked
        if method in AT_BLOCK and params:
            # The block is the last parameter of a state read, the first of a block read.
            at = 0 if method == "eth_getBlockByNumber" else len(params) - 1
            if params[at] == hex(self._block):
                return _key(method, [BLOCK if i == at else p for i, p in enumerate(params)])
        return None

    def _local_answer(self, call: Any) -> tuple[bool, Any]:
        key = self._key_of(call)
        if key is not None and key in self._cache:
            return True, self._cache[key]
        if (
            isinstance(call, dict)
            and call.get("method") in BY_HASH
            and isinstance(call.get("params"), list)
            and call["params"]
            and str(call["params"][0]).lower() in self._local_txs
        ):
            return True, None
        return False, None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        calls = body if isinstance(body, list) else [body]
        keys = [self._key_of(c) for c in calls]
        for k in keys:
            if k is not None and k[0] != "eth_getBlockByHash":
                self._used.add(k)
        pending = self._prefetching
        if pending is not None and any(k is not None and k not in self._cache for k in keys):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pending.wait(), self.timeout_s)
        answers = [self._local_answer(c) for c in calls]
        if calls and all(hit for hit, _ in answers):
            self.stats.served += len(calls)
            out = [
                {"jsonrpc": "2.0", "id": c.get("id"), "result": r}
                for c, (_, r) in zip(calls, answers, strict=True)
            ]
            return web.json_response(out if isinstance(body, list) else out[0])
        return await self._forward(raw, calls, keys, batch=isinstance(body, list))

    async def _forward(
        self, raw: bytes, calls: list[Any], keys: list[Key | None], *, batch: bool
    ) -> web.Response:
        session = self._session
        if session is None:
            return web.Response(status=503, text="fork relay stopping")
        block = self._block
        self.stats.forwarded += 1
        # Each URL of the chain's pool gets its turn; the last failure goes to the fork as
        # it came (the fork then fails, and the tick is retried).
        for left in range(max(1, self.upstream.size) - 1, -1, -1):
            url = self.upstream.active_url
            try:
                async with session.post(
                    url, data=raw, headers={"Content-Type": "application/json"}
                ) as resp:
                    status, out = resp.status, await resp.read()
                    ctype = resp.headers.get("Content-Type", "application/json")
                    retry_after = resp.headers.get("Retry-After")
            except TimeoutError:
                self.upstream.failed(url, "timeout")
                if left:
                    continue
                return web.Response(status=504, text="fork relay: the upstream timed out")
            except aiohttp.ClientError as exc:
                self.upstream.failed(url, "unreachable")
                if left:
                    continue
                # No URL in the text: it may carry the provider's key, and the fork logs it.
                return web.Response(
                    status=502, text=f"fork relay: the upstream failed ({exc.__class__.__name__})"
                )
            except RuntimeError as exc:  # the session was closed: the fork is being stopped
                return web.Response(
                    status=502, text=f"fork relay: the upstream failed ({exc.__class__.__name__})"
                )
            reason = _failure_reason(status)
            if reason is None:
                break
            self.upstream.failed(url, reason)
            if not left:
                break
        if status == 200 and block == self._block and any(k is not None for k in keys):
            self._remember(out, calls, keys, batch=batch)
        headers = {"Retry-After": retry_after} if retry_after else None
        return web.Response(
            status=status, body=out, headers=headers, content_type=ctype.split(";")[0]
        )

    def _remember(
        self, out: bytes, calls: list[Any], keys: list[Key | None], *, batch: bool
    ) -> None:
        try:
            answer = json.loads(out)
        except ValueError:
            return
        answers = answer if batch and isinstance(answer, list) else [answer]
        by_id = {c.get("id"): k for c, k in zip(calls, keys, strict=True) if k is not None}
        for a in answers:
            k = by_id.get(a.get("id")) if isinstance(a, dict) else None
            if k is not None and k[0] != "eth_getBlockByHash":
                self._keep(k, a)
