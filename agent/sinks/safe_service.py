"""Proposal of a Safe transaction to the Safe Transaction Service (current v2 API).

* ``safeTxHash`` is the EIP-712 hash Safe >= 1.3.0 signs (``Safe.getTransactionHash``): domain
  ``EIP712Domain(uint256 chainId,address verifyingContract)`` and the ``SafeTx`` struct. The
  delegate (or owner) key signs it (ECDSA over the hash itself, ``v`` in {27, 28}).
* The nonce is the next free one after the service's queue: the largest pending nonce at or above
  the on-chain nonce, plus one (or the on-chain nonce when nothing is queued). Proposing at the
  on-chain nonce would collide with transactions the signers already have in their queue.
* v2 endpoints: ``POST/GET {base}/api/v2/safes/{checksumSafe}/multisig-transactions/`` and
  ``GET {base}/api/v2/multisig-transactions/{safeTxHash}/``. v2 answers ``nonce``, ``safeTxGas``
  and ``baseGas`` as decimal strings. Success of the POST is HTTP 201 with an empty body, so the
  transaction is read back to confirm what the service queued.
* Safe-hosted services want ``Authorization: Bearer <api key>``; the key is a ``SecretStr``,
  scrubbed from every message and never logged.
* Validation failures are HTTP 422 with DRF serializer errors; each becomes a one-line
  ``SourceError`` naming the field, with a hint.

The v1 API is used only for a self-hosted service older than 5.18.0 (the release that added v2),
detected once from its ``/api/v1/about/`` answer and logged; see ``LEGACY_V1``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import Hash32
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from pydantic import SecretStr

from agent.core.abi import load_abi
from agent.core.errors import AgentError, ConfigError, MalformedResponse, SourceError
from agent.core.http import HttpClient, HttpStatusError, Request, Response, decode_json
from agent.core.rpc import RpcClient
from agent.planner.safe import SafeTx
from agent.sinks.config import SafeServiceConfig, is_safe_hosted

log = structlog.get_logger(__name__)

SOURCE = "safe-tx-service"
DOMAIN_TYPEHASH = keccak(text="EIP712Domain(uint256 chainId,address verifyingContract)")
SAFE_TX_TYPEHASH = keccak(
    text="SafeTx(address to,uint256 value,bytes data,uint8 operation,uint256 safeTxGas,"
    "uint256 baseGas,uint256 gasPrice,address gasToken,address refundReceiver,uint256 nonce)"
)
ApiVersion = Literal["v2", "v1"]
V2_SINCE = (5, 18, 0)  # safe-transaction-service release that added the v2 multisig endpoints


# -- hashing and signing ------------------------------------------------------------------------


def _data_bytes(data: str) -> bytes:
    return bytes.fromhex(data[2:] if data.startswith("0x") else data)


def domain_separator(chain_id: int, safe: str) -> bytes:
    return keccak(abi_encode(["bytes32", "uint256", "address"], [DOMAIN_TYPEHASH, chain_id, safe]))


def safe_tx_hash(st: SafeTx, *, chain_id: int, nonce: int) -> bytes:
    """The EIP-712 ``safeTxHash`` of ``st`` at Safe nonce ``nonce`` (Safe >= 1.3.0)."""
    struct = keccak(
        abi_encode(
            [
                "bytes32",
                "address",
                "uint256",
                "bytes32",
                "uint8",
                "uint256",
                "uint256",
                "uint256",
                "address",
                "address",
                "uint256",
            ],
            [
                SAFE_TX_TYPEHASH,
                st.to,
                st.value,
                keccak(_data_bytes(st.data)),
                st.operation,
                st.safe_tx_gas,
                st.base_gas,
                st.gas_price,
                st.gas_token,
                st.refund_receiver,
                nonce,
            ],
        )
    )
    return keccak(b"\x19\x01" + domain_separator(chain_id, st.safe) + struct)


def account_from_key(key: SecretStr, what: str) -> LocalAccount:
    """A signer from a SecretStr; the error never contains the key."""
    try:
        acct: LocalAccount = Account.from_key(key.get_secret_value().strip())
    except Exception:  # eth_keys raises several types; none of their text is echoed
        raise ConfigError(f"{what} is not a valid 32-byte hex private key") from None
    return acct


def sign_safe_tx_hash(account: LocalAccount, tx_hash: bytes) -> str:
    """65-byte ``r ‖ s ‖ v`` signature (v = 27/28) over the hash itself, as the service expects
    from an owner or delegate, 0x-hex."""
    signed = account.unsafe_sign_hash(Hash32(tx_hash))
    return "0x" + bytes(signed.signature).hex()


async def read_safe_nonce(rpc: RpcClient, safe: str) -> int:
    """The Safe's on-chain nonce (the next transaction's nonce, ignoring the service's queue)."""
    abi = load_abi("Safe")
    out = await rpc.eth_call(to_checksum_address(safe), abi.encode_hex("nonce"))
    return int(abi.decode_output("nonce", out)[0])


def safe_tx_from_record(record: Mapping[str, Any]) -> SafeTx:
    """The ``SafeTx`` the runner stored in a proposal record (``record["safe_tx"]``)."""
    st = record.get("safe_tx")
    if not isinstance(st, dict):
        raise ConfigError(f"proposal {record.get('id')} has no safe_tx (not a Safe position?)")
    nonce = st.get("nonce")
    return SafeTx(safe=st["safe"], to=st["to"], value=int(st["value"]), data=st["data"],
                  operation=int(st["operation"]),
                  nonce=int(nonce) if nonce is not None else None)  # fmt: skip


def proposal_body(st: SafeTx, *, nonce: int, tx_hash: bytes, sender: str, signature: str,
                  origin: str) -> dict[str, Any]:  # fmt: skip
    """The ``SafeMultisigTransaction`` body. uint256 fields (nonce included) go as decimal
    strings, the form v2 answers in; the service's integer fields accept them."""
    return {
        "safe": to_checksum_address(st.safe),
        "to": to_checksum_address(st.to),
        "value": str(st.value),
        "data": st.data if _data_bytes(st.data) else None,
        "operation": st.operation,
        "safeTxGas": str(st.safe_tx_gas),
        "baseGas": str(st.base_gas),
        "gasPrice": str(st.gas_price),
        "gasToken": to_checksum_address(st.gas_token),
        "refundReceiver": to_checksum_address(st.refund_receiver),
        "nonce": str(nonce),
        "contractTransactionHash": "0x" + tx_hash.hex(),
        "sender": to_checksum_address(sender),
        "signature": signature,
        "origin": origin,
    }


# -- error bodies ---------------------------------------------------------------------------------

# Non-field messages of the service's serializers, mapped to the request field they are about.
_MESSAGE_FIELDS = (
    ("contract-transaction-hash=", "contractTransactionHash"),
    ("sender=", "sender"),
    ("signer=", "signature"),
    ("signature=", "signature"),
    ("signature does not match", "signature"),
    ("signature for owner", "signature"),
    ("just one signature", "signature"),
    ("tx with nonce=", "nonce"),
    ("tx with safe-tx-hash=", "contractTransactionHash"),
    ("operation delegate_call", "operation"),
    ("provided delegator=", "delegator"),
    ("safe=", "safe"),
)
_MESSAGE_MAX = 400


def _field_of(message: str) -> str | None:
    """The field a message is about: the earliest known message start found in it."""
    low = message.lower()
    hits = [(i, name) for prefix, name in _MESSAGE_FIELDS if (i := low.find(prefix)) >= 0]
    return min(hits)[1] if hits else None


def _hint(text: str, status: int) -> str:
    t = text.lower()
    if status in (401, 403):
        return (
            " (hint: the service wants an API key: set sinks.safe_service.api_key to a key from "
            "the Safe developer portal, sent as Authorization: Bearer)"
        )
    if "is not an owner or delegate" in t:
        return (
            " (hint: register the key's address as a delegate of this Safe: "
            "`hedge-agent safe add-delegate`, or use an owner key)"
        )
    if "does not match provided contract-tx-hash" in t:
        return " (hint: the service hashed the transaction differently: check chain id, Safe address and version, and nonce)"
    if "already executed" in t:
        return " (hint: the Safe nonce moved on; re-read it and propose again)"
    if "may not be null" in t or "is required" in t:
        return " (hint: a required field was empty)"
    return ""


def _bounded(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_MAX else text[:_MESSAGE_MAX] + "…"


def describe_service_error(status: int, body: str) -> str:
    """One line from a service error body, naming the field: DRF serializer errors
    ``{"<field>": [...], "nonFieldErrors": [...]}`` (a non-field message is attributed to the
    field it is about: ``Sender=…`` to ``sender``), the ``{"code", "message", "arguments"}``
    form, or DRF's ``{"detail": ...}``; other bodies (HTML, Node ``util.inspect`` dumps) are kept
    as bounded text."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    parts: list[str] = []
    if isinstance(payload, dict):
        if "message" in payload and "code" in payload:
            parts.append(f"code {payload['code']}: {payload['message']}")
        else:
            for key, msgs in payload.items():
                for m in msgs if isinstance(msgs, list) else [msgs]:
                    text = _bounded(str(m) if not isinstance(m, dict) else json.dumps(m))
                    name = _field_of(text) if key in ("nonFieldErrors", "non_field_errors") else key
                    parts.append(f"{name}: {text}" if name else text)
    elif isinstance(payload, list):
        parts = [_bounded(str(x)) for x in payload]
    if not parts:
        text = _bounded(body)
        name = _field_of(text)
        parts = [f"{name}: {text}" if name else text] if text else ["(empty body)"]
    detail = " | ".join(parts)
    return f"HTTP {status}: {detail}{_hint(detail, status)}"


# -- the client -----------------------------------------------------------------------------------


def _uint(v: object, what: str) -> int:
    """A uint the service sends as a decimal string (v2) or a JSON integer (v1)."""
    if isinstance(v, str) and re.fullmatch(r"[0-9]+", v):
        return int(v)
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    raise MalformedResponse(SOURCE, f"{what}: expected a non-negative integer, got {v!r}")


def _version(text: object) -> tuple[int, ...] | None:
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", str(text or "").strip())
    return tuple(int(x) for x in m.groups(default="0")) if m else None


@dataclass(frozen=True)
class QueuedTx:
    nonce: int
    safe_tx_hash: str
    is_executed: bool


class SafeServiceClient:
    """The few endpoints the agent uses, over the shared ``HttpClient``; the API version is
    detected once (see the module doc)."""

    def __init__(self, http: HttpClient, cfg: SafeServiceConfig) -> None:
        self.http = http
        self.cfg = cfg
        self.base = cfg.base_url.rstrip("/")
        self._api: ApiVersion | None = None

    @property
    def _secrets(self) -> tuple[str, ...]:
        key = self.cfg.api_key.get_secret_value().strip() if self.cfg.api_key else ""
        return (key,) if key else ()

    def _request(
        self,
        method: str,
        path: str,
        *,
        label: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Request:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._secrets:
            headers["Authorization"] = f"Bearer {self._secrets[0]}"
        return Request(
            source=SOURCE,
            method=method,
            url=f"{self.base}{path}",
            params=params,
            json_body=body,
            headers=headers,
            timeout_s=self.cfg.timeout_s,
            label=label,
            secrets=self._secrets,
            # Every call is idempotent: the POSTed resources are keyed by safeTxHash / delegate,
            # so re-sending after a transport failure cannot create a second one.
            idempotent=True,
        )

    async def _send(self, req: Request, what: str) -> Response:
        try:
            return await self.http.request(req)
        except HttpStatusError as exc:
            raise SourceError(
                SOURCE, f"{what} ({req.safe_path}): {describe_service_error(exc.status, exc.body)}"
            ) from None

    async def api(self) -> ApiVersion:
        """``v2``, unless a self-hosted service reports a version older than 5.18.0."""
        if self._api is not None:
            return self._api
        self._api = "v2"
        if not is_safe_hosted(self.base):
            req = self._request("GET", "/api/v1/about/", label="about")
            try:
                about = decode_json(req, await self.http.request(req))
            except SourceError as exc:
                log.info("safe_service.about_unavailable", error=str(exc), assumed="v2")
                return self._api
            version = _version(about.get("version")) if isinstance(about, dict) else None
            if version is not None and version < V2_SINCE:
                self._api = "v1"
                # LEGACY_V1: the only way into the v1 endpoints.
                log.warning(
                    "safe_service.legacy_v1",
                    host=urlsplit(self.base).hostname,
                    service_version=about.get("version") if isinstance(about, dict) else None,
                    note="self-hosted Safe Transaction Service older than 5.18.0: using its "
                    "deprecated v1 endpoints; upgrade it to use v2",
                )
        return self._api

    async def _paths(self) -> tuple[ApiVersion, str, str]:
        """(api, per-Safe list/create path prefix, per-hash detail path prefix)."""
        api = await self.api()
        return api, f"/api/{api}/safes", f"/api/{api}/multisig-transactions"

    async def queued(self, safe: str, onchain_nonce: int) -> tuple[QueuedTx, ...]:
        """Pending (not executed) transactions at or above ``onchain_nonce``, largest first."""
        safe = to_checksum_address(safe)
        api, safes, _ = await self._paths()
        params = {"executed": "false", "nonce__gte": str(onchain_nonce), "ordering": "-nonce",
                  "limit": "100"}  # fmt: skip
        req = self._request(
            "GET", f"{safes}/{safe}/multisig-transactions/", label="queue", params=params
        )
        page = decode_json(req, await self._send(req, f"reading the queue of Safe {safe}"))
        if not isinstance(page, dict) or not isinstance(page.get("results"), list):
            raise MalformedResponse(SOURCE, f"queue of Safe {safe}: expected a page with results")
        out = []
        for i, row in enumerate(page["results"]):
            if not isinstance(row, dict):
                raise MalformedResponse(SOURCE, f"queue of Safe {safe}: results[{i}] not an object")
            q = QueuedTx(
                nonce=_uint(row.get("nonce"), f"queue results[{i}].nonce ({api})"),
                safe_tx_hash=str(row.get("safeTxHash")),
                is_executed=bool(row.get("isExecuted")),
            )
            # The filters are applied here too: an older service may ignore unknown parameters.
            if not q.is_executed and q.nonce >= onchain_nonce:
                out.append(q)
        return tuple(sorted(out, key=lambda q: -q.nonce))

    async def multisig_endpoint(self, safe: str) -> tuple[ApiVersion, str]:
        """The API and the proposal endpoint (host and path) of ``safe``, for the record."""
        api, safes, _ = await self._paths()
        req = self._request("POST", f"{safes}/{to_checksum_address(safe)}/multisig-transactions/",
                            label="propose")  # fmt: skip
        return api, req.safe_path

    async def post_multisig(self, safe: str, body: dict[str, Any]) -> tuple[ApiVersion, str]:
        """POST a proposal; returns the API used and the endpoint (host and path) for the record."""
        api, safes, _ = await self._paths()
        safe = to_checksum_address(safe)
        req = self._request(
            "POST", f"{safes}/{safe}/multisig-transactions/", label="propose", body=body
        )
        await self._send(
            req, f"rejected the proposal for Safe {safe} nonce {body['nonce']} "
            f"(safeTxHash {body['contractTransactionHash']}, sender {body['sender']})"
        )  # fmt: skip
        return api, req.safe_path

    async def find_multisig(self, tx_hash: str) -> dict[str, Any] | None:
        """The service's transaction ``tx_hash``, or None when it does not have it (HTTP 404)."""
        _, _, detail = await self._paths()
        req = self._request("GET", f"{detail}/{tx_hash}/", label="multisig-transaction")
        try:
            resp = await self.http.request(req)
        except HttpStatusError as exc:
            if exc.status == 404:
                return None
            raise SourceError(
                SOURCE, f"looking up {tx_hash} ({req.safe_path}): "
                f"{describe_service_error(exc.status, exc.body)}"
            ) from None  # fmt: skip
        return await self._multisig(req, resp, tx_hash)

    async def get_multisig(self, tx_hash: str) -> dict[str, Any]:
        _, _, detail = await self._paths()
        req = self._request("GET", f"{detail}/{tx_hash}/", label="multisig-transaction")
        return await self._multisig(req, await self._send(req, f"reading back {tx_hash}"), tx_hash)

    async def _multisig(self, req: Request, resp: Response, tx_hash: str) -> dict[str, Any]:
        api = await self.api()
        got = decode_json(req, resp)
        if not isinstance(got, dict):
            raise MalformedResponse(SOURCE, f"{tx_hash}: expected an object")
        for name in ("nonce", "safeTxGas", "baseGas"):
            got[name] = _uint(got.get(name), f"{tx_hash}.{name} ({api})")
        return got

    async def post_delegate(self, body: dict[str, Any]) -> None:
        # Delegates moved to v2 before multisig transactions did (4.38): v2 on every service.
        req = self._request("POST", "/api/v2/delegates/", label="delegates", body=body)
        await self._send(req, f"rejected delegate {body.get('delegate')}")


# -- nonce and proposal -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NoncePlan:
    """The nonce the signers will see: after every pending transaction of the service's queue."""

    onchain_nonce: int
    queued_nonces: tuple[int, ...]
    nonce: int
    # The safeTxHash of the same transaction already pending at ``nonce`` (then it is not
    # proposed again at a new nonce).
    already_queued: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"nonce": self.nonce, "onchain_nonce": self.onchain_nonce,
               "queued_nonces": list(self.queued_nonces)}  # fmt: skip
        if self.already_queued is not None:
            out["already_queued"] = self.already_queued
        return out


def next_nonce(onchain_nonce: int, queued: tuple[QueuedTx, ...], at_least: int = 0) -> NoncePlan:
    pending = tuple(
        sorted({q.nonce for q in queued if not q.is_executed and q.nonce >= onchain_nonce})
    )
    nonce = max(onchain_nonce, pending[-1] + 1 if pending else 0, at_least)
    return NoncePlan(onchain_nonce, pending, nonce)


def already_queued(st: SafeTx, queued: tuple[QueuedTx, ...], *, chain_id: int) -> QueuedTx | None:
    """The pending transaction of the queue that IS ``st`` (its safeTxHash at that entry's
    nonce is the entry's), if any: the signers already have it, so it must not be proposed at
    another nonce (they would execute it twice)."""
    for q in sorted(queued, key=lambda q: q.nonce):
        if q.is_executed:
            continue
        if (
            "0x" + safe_tx_hash(st, chain_id=chain_id, nonce=q.nonce).hex()
            == q.safe_tx_hash.lower()
        ):
            return q
    return None


async def plan_nonce(
    client: SafeServiceClient,
    rpc: RpcClient,
    safe: str,
    *,
    at_least: int = 0,
    same_as: tuple[SafeTx, int] | None = None,
) -> NoncePlan:
    """The nonce for a new proposal; with ``same_as=(st, chain_id)``, the nonce at which the
    queue already holds that very transaction (``NoncePlan.already_queued``), when it does."""
    onchain = await read_safe_nonce(rpc, safe)
    queued = await client.queued(safe, onchain)
    plan = next_nonce(onchain, queued, at_least)
    if same_as is not None:
        same = already_queued(same_as[0], queued, chain_id=same_as[1])
        if same is not None:
            return replace(plan, nonce=same.nonce, already_queued=same.safe_tx_hash)
    return plan


@dataclass(frozen=True)
class ServiceProposal:
    safe: str
    nonce: int
    safe_tx_hash: str
    sender: str
    url: str
    api: ApiVersion = "v2"
    # What the service answered when the transaction was read back.
    proposer: str | None = None
    queued: bool = False
    read_back_error: str | None = None
    # The service had it before this post (a post whose outcome was not recorded, after a
    # crash or a failed store write): not posted again.
    already_queued: bool = False
    # The post's reply was lost or an error, but the service holds the transaction.
    post_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"safe": self.safe, "nonce": self.nonce, "safe_tx_hash": self.safe_tx_hash,
               "sender": self.sender, "url": self.url, "api": self.api, "queued": self.queued}  # fmt: skip
        if self.proposer is not None:
            out["proposer"] = self.proposer
        if self.read_back_error is not None:
            out["read_back_error"] = self.read_back_error
        if self.already_queued:
            out["already_queued"] = True
        if self.post_error is not None:
            out["post_error"] = self.post_error
        return out


def _signer(cfg: SafeServiceConfig) -> LocalAccount:
    if not cfg.enabled:
        raise ConfigError(
            "sinks.safe_service.enabled is false; not proposing to the Safe Transaction Service"
        )
    if cfg.delegate_key is None:
        raise ConfigError("sinks.safe_service.delegate_key is not set")
    return account_from_key(cfg.delegate_key, "sinks.safe_service.delegate_key")


async def propose(client: SafeServiceClient, st: SafeTx, *, chain_id: int) -> ServiceProposal:
    """Sign ``st`` at ``st.nonce`` with the delegate key, POST it, and read it back.

    Idempotent: a transaction the service already holds (same safeTxHash) is not posted again,
    and a post whose reply is lost or an error counts as queued when the service holds the
    transaction after it; what the service answers is what the record says.

    Raises ``ConfigError`` when not enabled/configured and ``SourceError`` (source
    ``safe-tx-service``) with the service's reason, one line naming the field, when it refuses."""
    signer = _signer(client.cfg)
    if st.nonce is None:
        raise ConfigError("no nonce planned for the proposal (plan_nonce first)")
    safe = to_checksum_address(st.safe)
    h = safe_tx_hash(st, chain_id=chain_id, nonce=st.nonce)
    hx = "0x" + h.hex()
    body = proposal_body(st, nonce=st.nonce, tx_hash=h, sender=signer.address,
                         signature=sign_safe_tx_hash(signer, h), origin=client.cfg.origin)  # fmt: skip
    api, url = await client.multisig_endpoint(safe)
    proposal = ServiceProposal(safe, st.nonce, hx, signer.address, url, api)
    try:
        back = await client.find_multisig(hx)
    except SourceError as exc:
        # The look-up is a courtesy (the post is keyed by safeTxHash too): the post's answer
        # says what is wrong.
        log.info("safe_service.lookup_failed", safe_tx_hash=hx, error=str(exc))
        back = None
    if back is not None:
        proposal = replace(proposal, already_queued=True)
    else:
        try:
            await client.post_multisig(safe, body)
        except SourceError as exc:
            # A lost reply (timeout, gateway error) does not say the service refused it: the
            # service's own answer for the hash decides.
            try:
                back = await client.find_multisig(hx)
            except SourceError:
                back = None
            if back is None:
                raise
            proposal = replace(proposal, post_error=str(exc))
        else:
            try:
                back = await client.get_multisig(hx)
            except SourceError as exc:
                # Posted (201) but not confirmed: say so; re-posting is harmless (keyed by
                # safeTxHash).
                proposal = replace(proposal, read_back_error=str(exc))
    if back is not None:
        problems = [
            f"{k} {back.get(k)!r} != {v!r}"
            for k, v in (("safeTxHash", hx), ("nonce", st.nonce), ("safe", safe))
            if str(back.get(k)).lower() != str(v).lower()
        ]
        if back.get("isExecuted"):
            problems.append("already executed")
        proposal = replace(
            proposal,
            proposer=back.get("proposer"),
            queued=not problems,
            read_back_error=("read back differs: " + "; ".join(problems)) if problems else None,
        )
    log.info("safe_service.proposed", **proposal.as_dict())
    return proposal


class SafeServiceSink:
    """What the proposal path needs, behind two calls: ``reserve_nonce`` before the simulation (so
    it runs at the nonce the signers will see) and ``submit`` after it. Neither raises for a
    service or configuration problem: the reason goes into the record, and the proposal stays in
    the journal and the Transaction Builder file."""

    def __init__(self, http: HttpClient, cfg: SafeServiceConfig, *, chain_id: int) -> None:
        self.client = SafeServiceClient(http, cfg)
        self.chain_id = chain_id
        # Nonces this process posted, per (Safe, tick block): a service whose list lags behind
        # its POST (the list view is cached) must not hand the same nonce out twice in a tick.
        self._posted: dict[tuple[str, int], int] = {}

    async def reserve_nonce(
        self, st: SafeTx, rpc: RpcClient, block: int
    ) -> tuple[SafeTx, dict[str, Any]]:
        """``st`` at the next free nonce and the record's ``safe_service`` entry; on failure ``st``
        unchanged (on-chain nonce) and an ``error`` entry, and nothing will be posted."""
        key = (to_checksum_address(st.safe), block)
        try:
            plan = await plan_nonce(
                self.client,
                rpc,
                st.safe,
                at_least=self._posted.get(key, -1) + 1,
                same_as=(st, self.chain_id),
            )
        except AgentError as exc:
            log.warning("safe_service.queue_unreadable", error=str(exc))
            return st, {"error": f"not proposed: queue unreadable: {exc}"}
        if plan.already_queued is not None:
            log.warning(
                "safe_service.already_queued",
                safe_tx_hash=plan.already_queued,
                nonce=plan.nonce,
                note="the same transaction is pending in the queue: kept at its nonce, not "
                "proposed again at a new one",
            )
        return replace(st, nonce=plan.nonce), plan.as_dict()

    async def submit(self, st: SafeTx, block: int) -> dict[str, Any]:
        try:
            sent = await propose(self.client, st, chain_id=self.chain_id)
        except AgentError as exc:
            # The proposal stands without the service; the reviewer sees why it is not queued.
            log.warning("safe_service.failed", error=str(exc))
            return {"error": str(exc)}
        key = (sent.safe, block)
        self._posted[key] = max(self._posted.get(key, -1), sent.nonce)
        return sent.as_dict()
