"""Autonomous protection (issue 23 items 4-5): a position with ``execution = "autonomous"`` gets
its protective proposal SENT at once, through the same durable path as live mode
(``agent.sinks.live.send_durably``: intent journaled before the broadcast, reconciled by hash
and nonce, never sent twice), by one of two keys that can do nothing but protect:

* the guardian (``[guardian]``, ``agent/sinks/guardian.py``): its own tokens, ``Pool.supply``/``Pool.repay`` with
  ``onBehalfOf`` = the Safe (permissionless in Aave V3; no Safe signature). Only those two calls
  and the token's ``approve`` of the Pool are ever sent from it (checked call by call);
* the Roles member (``[roles]``, ``sinks.autonomous.role_key``): the deleverage's MultiSend
  batch as one ``Roles.execTransactionWithRole``; the module enforces the role's scope and its
  daily allowance on chain, and a batch outside it reverts in ``eth_estimateGas`` before
  anything is signed.

Puts and the S&P 500 ticket are never sent: they stay proposals. Which path a draft takes is
:meth:`AutonomousExecutor.route`; a draft it cannot route stays a proposal and says why.

One executor per chain, holding that chain's senders: every guardian protecting an autonomous
position there (keyed by account: two positions sharing a guardian share its nonces) and every
role on a Safe there (keyed by the Safe). The same guardian or member key on two chains is two
senders with two nonce sequences; a transaction waiting on one chain never holds back another
chain's (:meth:`AutonomousExecutor.blocked` looks at this chain's sends only).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog
from eth_abi.abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from pydantic import SecretStr

from agent.core.abi import load_abi
from agent.core.errors import ConfigError, RpcError, SourceError
from agent.core.rpc import RpcClient
from agent.planner.draft import Draft
from agent.sinks.config import AutonomousConfig, KeySource, LiveConfig
from agent.sinks.guardian import GuardianConfig, load_guardian_key
from agent.sinks.live import LiveSender, open_sends_of
from agent.store.ledger import ProposalLedger

log = structlog.get_logger(__name__)

Mode = Literal["guardian", "role"]
APPROVE = bytes.fromhex("095ea7b3")  # approve(address,uint256)
SUPPLY = bytes.fromhex("617ba037")  # supply(address,uint256,address,uint16)
REPAY = bytes.fromhex("573ade81")  # repay(address,uint256,uint256,address)
PROTECTIVE = ("collateral_top_up", "repay_debt", "deleverage")


def load_key(src: KeySource, what: str) -> LocalAccount:
    """The signer ``src`` names: an environment variable's hex key, or an encrypted keystore
    (eth-account) with its password from the environment. Errors name the source, never the
    key or the password."""
    if src.key_env is not None:
        raw = os.environ.get(src.key_env, "").strip()
        if not raw:
            raise ConfigError(f"{what}: environment variable {src.key_env} is not set")
        try:
            acct: LocalAccount = Account.from_key(raw)
        except Exception:  # eth_keys raises several types; none of their text is echoed
            raise ConfigError(
                f"{what}: {src.key_env} does not hold a 32-byte hex private key"
            ) from None
        return acct
    assert src.keystore is not None and src.password_env is not None  # the model checks both
    password = os.environ.get(src.password_env)
    if password is None:
        raise ConfigError(f"{what}: environment variable {src.password_env} is not set")
    try:
        blob = json.loads(Path(src.keystore).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what}: keystore {src.keystore}: {exc}") from None
    try:
        key = Account.decrypt(blob, password)
    except Exception:
        raise ConfigError(
            f"{what}: keystore {src.keystore} could not be decrypted with {src.password_env}"
        ) from None
    acct = Account.from_key(key)
    return acct


@dataclass(frozen=True)
class RoleTarget:
    """Where the role's transactions go: the Roles module on the Safe and the role's key, and
    who signs them: the member's key source (checked to be ``agent``'s when that is given)."""

    safe: str
    module: str
    role_key: bytes  # bytes32
    key: KeySource | None = None
    key_label: str = "sinks.autonomous.role_key"  # where `key` is configured, for messages
    agent: str | None = None  # the role's member (roles.agent)


@dataclass(frozen=True)
class Route:
    mode: Mode
    sender: LiveSender
    calls: tuple[tuple[str, str, int], ...]  # (to, data, value) in order
    note: str


class NotRouted(Exception):
    """The draft stays a proposal; the message says why."""


def guardian_calls(
    draft: Draft, pool: str, guardian: str
) -> tuple[list[tuple[str, str, int]], dict[str, int]]:
    """The top-up's or repay's calls as the guardian sends them, after checking each: only
    ``token.approve(Pool, n)``, ``Pool.supply(asset, n, onBehalfOf = the Safe, 0)`` and
    ``Pool.repay(asset, n, 2, onBehalfOf = the Safe)``. Returns the calls and, per token, the
    amount the guardian must hold."""
    safe = to_checksum_address(draft.header.account)
    pool = to_checksum_address(pool)
    calls: list[tuple[str, str, int]] = []
    need: dict[str, int] = {}
    for t in draft.transactions:
        data = bytes.fromhex(t.data[2:])
        sel, args = data[:4], data[4:]
        to = to_checksum_address(t.to)
        if t.value:
            raise NotRouted("a guardian call with ETH value")
        if sel == APPROVE:
            spender, _amount = abi_decode(["address", "uint256"], args)
            if to_checksum_address(spender) != pool:
                raise NotRouted(f"an approve to {spender}, not the Pool")
        elif sel in (SUPPLY, REPAY) and to == pool:
            if sel == SUPPLY:
                asset, amount, on_behalf, _ref = abi_decode(
                    ["address", "uint256", "address", "uint16"], args
                )
            else:
                asset, amount, _mode, on_behalf = abi_decode(
                    ["address", "uint256", "uint256", "address"], args
                )
            if to_checksum_address(on_behalf) != safe:
                raise NotRouted(f"onBehalfOf {on_behalf} is not the position's Safe {safe}")
            asset = to_checksum_address(asset)
            need[asset] = need.get(asset, 0) + int(amount)
        else:
            raise NotRouted(f"call {sel.hex()} to {to} is not a supply, repay or approve")
        calls.append((to, t.data, 0))
    if not need:
        raise NotRouted("no supply or repay in the draft")
    del guardian  # the caller reads its balances; kept in the signature for the reader
    return calls, need


class AutonomousExecutor:
    """One chain's autonomous sending: the senders of its guardians and of its roles' members
    (each a :class:`LiveSender` sending to ``private_rpc_url`` or the chain's RPC, fees under the
    cap, stuck transactions replaced) and the rules of which draft each may send."""

    def __init__(
        self,
        cfg: AutonomousConfig,
        guardians: Sequence[GuardianConfig],
        roles: Sequence[RoleTarget],
        *,
        chain_id: int,
        rpc: RpcClient,
        send_rpc: RpcClient | None = None,
        pool: str | None = None,
    ) -> None:
        """``send_rpc``: the client of ``cfg.private_rpc_url`` when it is set (built and closed
        by ``App``, with ``agent.core.rpc.send_client``: one attempt, never retried, as a
        timeout after the node took the transaction must not look like a failure;
        reconciliation decides by hash and nonce); without it the senders send on ``rpc``."""
        self.cfg = cfg
        self.rpc = rpc
        self.chain_id = chain_id
        self.pool = pool
        private = cfg.private_rpc_url is not None and cfg.private_rpc_url.get_secret_value()
        if private and send_rpc is None:  # never fall back to the public RPC unnoticed
            raise ConfigError(
                "private_rpc_url is set for autonomous sends but no client of it was given"
            )
        send = send_rpc if send_rpc is not None else rpc
        live = LiveConfig(
            enabled=True,
            signer_key=SecretStr("unused"),  # the account is passed in; see LiveSender
            min_priority_fee_wei=cfg.min_priority_fee_wei,
            gas_limit_multiplier_bps=cfg.gas_limit_multiplier_bps,
            receipt_timeout_s=cfg.receipt_timeout_s,
            max_fee_per_gas_wei=cfg.max_fee_per_gas_wei,
            replace_after_s=cfg.replace_after_s,
            fee_bump_bps=cfg.fee_bump_bps,
        )
        # one sender per signing account on this chain: its nonces are tracked once
        by_address: dict[str, LiveSender] = {}

        def sender(acct: LocalAccount) -> LiveSender:
            key = acct.address.lower()
            if key not in by_address:
                by_address[key] = LiveSender(
                    live, chain_id=chain_id, read_rpc=rpc, account=acct, send_rpc=send
                )
            return by_address[key]

        # guardian account (lower-case) -> its sender; the key from its key_env or keystore,
        # checked to be its account's
        self.guardians: dict[str, LiveSender] = {}
        for g in guardians:
            if g.enabled:
                acct = Account.from_key(load_guardian_key(g).get_secret_value())
                self.guardians[acct.address.lower()] = sender(acct)
        # the role's Safe (lower-case) -> the role and its member's sender
        self.roles: dict[str, tuple[RoleTarget, LiveSender]] = {}
        for role in roles:
            if role.key is None:
                raise ConfigError(
                    f"the role on {role.safe} is configured for autonomous execution but "
                    f"{role.key_label} (the role member's key) is not"
                )
            acct = load_key(role.key, role.key_label)
            if role.agent is not None and acct.address.lower() != role.agent.lower():
                raise ConfigError(
                    f"{role.key_label} holds the key of {acct.address}, not of the role's "
                    f"member {role.agent} (roles.agent)"
                )
            self.roles[role.safe.lower()] = (role, sender(acct))

    @property
    def guardian(self) -> LiveSender | None:
        """The chain's guardian when there is exactly one (the single-guardian set-up)."""
        return next(iter(self.guardians.values())) if len(self.guardians) == 1 else None

    def senders(self) -> list[LiveSender]:
        out = [*self.guardians.values(), *(m for _, m in self.roles.values())]
        return list({id(s): s for s in out}.values())

    async def route(self, draft: Draft) -> Route:
        """How ``draft`` is sent, or ``NotRouted`` saying why it stays a proposal."""
        if draft.action not in PROTECTIVE:
            raise NotRouted(f"a {draft.action} is never sent autonomously")
        if draft.deleverage is not None:
            st = draft.safe_tx
            if st is None:
                raise NotRouted("a deleverage without a Safe transaction")
            if not self.roles:
                raise NotRouted("a deleverage needs a role ([roles]) and its member's key")
            found = self.roles.get(st.safe.lower())
            if found is None:
                on = ", ".join(r.safe for r, _ in self.roles.values())
                raise NotRouted(f"no role on {draft.header.account} (the roles are on {on})")
            role, member = found
            data = load_abi("Roles").encode_hex(
                "execTransactionWithRole",
                st.to,
                st.value,
                bytes.fromhex(st.data[2:]),
                st.operation,
                role.role_key,
                True,  # shouldRevert: a failing inner call reverts the whole transaction
            )
            return Route(
                "role",
                member,
                ((role.module, data, 0),),
                f"deleverage through the Roles module {role.module} (one "
                "execTransactionWithRole of the MultiSend batch)",
            )
        # the guardian the draft was sized for (the position's: its wallet paid the plan)
        guardian = self.guardians.get((draft.sender or "").lower())
        if guardian is None:
            raise NotRouted(
                f"a {draft.action} needs the position's guardian"
                + (f" ({draft.sender} is not one of this chain's)" if draft.sender else "")
            )
        if self.pool is None:
            raise NotRouted("the Pool address is unknown")
        calls, need = guardian_calls(draft, self.pool, guardian.address)
        erc20 = load_abi("ERC20")
        kept: list[tuple[str, str, int]] = []
        for token, amount in need.items():
            raw = await self.rpc.eth_call(token, erc20.encode_hex("balanceOf", guardian.address))
            held = int(erc20.decode_output("balanceOf", raw)[0])
            if held < amount:
                raise NotRouted(
                    f"the guardian {guardian.address} holds {held} of {token}, the "
                    f"{draft.action} needs {amount}: fund it"
                )
        for to, data, value in calls:
            if bytes.fromhex(data[2:10]) == APPROVE:
                # An approval the guardian already gave (README: approve the Pool once) is not
                # sent again: one transaction fewer, one block sooner.
                raw = await self.rpc.eth_call(
                    to, erc20.encode_hex("allowance", guardian.address, self.pool)
                )
                if int(erc20.decode_output("allowance", raw)[0]) >= need.get(
                    to_checksum_address(to), 0
                ):
                    continue
            kept.append((to, data, value))
        return Route(
            "guardian",
            guardian,
            tuple(kept),
            f"the guardian {guardian.address} pays from its own balance (onBehalfOf the Safe)",
        )

    async def blocked(self, sender: LiveSender, ledger: ProposalLedger) -> str | None:
        """A reason to wait this tick: the sender has a transaction without an outcome (its
        nonce would collide), or the base fee is above the cap."""
        # this chain's only: the same key's nonces on another chain are another sequence
        waiting = [w for w in open_sends_of(ledger, sender.address) if w.chain_id == self.chain_id]
        if waiting:
            w = waiting[0]
            return f"transaction {w.tx_hash} (nonce {w.nonce}) is still {w.status}"
        block = await self.rpc.get_block("latest")
        base = int(block.get("baseFeePerGas") or "0x0", 16)
        if base >= self.cfg.max_fee_per_gas_wei:
            return (
                f"base fee {base} wei is at or above the cap sinks.autonomous.max_fee_per_gas_wei "
                f"({self.cfg.max_fee_per_gas_wei})"
            )
        return None

    async def rebroadcast_fresh(self, ledger: ProposalLedger, *, now: float) -> list[str]:
        """After a restart: each of this chain's open intents of the guardian or the role
        member younger than ``rebroadcast_within_s`` whose nonce is still unused is broadcast
        again, as the very bytes that were journaled (same hash, same nonce: it can only ever
        be mined once). Returns the hashes broadcast."""
        out = []
        for sender in self.senders():
            for s in open_sends_of(ledger, sender.address):
                if s.chain_id != self.chain_id or s.status not in ("intent", "sent"):
                    continue
                if now - s.created_at > self.cfg.rebroadcast_within_s:
                    continue
                used = int(
                    await self.rpc.request("eth_getTransactionCount", [s.account, "latest"]), 16
                )
                if used > s.nonce or not s.raw_tx:
                    continue
                try:
                    await sender.send_rpc.request("eth_sendRawTransaction", [s.raw_tx])
                except RpcError as exc:
                    if "already known" not in exc.rpc_message.lower():
                        log.error("autonomous.rebroadcast_refused", tx_hash=s.tx_hash,
                                  error=exc.rpc_message[:200])  # fmt: skip
                        continue
                except SourceError as exc:
                    log.error("autonomous.rebroadcast_lost", tx_hash=s.tx_hash, error=str(exc))
                    continue
                ledger.set_live_status(s.tx_hash, "sent", "re-broadcast after a restart")
                log.warning("autonomous.rebroadcast", tx_hash=s.tx_hash, nonce=s.nonce,
                            idempotency_key=s.idempotency_key)  # fmt: skip
                out.append(s.tx_hash)
        return out

    async def health_factor(self, account: str) -> float | None:
        """The account's HF on the chain now (after the protective transaction)."""
        if self.pool is None:
            return None
        pool = load_abi("Pool")
        try:
            raw = await self.rpc.eth_call(self.pool, pool.encode_hex("getUserAccountData", account))
        except SourceError:
            return None
        return int(pool.decode_output("getUserAccountData", raw)[5]) / 10**18


def autonomous_record(
    route: Route, sends: Sequence[Mapping[str, Any]], why: str, hf_before: Any, hf_after: Any
) -> dict[str, Any]:
    """What the journal, the notice and ``status`` show of one autonomous execution."""
    mined = [s for s in sends if s.get("status") == "mined"]
    return {
        "mode": route.mode,
        "sender": route.sender.address,
        "how": route.note,
        "why": why,
        "tx_hashes": [str(s.get("tx_hash")) for s in sends],
        "status": "mined"
        if mined and len(mined) == len(route.calls)
        else (str(sends[-1].get("status")) if sends else "not_sent"),
        "health_factor_before": hf_before,
        "health_factor_after": hf_after,
    }


def status_lines(
    autonomous_positions: Sequence[str],
    records: Sequence[Mapping[str, Any]],
    live_status: Mapping[str, str],
    *,
    last: int = 5,
) -> list[str]:
    """``hedge-agent status``'s lines of autonomous execution: which positions send at once,
    and the latest autonomous transactions (what, when, by whom, hash and its status now, HF
    before -> after). ``live_status``: each sent hash's status in the store (fresher than the
    journal's copy)."""
    if not autonomous_positions:
        return ["autonomous execution: off (every proposal waits for the signers)"]
    out = [f"autonomous execution: on for {', '.join(autonomous_positions)}"]
    sent = [r for r in records if isinstance(r.get("autonomous"), Mapping)]
    if not sent:
        return [*out, "  no autonomous transaction yet"]
    for r in sent[-last:]:
        a = r["autonomous"]
        who = r.get("position") or r.get("account")
        if a.get("status") == "not_sent":
            out.append(
                f"  {r.get('created_at')} {r.get('action')} {who}: NOT sent: {a.get('why_not')}"
            )
            continue
        hashes = [str(h) for h in a.get("tx_hashes") or ()] or [
            str(s.get("tx_hash")) for s in r.get("live") or ()
        ]
        states = ", ".join(f"{h[:10]}.. {live_status.get(h, a.get('status'))}" for h in hashes)

        def hf(v: Any) -> str:
            return f"{v:.3f}" if isinstance(v, int | float) else "n/a"

        out.append(
            f"  {r.get('created_at')} {r.get('action')} {who} by the {a.get('mode')}: "
            f"{states or 'not sent yet'}; HF {hf(a.get('health_factor_before'))} -> "
            f"{hf(a.get('health_factor_after'))}"
        )
    return out
