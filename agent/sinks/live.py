"""Live submission: the guard that refuses unless every precondition holds, and a sender that
signs locally and sends with ``eth_sendRawTransaction`` to a private RPC (Flashbots Protect
style: ``https://rpc.flashbots.net``), never to the public mempool.

Keys are ``SecretStr``; neither the key nor its hex ever reaches a message or a log event.
State (nonce, gas, fees) is read from the agent's normal RPC when one is given, the raw
transaction goes to the private RPC only. For a Safe, the EOA's transaction is an
``execTransaction``; with threshold 1 and an owner as sender, the pre-validated signature
(``r = owner, s = 0, v = 1``) authorises it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_canonical_address, to_checksum_address
from pydantic import SecretStr

from agent.core.abi import load_abi
from agent.core.errors import ConfigError, Halt, MalformedResponse, RpcError, SourceError
from agent.core.rpc import RpcClient
from agent.planner.safe import SafeTx
from agent.sinks.config import LiveConfig
from agent.sinks.safe_service import account_from_key
from agent.store.ledger import LiveSend, ProposalLedger

log = structlog.get_logger(__name__)


class LiveRefused(Halt):
    """Live submission refused for an unsafe runtime state (wrong chain, failed simulation)."""


def check_live_allowed(
    live_cfg: LiveConfig,
    chain_id_from_rpc: int,
    expected_chain_id: int,
    simulation_ok_this_tick: bool | Sequence[bool],
    signer_present: bool,
) -> None:
    """Return only when live submission is allowed; otherwise raise with a one-line reason.

    ``ConfigError``: live is not enabled, no signer, no private RPC URL.
    ``LiveRefused`` (a ``Halt``): the RPC is on another chain than configured, or a transaction
    of this tick was not simulated or failed its simulation (one bool per transaction, or one
    for the whole batch).
    """
    if not live_cfg.enabled:
        raise ConfigError(
            "live submission refused: sinks.live.enabled is false (proposals are written for review only)"
        )
    key_configured = live_cfg.signer_key is not None and bool(
        live_cfg.signer_key.get_secret_value()
    )
    if not (signer_present and key_configured):
        raise ConfigError("live submission refused: no signer configured (sinks.live.signer_key)")
    if live_cfg.private_rpc_url is None or not live_cfg.private_rpc_url.get_secret_value():
        raise ConfigError(
            "live submission refused: no private RPC configured (sinks.live.private_rpc_url); "
            "the agent does not send to the public mempool"
        )
    if chain_id_from_rpc != expected_chain_id:
        raise LiveRefused(
            f"live submission refused: RPC reports chain id {chain_id_from_rpc}, configuration expects {expected_chain_id}"
        )
    results = (
        [simulation_ok_this_tick]
        if isinstance(simulation_ok_this_tick, bool)
        else list(simulation_ok_this_tick)
    )
    if not results:
        raise LiveRefused("live submission refused: no transaction was simulated this tick")
    failed = [i for i, ok in enumerate(results, 1) if not ok]
    if failed:
        raise LiveRefused(
            f"live submission refused: simulation failed this tick for transaction(s) "
            f"{', '.join(map(str, failed))} of {len(results)}"
        )


def prevalidated_signature(owner: str) -> bytes:
    """Safe's ``v = 1`` signature: valid when ``msg.sender == owner``."""
    return bytes(12) + to_canonical_address(owner) + bytes(32) + b"\x01"


def exec_transaction_calldata(st: SafeTx, signatures: bytes) -> str:
    """``Safe.execTransaction`` calldata for ``st`` with ``signatures`` (sorted by signer)."""
    return load_abi("Safe").encode_hex(
        "execTransaction",
        st.to,
        st.value,
        bytes.fromhex(st.data[2:]),
        st.operation,
        st.safe_tx_gas,
        st.base_gas,
        st.gas_price,
        st.gas_token,
        st.refund_receiver,
        signatures,
    )


@dataclass(frozen=True)
class SignedTx:
    tx: SentTx
    raw: str  # the signed transaction, 0x-hex (what eth_sendRawTransaction receives)
    value: int = 0
    data: str = "0x"


@dataclass(frozen=True)
class SentTx:
    tx_hash: str
    sender: str
    to: str
    nonce: int
    gas: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    chain_id: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "tx_hash": self.tx_hash,
            "from": self.sender,
            "to": self.to,
            "nonce": self.nonce,
            "gas": self.gas,
            "max_fee_per_gas": str(self.max_fee_per_gas),
            "max_priority_fee_per_gas": str(self.max_priority_fee_per_gas),
            "chain_id": self.chain_id,
        }


class LiveSender:
    """Signs EIP-1559 transactions with the configured key and sends them raw to the private
    RPC. Create it only after ``check_live_allowed`` passed."""

    SOURCE = "private-rpc"

    def __init__(
        self,
        cfg: LiveConfig,
        *,
        chain_id: int,
        send_rpc: RpcClient,
        read_rpc: RpcClient | None = None,
        account: LocalAccount | None = None,
    ) -> None:
        """``send_rpc`` is the private send URL's client, built and closed by its owner
        (``App``, with ``agent.core.rpc.send_client``: one attempt, never retried). ``account``
        replaces ``cfg.signer_key``: the autonomous executor's guardian and role member."""
        if account is None and (cfg.signer_key is None or not cfg.signer_key.get_secret_value()):
            raise ConfigError("sinks.live.signer_key is not set")
        self._account: LocalAccount = account or account_from_key(
            cfg.signer_key or SecretStr(""), "sinks.live.signer_key"
        )
        self.private = send_rpc
        self.read = read_rpc or self.private
        self.chain_id = chain_id
        self.cfg = cfg
        self._chain_checked = False

    @property
    def send_rpc(self) -> RpcClient:
        return self.private

    @property
    def address(self) -> str:
        return str(self._account.address)

    async def _fees(self) -> tuple[int, int]:
        block = await self.read.get_block("latest")
        base = int(block.get("baseFeePerGas") or "0x0", 16)
        try:
            tip = int(await self.read.request("eth_maxPriorityFeePerGas"), 16)
        except SourceError:
            tip = 0
        tip = max(tip, self.cfg.min_priority_fee_wei)
        max_fee = 2 * base + tip
        cap = self.cfg.max_fee_per_gas_wei
        if cap is not None:
            # Under the cap: a base fee that rises past it leaves the transaction waiting (and
            # replaced with bumped fees, still within the cap) rather than paying any price.
            max_fee = min(max_fee, cap)
            tip = min(tip, max_fee)
        return max_fee, tip

    async def sign(self, to: str, data: str, *, value: int = 0, gas: int | None = None) -> SignedTx:
        """Sign one transaction at the signer's nonce, re-read now (``pending``), so a signer
        also used by hand never blocks the agent."""
        if not self._chain_checked:
            actual = await self.private.chain_id()
            if actual != self.chain_id:
                raise LiveRefused(
                    f"live submission refused: private RPC reports chain id {actual}, configuration expects {self.chain_id}"
                )
            self._chain_checked = True
        sender, to = self.address, to_checksum_address(to)
        nonce = int(await self.read.request("eth_getTransactionCount", [sender, "pending"]), 16)
        if gas is None:
            est = int(
                await self.read.request(
                    "eth_estimateGas",
                    [{"from": sender, "to": to, "data": data, "value": hex(value)}],
                ),
                16,
            )
            gas = est * self.cfg.gas_limit_multiplier_bps // 10_000
        max_fee, tip = await self._fees()
        return self._signed(to, data, value, nonce, gas, max_fee, tip)

    def _signed(
        self, to: str, data: str, value: int, nonce: int, gas: int, max_fee: int, tip: int
    ) -> SignedTx:
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "to": to,
            "value": value,
            "data": data,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
        signed = self._account.sign_transaction(tx)
        return SignedTx(
            SentTx(
                "0x" + bytes(signed.hash).hex(),
                self.address,
                to,
                nonce,
                gas,
                max_fee,
                tip,
                self.chain_id,
            ),
            "0x" + bytes(signed.raw_transaction).hex(),
            value,
            data,
        )

    async def replacement(self, stuck: SignedTx) -> SignedTx | None:
        """The stuck transaction again at its nonce with both fees raised by ``fee_bump_bps``
        (and at least to what the chain asks now), or None when that would pass the cap."""
        bump = 10_000 + self.cfg.fee_bump_bps
        t = stuck.tx
        tip = max(-(-t.max_priority_fee_per_gas * bump // 10_000), self.cfg.min_priority_fee_wei)
        now_fee, _ = await self._fees()
        max_fee = max(-(-t.max_fee_per_gas * bump // 10_000), now_fee, tip)
        cap = self.cfg.max_fee_per_gas_wei
        if cap is not None and max_fee > cap:
            return None
        return self._signed(t.to, stuck.data, stuck.value, t.nonce, t.gas, max_fee, tip)

    async def broadcast(self, signed: SignedTx) -> SentTx:
        """``eth_sendRawTransaction`` once (never retried: see ``__init__``)."""
        expected = signed.tx.tx_hash
        try:
            got = await self.private.request("eth_sendRawTransaction", [signed.raw])
        except RpcError as exc:
            if "already known" not in exc.rpc_message.lower():
                raise
            got = expected  # the node has this very transaction already
        if not isinstance(got, str) or got.lower() != expected:
            raise MalformedResponse(
                self.SOURCE,
                f"eth_sendRawTransaction answered {str(got)[:80]!r}, expected {expected}",
            )
        log.info("live.sent", **signed.tx.as_dict())
        return signed.tx

    async def send(self, to: str, data: str, *, value: int = 0, gas: int | None = None) -> SentTx:
        """Sign and send one transaction; returns once the private RPC accepted it. Without a
        journal of the intent: use ``send_durably`` for proposals."""
        return await self.broadcast(await self.sign(to, data, value=value, gas=gas))

    def exec_call(self, st: SafeTx) -> tuple[str, str, int]:
        """``(to, data, value)`` of the owner's ``execTransaction`` of ``st``."""
        return st.safe, exec_transaction_calldata(st, prevalidated_signature(self.address)), 0

    async def send_safe_exec(self, st: SafeTx) -> SentTx:
        """``execTransaction`` of ``st`` by the signer as a Safe owner (threshold 1)."""
        return await self.send(
            st.safe, exec_transaction_calldata(st, prevalidated_signature(self.address))
        )

    async def wait_receipt(self, tx_hash: str, *, poll_s: float = 1.0) -> dict[str, Any]:
        """Poll the read RPC for the receipt (a private transaction is invisible until mined).
        Raises ``SourceError`` on timeout, ``LiveRefused`` when it reverted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.receipt_timeout_s
        while True:
            receipt = await self.read.request("eth_getTransactionReceipt", [tx_hash])
            if isinstance(receipt, dict):
                if int(receipt.get("status", "0x0"), 16) != 1:
                    raise LiveRefused(f"live transaction {tx_hash} reverted on chain")
                log.info("live.mined", tx_hash=tx_hash, block_number=int(receipt["blockNumber"], 16),
                         gas_used=int(receipt["gasUsed"], 16))  # fmt: skip
                return receipt
            if loop.time() >= deadline:
                raise SourceError(
                    self.SOURCE,
                    f"transaction {tx_hash} not mined within {self.cfg.receipt_timeout_s:g}s "
                    "(a private RPC drops it after ~25 blocks)",
                )
            await asyncio.sleep(poll_s)


# -- crash-safe sending --------------------------------------------------------------------


def open_sends_of(ledger: ProposalLedger, account: str) -> list[LiveSend]:
    """The signer's transactions still waiting for an answer from the chain. While there is
    one, no new transaction is signed (its nonce would collide with a private, invisible one)."""
    return [s for s in ledger.live_sends(open_only=True) if s.account.lower() == account.lower()]


async def send_durably(
    sender: LiveSender,
    ledger: ProposalLedger,
    idempotency_key: str,
    calls: Sequence[tuple[str, str, int]],
    *,
    poll_s: float = 1.0,
) -> list[dict[str, Any]]:
    """Send a proposal's transactions ``(to, data, value)`` one after the other, each journaled
    as an intent (hash, nonce, account, raw) BEFORE ``eth_sendRawTransaction`` and its outcome
    after. A proposal that already has a transaction in the store gets none more: after a lost
    answer or a crash, start-up reconciliation finds the first by hash and nonce. Stops at the
    first transaction that is not mined successfully. Returns the journal view of every send."""
    if ledger.live_sends(idempotency_key):
        log.warning(
            "live.already_sent",
            idempotency_key=idempotency_key,
            note="this proposal has a transaction already; not sending another",
        )
        return [s.as_dict() for s in ledger.live_sends(idempotency_key)]
    for to, data, value in calls:
        signed = await sender.sign(to, data, value=value)
        tx = signed.tx
        ledger.record_live_intent(
            tx_hash=tx.tx_hash,
            idempotency_key=idempotency_key,
            account=tx.sender,
            nonce=tx.nonce,
            chain_id=tx.chain_id,
            raw_tx=signed.raw,
        )
        try:
            await sender.broadcast(signed)
        except RpcError as exc:
            # An explicit answer: the node refused it (nonce too low, underpriced, funds).
            ledger.set_live_status(tx.tx_hash, "rejected", exc.rpc_message[:200])
            log.error("live.rejected", tx_hash=tx.tx_hash, error=str(exc))
            break
        except SourceError as exc:
            # No answer (timeout, 5xx, garbage): it may or may not be in flight. The intent
            # stays open and reconciliation decides by hash and nonce; nothing is re-sent.
            ledger.set_live_status(tx.tx_hash, "sent", f"broadcast answer lost: {exc}"[:200])
            log.error("live.answer_lost", tx_hash=tx.tx_hash, error=str(exc))
            break
        ledger.set_live_status(tx.tx_hash, "sent")
        try:
            mined, receipt = await _wait_or_replace(sender, ledger, idempotency_key, signed, poll_s)
        except SourceError as exc:
            for s in ledger.live_sends(idempotency_key, open_only=True):
                ledger.set_live_status(s.tx_hash, "pending", str(exc)[:200])
            break
        block = int(receipt["blockNumber"], 16)
        if int(receipt.get("status", "0x0"), 16) != 1:
            ledger.set_live_status(mined, "reverted", f"live transaction {mined} reverted on chain")
            log.error("live.reverted", tx_hash=mined, block_number=block)
            break
        log.info("live.mined", tx_hash=mined, block_number=block,
                 gas_used=int(receipt["gasUsed"], 16))  # fmt: skip
        ledger.set_live_status(mined, "mined", f"block {block}")
    return [s.as_dict() for s in ledger.live_sends(idempotency_key)]


async def _wait_or_replace(
    sender: LiveSender, ledger: ProposalLedger, key: str, first: SignedTx, poll_s: float
) -> tuple[str, dict[str, Any]]:
    """The receipt of ``first`` or of a replacement of it: every ``cfg.replace_after_s``
    without a receipt, the transaction is signed again at the same nonce with fees bumped
    (within ``cfg.max_fee_per_gas_wei``), journaled as an intent under the same proposal, and
    broadcast. Only one of them can be mined; the others end ``replaced``. Returns the mined
    hash and its receipt; ``SourceError`` after ``cfg.receipt_timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + sender.cfg.receipt_timeout_s
    every = sender.cfg.replace_after_s
    next_at = None if every is None else loop.time() + every
    tried = [first]
    while True:
        for s in reversed(tried):
            receipt = await sender.read.request("eth_getTransactionReceipt", [s.tx.tx_hash])
            if isinstance(receipt, dict):
                for other in tried:
                    if other is not s:
                        ledger.set_live_status(other.tx.tx_hash, "replaced",
                                              f"nonce {s.tx.nonce} was mined as {s.tx.tx_hash}")  # fmt: skip
                return s.tx.tx_hash, receipt
        now = loop.time()
        if now >= deadline:
            raise SourceError(
                LiveSender.SOURCE,
                f"transaction {first.tx.tx_hash} not mined within "
                f"{sender.cfg.receipt_timeout_s:g}s (a private RPC drops it after ~25 blocks)",
            )
        if next_at is not None and every is not None and now >= next_at:
            next_at = now + every
            new = await sender.replacement(tried[-1])
            if new is None:
                log.warning("live.replace_capped", tx_hash=tried[-1].tx.tx_hash,
                            cap_wei=sender.cfg.max_fee_per_gas_wei)  # fmt: skip
            else:
                t = new.tx
                ledger.record_live_intent(tx_hash=t.tx_hash, idempotency_key=key, account=t.sender,
                                         nonce=t.nonce, chain_id=t.chain_id, raw_tx=new.raw)  # fmt: skip
                try:
                    await sender.broadcast(new)
                except RpcError as exc:
                    # Refused (underpriced, or the first was just mined): the first stands.
                    ledger.set_live_status(t.tx_hash, "rejected", exc.rpc_message[:200])
                except SourceError as exc:
                    ledger.set_live_status(t.tx_hash, "sent", f"broadcast answer lost: {exc}"[:200])
                    tried.append(new)
                else:
                    ledger.set_live_status(t.tx_hash, "sent", f"replaces {tried[-1].tx.tx_hash}")
                    log.warning("live.replaced", old=tried[-1].tx.tx_hash, new=t.tx_hash,
                                nonce=t.nonce, max_fee_per_gas=t.max_fee_per_gas)  # fmt: skip
                    tried.append(new)
        await asyncio.sleep(poll_s)


async def reconcile_live_sends(
    ledger: ProposalLedger, rpc: RpcClient, *, give_up_after_s: float, chain_id: int | None = None
) -> list[LiveSend]:
    """Resolve every transaction without an outcome by its hash and nonce: mined (or
    reverted) when it has a receipt; ``replaced`` when its nonce was used by another
    transaction; ``dropped`` when neither after ``give_up_after_s``; otherwise still open
    (a private RPC's pending transactions are invisible until mined). Never re-sends.
    Returns the sends whose status changed. ``chain_id``: only that chain's sends."""
    changed = []
    now = time.time()
    for s in ledger.live_sends(open_only=True):
        if chain_id is not None and s.chain_id != chain_id:
            continue  # another chain's send: read on its own RPC
        receipt = await rpc.request("eth_getTransactionReceipt", [s.tx_hash])
        status, detail = s.status, s.detail
        if isinstance(receipt, dict):
            ok = int(receipt.get("status", "0x0"), 16) == 1
            status = "mined" if ok else "reverted"
            detail = f"block {int(receipt['blockNumber'], 16)}"
        elif isinstance(await rpc.request("eth_getTransactionByHash", [s.tx_hash]), dict):
            status, detail = "pending", "in the mempool"
        else:
            used = int(await rpc.request("eth_getTransactionCount", [s.account, "latest"]), 16)
            if used > s.nonce:
                status, detail = "replaced", f"nonce {s.nonce} was used by another transaction"
            elif now - s.created_at > give_up_after_s:
                status, detail = "dropped", f"not mined within {give_up_after_s:g}s; not re-sent"
        if (status, detail) != (s.status, s.detail):
            ledger.set_live_status(s.tx_hash, status, detail)
            log.warning(
                "live.reconciled",
                tx_hash=s.tx_hash,
                idempotency_key=s.idempotency_key,
                nonce=s.nonce,
                was=s.status,
                now=status,
                detail=detail,
            )
            changed.append(s)
    return changed
